//! Which device events deserve a pass of their own, now.
//!
//! Every event leads to a (debounced) full pass anyway; this only picks out the case where
//! speed matters: a function the config claims was added, or was bound to a driver other than
//! the one the config names (on hot-plug an already loaded host driver probes it before any
//! rule runs). The match uses what the uevent carries: the address, and `vendor:device` for id
//! selectors. Narrower id fields (subsystem, class) are not in the uevent and are not checked
//! here, so at worst a device the planner then leaves alone gets a scoped pass that does nothing.

use crate::config::{Config, DeviceSpec, Selector};
use crate::pci::{PciAddress, PciId};

use super::events::{DeviceAction, DeviceEvent};

/// The `[[device]]` entry that names this function, if any.
pub fn configured<'c>(
    config: &'c Config,
    address: &PciAddress,
    ids: Option<(PciId, PciId)>,
) -> Option<&'c DeviceSpec> {
    config.devices.iter().find(|spec| match &spec.selector {
        Selector::Address(a) => a == address,
        Selector::Ids { vendor, device, .. } => ids == Some((*vendor, *device)),
    })
}

/// Whether this event should trigger an immediate pass scoped to its function.
pub fn is_urgent(config: &Config, event: &DeviceEvent) -> bool {
    let Some(spec) = configured(config, &event.address, event.ids) else {
        return false;
    };
    match event.action {
        DeviceAction::Add => true,
        DeviceAction::Bind => event.driver.as_deref() != Some(spec.driver.as_str()),
        DeviceAction::Remove | DeviceAction::Unbind | DeviceAction::Change => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn config() -> Config {
        let spec = |name: &str, selector| DeviceSpec {
            name: name.into(),
            selector,
            driver: "vfio-pci".into(),
            companions: vec![],
            force: false,
            origin: Origin::default(),
        };
        Config {
            version: 1,
            devices: vec![
                spec("nic", Selector::Address(addr("0000:03:00.0"))),
                spec(
                    "vfs",
                    Selector::Ids {
                        vendor: PciId(0x8086),
                        device: PciId(0x10ca),
                        subsystem_vendor: None,
                        subsystem_device: None,
                        class: None,
                    },
                ),
            ],
            ..Config::default()
        }
    }

    fn event(
        action: DeviceAction,
        a: &str,
        ids: Option<(u16, u16)>,
        driver: Option<&str>,
    ) -> DeviceEvent {
        DeviceEvent {
            action,
            address: addr(a),
            ids: ids.map(|(v, d)| (PciId(v), PciId(d))),
            driver: driver.map(str::to_owned),
        }
    }

    #[test]
    fn add_of_a_configured_address_is_urgent() {
        let c = config();
        assert!(is_urgent(
            &c,
            &event(DeviceAction::Add, "0000:03:00.0", None, None)
        ));
        assert!(!is_urgent(
            &c,
            &event(DeviceAction::Add, "0000:04:00.0", None, None)
        ));
    }

    #[test]
    fn add_matched_by_ids_is_urgent() {
        let c = config();
        let vf = event(
            DeviceAction::Add,
            "0000:05:10.1",
            Some((0x8086, 0x10ca)),
            None,
        );
        assert!(is_urgent(&c, &vf));
        let other = event(
            DeviceAction::Add,
            "0000:05:10.1",
            Some((0x8086, 0x10c9)),
            None,
        );
        assert!(!is_urgent(&c, &other));
    }

    #[test]
    fn bind_to_a_host_driver_is_urgent_but_our_own_bind_is_not() {
        let c = config();
        let host = event(DeviceAction::Bind, "0000:03:00.0", None, Some("e1000e"));
        let ours = event(DeviceAction::Bind, "0000:03:00.0", None, Some("vfio-pci"));
        assert!(is_urgent(&c, &host));
        assert!(!is_urgent(&c, &ours));
    }

    #[test]
    fn remove_and_unbind_wait_for_the_full_pass() {
        let c = config();
        for action in [
            DeviceAction::Remove,
            DeviceAction::Unbind,
            DeviceAction::Change,
        ] {
            assert!(!is_urgent(&c, &event(action, "0000:03:00.0", None, None)));
        }
    }
}
