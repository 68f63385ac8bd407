//! Where the host's filesystems are: `/sys`, `/dev`, `/proc`, as one plain value.
//!
//! Every path vfioctl reads or writes on a host is built from a `Roots`, so tests and the VM
//! fixtures can point the real code at a fake tree.

use std::path::{Path, PathBuf};

/// The roots of the host filesystems vfioctl touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sysfs: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
        }
    }
}

impl Roots {
    /// All three roots under one directory (`DIR/sys`, `DIR/dev`, `DIR/proc`), for fixtures.
    pub fn under(dir: &Path) -> Self {
        Roots {
            sysfs: dir.join("sys"),
            dev: dir.join("dev"),
            proc: dir.join("proc"),
        }
    }

    /// `/sys/bus/pci/devices`.
    pub fn pci_devices(&self) -> PathBuf {
        self.sysfs.join("bus/pci/devices")
    }

    /// `/sys/bus/pci/devices/ADDR`.
    pub fn pci_device(&self, addr: &crate::pci::PciAddress) -> PathBuf {
        self.pci_devices().join(addr.to_string())
    }

    /// `/sys/bus/pci/drivers`.
    pub fn pci_drivers(&self) -> PathBuf {
        self.sysfs.join("bus/pci/drivers")
    }

    /// `/sys/kernel/iommu_groups`.
    pub fn iommu_groups(&self) -> PathBuf {
        self.sysfs.join("kernel/iommu_groups")
    }

    /// `/sys/class/iommu`.
    pub fn iommu_class(&self) -> PathBuf {
        self.sysfs.join("class/iommu")
    }

    /// `/dev/vfio`.
    pub fn dev_vfio(&self) -> PathBuf {
        self.dev.join("vfio")
    }

    /// `/dev/iommu` (iommufd).
    pub fn iommufd(&self) -> PathBuf {
        self.dev.join("iommu")
    }

    /// `/dev/vfio/devices/NAME` (a VFIO device cdev, `vfioN`).
    pub fn device_cdev(&self, name: &str) -> PathBuf {
        self.dev_vfio().join("devices").join(name)
    }

    /// `/dev/vfio/N`.
    pub fn group_node(&self, group: u32) -> PathBuf {
        self.dev_vfio().join(group.to_string())
    }
}
