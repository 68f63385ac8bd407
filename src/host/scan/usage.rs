//! Attributing host resources (interfaces, disks) to PCI functions by their place in the
//! device tree: the nearest ancestor directory named like a PCI address.

use std::path::Path;

use crate::pci::PciAddress;

/// The PCI function `dir` (a canonical sysfs device directory) belongs to: itself or its
/// nearest ancestor whose name is a PCI address (`.../0000:01:00.0/nvme/nvme0` ->
/// `0000:01:00.0`). `None` for virtual devices.
pub fn function_above(dir: &Path) -> Option<PciAddress> {
    dir.ancestors()
        .filter_map(|p| p.file_name()?.to_str())
        .find_map(|n| n.parse::<PciAddress>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_up_from_children() {
        let p = Path::new("/s/devices/pci0000:00/0000:00:03.0/0000:01:00.0/nvme/nvme0/nvme0n1");
        assert_eq!(function_above(p), Some(PciAddress::new(0, 1, 0, 0)));
        let v = Path::new("/s/devices/pci0000:00/0000:00:02.0/virtio0");
        assert_eq!(function_above(v), Some(PciAddress::new(0, 0, 2, 0)));
        assert_eq!(function_above(Path::new("/s/devices/virtual/net/lo")), None);
        // `pci0000:00` is a root bus, not a function.
        assert_eq!(function_above(Path::new("/s/devices/pci0000:00")), None);
    }
}
