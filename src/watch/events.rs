//! The events that make `watch` look at the host again, and the [`EventSource`] trait the loop
//! waits on. Events never carry the change itself: the reconciler re-reads everything. A device
//! event carries only enough identity (address, ids, driver named by the uevent) to decide
//! whether that device deserves an immediate pass of its own.

use std::time::{Duration, Instant};

use crate::pci::{FunctionIds, PciAddress, PciClass, PciId};

use super::WatchError;

/// What a udev `pci` event said happened to a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    Add,
    Remove,
    Bind,
    Unbind,
    Change,
}

/// A `pci` uevent, reduced to identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    pub action: DeviceAction,
    pub address: PciAddress,
    /// The function's ids from the uevent (`PCI_ID`, `PCI_SUBSYS_ID`, `PCI_CLASS`), when
    /// `PCI_ID` is present: enough to match every kind of `[[device]]` selector without
    /// reading sysfs.
    pub ids: Option<FunctionIds>,
    /// The driver the uevent names (`DRIVER`), when present. On `unbind` it may already be
    /// the next driver: treat it as a hint only.
    pub driver: Option<String>,
}

/// Why the loop should look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A PCI function was added, removed, bound, unbound or changed.
    Device(DeviceEvent),
    /// A `/dev/vfio` node appeared or went away.
    VfioNode,
    /// Something in the config file's directory changed (save by rename, ConfigMap swap).
    ConfigChanged,
    /// SIGHUP: reload the config now.
    Reload,
    /// SIGTERM or SIGINT: stop.
    Terminate,
}

/// Where the loop's events come from, and its clock.
///
/// The loop never sleeps on its own: it tells the source how long it may block.
pub trait EventSource {
    /// Blocks until at least one event is available or `timeout` has passed (`None`: no
    /// timeout). Returns the events available now, possibly none (timeout, interrupted wait).
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Event>, WatchError>;

    /// The current time on this source's clock.
    fn now(&self) -> Instant;
}

/// Parses a uevent `PCI_ID` or `PCI_SUBSYS_ID` value (`8086:10D3`).
pub fn parse_pci_id(value: &str) -> Option<(PciId, PciId)> {
    let (vendor, device) = value.split_once(':')?;
    Some((PciId::parse(vendor)?, PciId::parse(device)?))
}

/// A function's ids from its uevent properties: `PCI_ID` is required, `PCI_SUBSYS_ID` and
/// `PCI_CLASS` (six hex digits, `20000` for a NIC: the kernel prints it without padding) are
/// taken when present and well-formed.
pub fn uevent_ids(
    pci_id: Option<&str>,
    subsys_id: Option<&str>,
    class: Option<&str>,
) -> Option<FunctionIds> {
    let (vendor, device) = parse_pci_id(pci_id?)?;
    let subsystem = subsys_id.and_then(parse_pci_id);
    Some(FunctionIds {
        vendor,
        device,
        subsystem_vendor: subsystem.map(|s| s.0),
        subsystem_device: subsystem.map(|s| s.1),
        class: class
            .and_then(|c| u32::from_str_radix(c.trim(), 16).ok())
            .filter(|c| *c <= 0xff_ffff)
            .map(PciClass),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_id_from_uevent() {
        assert_eq!(
            parse_pci_id("8086:10D3"),
            Some((PciId(0x8086), PciId(0x10d3)))
        );
        assert_eq!(parse_pci_id("8086"), None);
        assert_eq!(parse_pci_id("zz:10d3"), None);
    }

    #[test]
    fn ids_from_uevent_properties() {
        let ids = uevent_ids(Some("8086:10D3"), Some("8086:0000"), Some("20000")).unwrap();
        assert_eq!((ids.vendor, ids.device), (PciId(0x8086), PciId(0x10d3)));
        assert_eq!(ids.subsystem_vendor, Some(PciId(0x8086)));
        assert_eq!(ids.subsystem_device, Some(PciId(0)));
        assert_eq!(ids.class, Some(PciClass(0x020000)));
        let bare = uevent_ids(Some("1b36:0010"), None, Some("junk")).unwrap();
        assert_eq!((bare.subsystem_vendor, bare.class), (None, None));
        assert_eq!(uevent_ids(None, Some("8086:0000"), Some("20000")), None);
        assert_eq!(uevent_ids(Some("8086"), None, None), None);
    }
}
