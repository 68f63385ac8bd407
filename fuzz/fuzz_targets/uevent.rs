//! Fuzzes the hot-plug claimer's kernel uevent parser (`add@/devices/...` then NUL-separated
//! `KEY=VALUE` pairs, straight off the netlink socket). No input may panic; only a PCI `add`
//! with a valid slot name yields an event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfioctl::watch::hotplug_claim::parse_added;
use vfioctl::watch::DeviceAction;

fuzz_target!(|data: &[u8]| {
    if let Some(event) = parse_added(data) {
        assert!(data.starts_with(b"add@"));
        assert_eq!(event.action, DeviceAction::Add);
        assert_eq!(event.address.to_string().parse().ok(), Some(event.address));
        assert!(event.driver.is_none());
    }
});
