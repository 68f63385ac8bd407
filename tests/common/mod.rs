//! Test support shared by the planner's integration tests, property tests and benchmark:
//! small builders for hand-made snapshots and configs.
#![allow(dead_code)]

use vfioctl::config::{Config, DeviceSpec, Origin, Selector, SriovSpec, UserRef, UserSpec};
use vfioctl::host::{IommuGroup, NodeInfo, PciDevice, Snapshot, Sriov, Usage};
use vfioctl::pci::{PciAddress, PciClass, PciId};

pub fn addr(s: &str) -> PciAddress {
    s.parse().expect("test address")
}

pub const NIC: u32 = 0x020000;
pub const AUDIO: u32 = 0x040300;
pub const VGA: u32 = 0x030000;
pub const NVME: u32 = 0x010802;
pub const BRIDGE: u32 = 0x060400;

/// A function with the fields the planner reads.
pub fn func(
    a: &str,
    vendor: u16,
    device: u16,
    class: u32,
    driver: Option<&str>,
    group: u32,
) -> PciDevice {
    PciDevice {
        address: addr(a),
        vendor: PciId(vendor),
        device: PciId(device),
        subsystem_vendor: None,
        subsystem_device: None,
        class: PciClass(class),
        revision: None,
        driver: driver.map(str::to_string),
        driver_override: None,
        iommu_group: Some(group),
        iommu: Some("dmar0".into()),
        numa_node: None,
        bridge: PciClass(class).is_bridge(),
        parent: None,
        sriov: None,
        physfn: None,
        boot_vga: None,
        reset_method: None,
        usage: Usage::default(),
        vfio_cdev: None,
    }
}

/// A snapshot whose groups are derived from the functions' `iommu_group`; groups with a
/// member on a vfio driver get a root:root 0600 node, like the kernel makes.
pub fn host(devices: Vec<PciDevice>) -> Snapshot {
    let mut s = Snapshot {
        format: 1,
        devices,
        pci_drivers: vec!["vfio-pci".into()],
        vfio: vfioctl::host::VfioState {
            modules: vec!["vfio".into(), "vfio_pci".into(), "vfio_iommu_type1".into()],
            container_node: true,
            dma_entry_limit: Some(65535),
            ..Default::default()
        },
        ..Default::default()
    };
    regroup(&mut s);
    s
}

/// Rebuilds the group list from the functions' `iommu_group` fields, keeping existing group
/// data (nodes, regions) where the id already exists.
pub fn regroup(s: &mut Snapshot) {
    s.devices.sort_by_key(|d| d.address);
    let mut ids: Vec<u32> = s.devices.iter().filter_map(|d| d.iommu_group).collect();
    ids.sort_unstable();
    ids.dedup();
    let old = std::mem::take(&mut s.groups);
    for id in ids {
        let devices: Vec<PciAddress> = s
            .devices
            .iter()
            .filter(|d| d.iommu_group == Some(id))
            .map(|d| d.address)
            .collect();
        let vfio = s.devices.iter().any(|d| {
            d.iommu_group == Some(id)
                && d.driver
                    .as_deref()
                    .is_some_and(vfioctl::host::is_vfio_driver)
        });
        let prev = old.iter().find(|g| g.id == id);
        s.groups.push(IommuGroup {
            id,
            devices,
            domain_type: Some("DMA".into()),
            reserved_regions: prev.map(|g| g.reserved_regions.clone()).unwrap_or_default(),
            node: match prev.and_then(|g| g.node.clone()) {
                Some(n) => Some(n),
                None if vfio => Some(NodeInfo {
                    path: format!("/dev/vfio/{id}"),
                    uid: 0,
                    gid: 0,
                    mode: 0o600,
                }),
                None => None,
            },
        });
    }
    s.normalize();
}

pub fn sriov(total: u32, num: u32, offset: u32, stride: u32, vf_device: u16) -> Sriov {
    Sriov {
        total_vfs: total,
        num_vfs: num,
        offset,
        stride,
        vf_device: Some(PciId(vf_device)),
        vfs: Vec::new(),
    }
}

pub fn by_address(name: &str, a: &str) -> DeviceSpec {
    DeviceSpec {
        name: name.into(),
        selector: Selector::Address(addr(a)),
        driver: "vfio-pci".into(),
        companions: Vec::new(),
        force: false,
        origin: Origin::default(),
    }
}

pub fn by_ids(name: &str, vendor: u16, device: u16) -> DeviceSpec {
    DeviceSpec {
        name: name.into(),
        selector: Selector::Ids {
            vendor: PciId(vendor),
            device: PciId(device),
            subsystem_vendor: None,
            subsystem_device: None,
            class: None,
        },
        driver: "vfio-pci".into(),
        companions: Vec::new(),
        force: false,
        origin: Origin::default(),
    }
}

pub fn user(name: &str, mode: u32, devices: &[&str]) -> UserSpec {
    UserSpec {
        user: UserRef::Name(name.into()),
        group: None,
        mode,
        devices: devices.iter().map(|d| d.to_string()).collect(),
        memlock: None,
        origin: Origin::default(),
    }
}

pub fn sriov_spec(pf: &str, n: u32) -> SriovSpec {
    SriovSpec {
        pf: addr(pf),
        num_vfs: n,
        origin: Origin::default(),
    }
}

pub fn config(devices: Vec<DeviceSpec>) -> Config {
    Config {
        version: 1,
        devices,
        ..Default::default()
    }
}
