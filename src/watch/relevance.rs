//! Which device events deserve action now, ahead of the (debounced) full pass that every
//! event leads to anyway: a function the config claims was added, or was bound to a driver
//! other than the one the config names.
//!
//! The match uses only what the uevent carries (address, and the ids from `PCI_ID`,
//! `PCI_SUBSYS_ID`, `PCI_CLASS`), by the config's one rule ([`Config::wanted`], which the early
//! claim and the planner use too): a `[[device]]` selector, or a companion address. Deciding from the uevent, with no sysfs read, is what lets `watch`
//! write the override of a hot-plugged function within the few milliseconds between the
//! kernel's `add` uevent and its first probe.

use crate::config::Config;

use super::events::{DeviceAction, DeviceEvent};

/// The driver the config wants on the event's function, if the config names it.
pub fn wanted<'c>(config: &'c Config, event: &DeviceEvent) -> Option<&'c str> {
    config.wanted_driver(event.address, event.ids.as_ref())
}

/// Whether this event should trigger an immediate pass scoped to its function.
pub fn is_urgent(config: &Config, event: &DeviceEvent) -> bool {
    let Some(driver) = wanted(config, event) else {
        return false;
    };
    match event.action {
        DeviceAction::Add => true,
        DeviceAction::Bind => event.driver.as_deref() != Some(driver),
        DeviceAction::Remove | DeviceAction::Unbind | DeviceAction::Change => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceSpec, Origin, Selector};
    use crate::pci::{FunctionIds, PciAddress, PciId};

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
                DeviceSpec {
                    companions: vec![addr("0000:03:00.1")],
                    ..spec("nic", Selector::Address(addr("0000:03:00.0")))
                },
                spec(
                    "nvme-of-one-vendor",
                    Selector::Ids {
                        vendor: PciId(0x1b36),
                        device: PciId(0x0010),
                        subsystem_vendor: Some(PciId(0x1af4)),
                        subsystem_device: None,
                        class: None,
                    },
                ),
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
            ids: ids.map(|(v, d)| FunctionIds {
                vendor: PciId(v),
                device: PciId(d),
                subsystem_vendor: None,
                subsystem_device: None,
                class: None,
            }),
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

    #[test]
    fn narrower_id_fields_from_the_uevent_are_checked() {
        let c = config();
        let mut e = event(
            DeviceAction::Add,
            "0000:06:00.0",
            Some((0x1b36, 0x0010)),
            None,
        );
        // No subsystem in the uevent: the entry that names one does not match.
        assert_eq!(wanted(&c, &e), None);
        e.ids.as_mut().unwrap().subsystem_vendor = Some(PciId(0x1af4));
        assert_eq!(wanted(&c, &e), Some("vfio-pci"));
        e.ids.as_mut().unwrap().subsystem_vendor = Some(PciId(0x8086));
        assert_eq!(wanted(&c, &e), None);
    }

    #[test]
    fn companions_are_wanted_with_or_without_ids() {
        let c = config();
        let bare = event(DeviceAction::Add, "0000:03:00.1", None, None);
        assert_eq!(wanted(&c, &bare), Some("vfio-pci"));
        let with_ids = event(
            DeviceAction::Add,
            "0000:03:00.1",
            Some((0x8086, 0x1234)),
            None,
        );
        assert_eq!(wanted(&c, &with_ids), Some("vfio-pci"));
        assert_eq!(
            wanted(&c, &event(DeviceAction::Add, "0000:03:00.2", None, None)),
            None
        );
    }
}
