//! The events that make `watch` look at the host again, and the [`EventSource`] trait the loop
//! waits on. Events never carry the change itself: the reconciler re-reads everything. A device
//! event carries only enough identity (address, ids, driver named by the uevent) to decide
//! whether that device deserves an immediate pass of its own.

use std::time::{Duration, Instant};

use crate::pci::{PciAddress, PciId};

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
    /// `vendor:device` from the uevent's `PCI_ID`, when present.
    pub ids: Option<(PciId, PciId)>,
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

/// Parses a uevent `PCI_ID` value (`8086:10D3`).
pub fn parse_pci_id(value: &str) -> Option<(PciId, PciId)> {
    let (vendor, device) = value.split_once(':')?;
    Some((PciId::parse(vendor)?, PciId::parse(device)?))
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
}
