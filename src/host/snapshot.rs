//! The observed state: a plain-data picture of a host's PCI functions, IOMMU groups and VFIO
//! nodes, as the scanner reads it from sysfs, `/dev` and `/proc`.
//!
//! Owns only data and pure queries over it (lookups, the kernel's viability rule). It is
//! serialisable to JSON (`vfioctl snapshot`) and back (`--host FILE`), so every decision made
//! from it can be tested and reproduced without the host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pci::{FunctionIds, PciAddress, PciClass, PciId};

/// The snapshot file format version written by this build.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Everything vfioctl knows about one host at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version of this file (`SNAPSHOT_FORMAT`).
    #[serde(default = "default_format")]
    pub format: u32,
    /// `/proc/sys/kernel/osrelease`, when readable.
    #[serde(default)]
    pub kernel: Option<String>,
    /// The kernel command line (`/proc/cmdline`), when readable.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Every PCI function, sorted by address.
    pub devices: Vec<PciDevice>,
    /// Every IOMMU group, sorted by id. Empty on a host without an active IOMMU.
    pub groups: Vec<IommuGroup>,
    /// IOMMU units (`/sys/class/iommu/*`), sorted by name.
    #[serde(default)]
    pub iommus: Vec<IommuUnit>,
    /// Drivers registered on the PCI bus (`/sys/bus/pci/drivers/*`), sorted.
    #[serde(default)]
    pub pci_drivers: Vec<String>,
    /// The VFIO layer: modules, nodes, limits.
    #[serde(default)]
    pub vfio: VfioState,
    /// The host's local account database (`/etc/passwd`, `/etc/group` of its root filesystem),
    /// so a config's users can be checked against a captured host. Empty when not readable.
    #[serde(default, skip_serializing_if = "HostAccounts::is_empty")]
    pub accounts: HostAccounts,
    /// Files that could not be read, with the reason. A scan never fails on one file.
    #[serde(default)]
    pub warnings: Vec<ScanWarning>,
    /// For a partial snapshot (see [`crate::host::partial`]): the only functions it describes.
    /// `None`: the whole host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<std::collections::BTreeSet<crate::pci::PciAddress>>,
}

/// Local users and groups by name, as the host's files list them (NSS sources such as LDAP are
/// not captured: a live run resolves names through the system instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAccounts {
    /// User name -> (uid, primary gid).
    #[serde(default)]
    pub users: BTreeMap<String, (u32, u32)>,
    /// Group name -> gid.
    #[serde(default)]
    pub groups: BTreeMap<String, u32>,
    /// User name -> the soft locked-memory limit in bytes its logins get from the host's
    /// limits.conf / limits.d (see [`crate::host::accounts::limits`]); users no line names are absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memlock: BTreeMap<String, u64>,
}

impl HostAccounts {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }
}

fn default_format() -> u32 {
    SNAPSHOT_FORMAT
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PciDevice {
    pub address: PciAddress,
    pub vendor: PciId,
    pub device: PciId,
    #[serde(default)]
    pub subsystem_vendor: Option<PciId>,
    #[serde(default)]
    pub subsystem_device: Option<PciId>,
    pub class: PciClass,
    #[serde(default)]
    pub revision: Option<u8>,
    /// The bound driver (the `driver` link), `None` when unbound.
    pub driver: Option<String>,
    /// `driver_override`, `None` when unset (sysfs reads `(null)`).
    pub driver_override: Option<String>,
    /// The IOMMU group id, `None` without an IOMMU.
    pub iommu_group: Option<u32>,
    /// The IOMMU unit the function sits behind (`dmar0`, `ivhd0`), when known.
    #[serde(default)]
    pub iommu: Option<String>,
    #[serde(default)]
    pub numa_node: Option<i32>,
    /// Header type 1 (class 0x0604 or 0x0609).
    #[serde(default)]
    pub bridge: bool,
    /// The upstream bridge this function sits behind (None on a root bus).
    #[serde(default)]
    pub parent: Option<PciAddress>,
    /// SR-IOV capability of a physical function.
    #[serde(default)]
    pub sriov: Option<Sriov>,
    /// For a virtual function: its physical function.
    #[serde(default)]
    pub physfn: Option<PciAddress>,
    /// `boot_vga` (only VGA-class functions have it).
    #[serde(default)]
    pub boot_vga: Option<bool>,
    /// `reset_method`, when the kernel exposes it.
    #[serde(default)]
    pub reset_method: Option<String>,
    /// What the host uses this function for.
    #[serde(default)]
    pub usage: Usage,
    /// The function's VFIO device cdev (`<function>/vfio-dev/vfioN`, Linux 6.6+ with
    /// `CONFIG_VFIO_DEVICE_CDEV`), present while it is on a vfio driver. Its number changes on
    /// every rebind. Absent in snapshots taken before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vfio_cdev: Option<DeviceCdev>,
}

/// A VFIO device character device: what sysfs says (`vfio-dev/vfioN/dev`) and, when it exists,
/// the node `/dev/vfio/devices/vfioN` with its owner and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCdev {
    /// `vfioN`.
    pub name: String,
    /// `/dev/vfio/devices/vfioN` (under the scan's dev root).
    pub path: String,
    /// The character device number sysfs gives (`major:minor`).
    pub major: u32,
    pub minor: u32,
    /// The node in `/dev`, `None` when it does not exist (yet).
    #[serde(default)]
    pub node: Option<NodeInfo>,
}

impl PciDevice {
    /// The ids a config selector compares.
    pub fn ids(&self) -> FunctionIds {
        FunctionIds {
            vendor: self.vendor,
            device: self.device,
            subsystem_vendor: self.subsystem_vendor,
            subsystem_device: self.subsystem_device,
            class: Some(self.class),
        }
    }
}

/// SR-IOV state of a physical function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sriov {
    pub total_vfs: u32,
    pub num_vfs: u32,
    /// `sriov_offset` (decimal): routing-id offset of VF 0 from the PF.
    #[serde(default)]
    pub offset: u32,
    /// `sriov_stride` (decimal): routing-id distance between VFs.
    #[serde(default)]
    pub stride: u32,
    /// `sriov_vf_device`: the device id the VFs will have.
    #[serde(default)]
    pub vf_device: Option<PciId>,
    /// Existing VFs (`virtfn*` links), in VF index order.
    #[serde(default)]
    pub vfs: Vec<PciAddress>,
}

impl Sriov {
    /// The address VF `index` has (or will have) behind PF `pf`.
    pub fn vf_address(&self, pf: PciAddress, index: u32) -> PciAddress {
        let rid = u32::from(pf.routing_id()) + self.offset + self.stride * index;
        PciAddress::from_routing_id(pf.domain, rid as u16)
    }
}

/// What the host is using a function for; any of these makes taking it a risk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub interfaces: Vec<NetInterface>,
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    /// The function drives the boot console: `boot_vga` = 1 and not on a vfio driver (unbound,
    /// the firmware's framebuffer console still uses it).
    #[serde(default)]
    pub boot_console: bool,
    /// The kernel command line's `root=` names a block device on this function (the `root=`
    /// argument as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<String>,
    /// Evidence of use that could not be read (unreadable `/proc` files, a `root=` that cannot
    /// be traced): the function may be in use, so it counts as in use ("cannot tell").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

impl Usage {
    /// Human reasons why the function is in use; empty when it is not.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in &self.interfaces {
            if i.up && (!i.addresses.is_empty() || i.routes > 0) {
                let mut what = Vec::new();
                if !i.addresses.is_empty() {
                    what.push(format!("addresses {}", i.addresses.join(", ")));
                }
                if i.routes > 0 {
                    what.push(format!("{} route(s)", i.routes));
                }
                out.push(format!(
                    "network interface {} is up with {}",
                    i.name,
                    what.join(" and ")
                ));
            }
        }
        for b in &self.block_devices {
            if !b.mounts.is_empty() {
                out.push(format!(
                    "block device {} is mounted on {}",
                    b.name,
                    b.mounts.join(", ")
                ));
            }
            if !b.holders.is_empty() {
                out.push(format!(
                    "block device {} is held by {}",
                    b.name,
                    b.holders.join(", ")
                ));
            }
        }
        if self.boot_console {
            out.push("it drives the boot console".to_string());
        }
        if let Some(root) = &self.root_device {
            out.push(format!(
                "it holds the root filesystem (kernel command line {root})"
            ));
        }
        for why in &self.unknown {
            out.push(format!("cannot tell whether the host uses it: {why}"));
        }
        out
    }

    pub fn in_use(&self) -> bool {
        !self.reasons().is_empty()
    }
}

/// A network interface backed by a function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: String,
    /// `operstate` is up (or the IFF_UP flag is set).
    pub up: bool,
    /// IPv4 and IPv6 addresses (link-local IPv6 excluded).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Number of routes through this interface.
    #[serde(default)]
    pub routes: u32,
}

/// A block device (disk, namespace, partition) backed by a function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    /// Mount points of the device or its partitions.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Holders (`holders/*`: dm, md, ...) of the device or its partitions.
    #[serde(default)]
    pub holders: Vec<String>,
}

/// One IOMMU group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IommuGroup {
    pub id: u32,
    /// Member functions, sorted.
    pub devices: Vec<PciAddress>,
    /// The group's default domain `type` (`DMA`, `DMA-FQ`, `identity`, `blocked`).
    #[serde(default, rename = "type")]
    pub domain_type: Option<String>,
    #[serde(default)]
    pub reserved_regions: Vec<ReservedRegion>,
    /// `/dev/vfio/N`, present once a member is on a vfio driver.
    #[serde(default)]
    pub node: Option<NodeInfo>,
}

/// An IOVA range no DMA window may cover (end inclusive, as the kernel prints it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedRegion {
    pub start: u64,
    pub end: u64,
    /// `msi`, `direct`, `direct-relaxable`, `reserved`, `sw-msi`.
    pub kind: String,
}

impl ReservedRegion {
    /// Whether `[start, start+len)` intersects this region.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let last = start.saturating_add(len - 1);
        start <= self.end && last >= self.start
    }
}

/// A device node's ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o600`).
    pub mode: u32,
}

/// An IOMMU unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuUnit {
    pub name: String,
    /// Functions behind it.
    #[serde(default)]
    pub devices: Vec<PciAddress>,
}

/// The VFIO layer as seen in `/sys/module`, `/dev/vfio` and `/dev/iommu`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfioState {
    /// Loaded vfio modules (`vfio`, `vfio_pci`, `vfio_iommu_type1`, variants), sorted.
    #[serde(default)]
    pub modules: Vec<String>,
    /// `/dev/vfio/vfio` exists.
    #[serde(default)]
    pub container_node: bool,
    /// `vfio_iommu_type1`'s `dma_entry_limit`.
    #[serde(default)]
    pub dma_entry_limit: Option<u32>,
    /// `/dev/iommu` exists (iommufd).
    #[serde(default)]
    pub iommufd: bool,
    /// `/dev/iommu`'s owner and mode, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommufd_node: Option<NodeInfo>,
    /// `/dev/vfio/devices/*` entries.
    #[serde(default)]
    pub device_cdevs: Vec<String>,
    /// `/dev/vfio/noiommu-*` style nodes or unsafe no-IOMMU mode enabled.
    #[serde(default)]
    pub noiommu: bool,
}

/// A file the scanner could not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanWarning {
    pub path: String,
    pub message: String,
}

/// Drivers that manage no DMA and so keep a group viable (the kernel's rule since 5.19):
/// vfio-pci and its variants, pci-stub, pcieport.
pub fn driver_keeps_group_viable(driver: &str) -> bool {
    is_vfio_driver(driver) || driver == "pci-stub" || driver == "pcieport"
}

/// vfio-pci and vfio variant drivers (`mlx5_vfio_pci`, `vfio-pci-igd`, ...).
pub fn is_vfio_driver(driver: &str) -> bool {
    driver.starts_with("vfio") || driver.contains("_vfio_pci") || driver.contains("-vfio-pci")
}

/// What is wrong with a damaged snapshot ([`Snapshot::validate`]), every problem by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct Damaged {
    pub problems: Vec<String>,
}

/// Why a group is or is not viable for VFIO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viability {
    pub viable: bool,
    /// Members that block it: (address, driver).
    pub blockers: Vec<(PciAddress, String)>,
}

impl Snapshot {
    /// The function at `addr`.
    pub fn device(&self, addr: PciAddress) -> Option<&PciDevice> {
        self.devices
            .binary_search_by(|d| d.address.cmp(&addr))
            .ok()
            .map(|i| &self.devices[i])
    }

    /// The group with id `id`.
    pub fn group(&self, id: u32) -> Option<&IommuGroup> {
        self.groups
            .binary_search_by(|g| g.id.cmp(&id))
            .ok()
            .map(|i| &self.groups[i])
    }

    /// Whether the IOMMU is active (any group exists).
    pub fn iommu_active(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Sort devices and groups so lookups by binary search work; call after building by hand.
    pub fn normalize(&mut self) {
        self.devices.sort_by_key(|d| d.address);
        self.groups.sort_by_key(|g| g.id);
        for g in &mut self.groups {
            g.devices.sort();
        }
        self.iommus.sort_by(|a, b| a.name.cmp(&b.name));
        self.pci_drivers.sort();
    }

    /// The kernel's viability rule applied to group `id`.
    pub fn viability(&self, id: u32) -> Option<Viability> {
        let g = self.group(id)?;
        let blockers: Vec<(PciAddress, String)> = g
            .devices
            .iter()
            .filter_map(|a| self.device(*a))
            .filter_map(|d| match &d.driver {
                Some(drv) if !driver_keeps_group_viable(drv) => Some((d.address, drv.clone())),
                _ => None,
            })
            .collect();
        Some(Viability {
            viable: blockers.is_empty(),
            blockers,
        })
    }

    /// The VFIO device cdev of the function at `addr`, when it is on a vfio driver on a kernel
    /// with device cdevs.
    pub fn cdev(&self, addr: PciAddress) -> Option<&DeviceCdev> {
        self.device(addr)?.vfio_cdev.as_ref()
    }

    /// Checks what a snapshot read from a file (`--host FILE`) must hold for every decision
    /// made from it to be sound: each function and group listed once, each group member a
    /// listed function in no other group and whose `iommu_group` names that group, each
    /// function's group listed, each reserved region's start at or before its end. Every
    /// problem is named, with the function, group or region it is about.
    pub fn validate(&self) -> Result<(), Damaged> {
        let mut problems = Vec::new();
        let mut devices: BTreeMap<PciAddress, &PciDevice> = BTreeMap::new();
        for d in &self.devices {
            if devices.insert(d.address, d).is_some() {
                problems.push(format!("function {} is listed more than once", d.address));
            }
        }
        let mut member_of: BTreeMap<PciAddress, u32> = BTreeMap::new();
        let mut groups = std::collections::BTreeSet::new();
        for g in &self.groups {
            if !groups.insert(g.id) {
                problems.push(format!("IOMMU group {} is listed more than once", g.id));
            }
            for r in &g.reserved_regions {
                if r.start > r.end {
                    problems.push(format!(
                        "IOMMU group {}: reserved region {:#x}-{:#x} ({}) starts after it ends",
                        g.id, r.start, r.end, r.kind
                    ));
                }
            }
            for a in &g.devices {
                match member_of.insert(*a, g.id) {
                    Some(other) if other != g.id => problems.push(format!(
                        "function {a} is a member of both IOMMU group {other} and IOMMU group {}",
                        g.id
                    )),
                    Some(_) => problems.push(format!(
                        "IOMMU group {} lists function {a} more than once",
                        g.id
                    )),
                    None => {}
                }
                match devices.get(a) {
                    None => problems.push(format!(
                        "IOMMU group {} lists function {a}, which is not among the functions",
                        g.id
                    )),
                    Some(d) if d.iommu_group != Some(g.id) => problems.push(format!(
                        "IOMMU group {} lists function {a}, whose iommu_group is {}",
                        g.id,
                        d.iommu_group.map_or("none".to_string(), |x| x.to_string())
                    )),
                    Some(_) => {}
                }
            }
        }
        for d in &self.devices {
            if let Some(g) = d.iommu_group {
                if !groups.contains(&g) {
                    problems.push(format!(
                        "function {} is in IOMMU group {g}, which is not among the groups",
                        d.address
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Damaged { problems })
        }
    }

    /// Functions by address, for callers that need many lookups.
    pub fn by_address(&self) -> BTreeMap<PciAddress, &PciDevice> {
        self.devices.iter().map(|d| (d.address, d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(json: serde_json::Value) -> Snapshot {
        serde_json::from_value(json).unwrap()
    }

    fn device(addr: &str, group: Option<u32>) -> serde_json::Value {
        serde_json::json!({
            "address": addr, "vendor": "8086", "device": "10d3", "class": "020000",
            "driver": "e1000e", "driver_override": null, "iommu_group": group
        })
    }

    fn group(id: u32, members: &[&str]) -> serde_json::Value {
        serde_json::json!({ "id": id, "devices": members })
    }

    fn problems(s: &Snapshot) -> Vec<String> {
        s.validate().err().map(|d| d.problems).unwrap_or_default()
    }

    #[test]
    fn the_bundled_example_host_is_sound() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/hosts/workstation.json"
        );
        let s: Snapshot = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn a_duplicate_function_is_named() {
        let s = snap(serde_json::json!({
            "devices": [device("0000:01:00.0", Some(1)), device("0000:01:00.0", Some(1))],
            "groups": [group(1, &["0000:01:00.0"])],
        }));
        assert_eq!(
            problems(&s),
            ["function 0000:01:00.0 is listed more than once"]
        );
    }

    #[test]
    fn a_region_that_starts_after_it_ends_is_named() {
        let s = snap(serde_json::json!({
            "devices": [device("0000:01:00.0", Some(1))],
            "groups": [{ "id": 1, "devices": ["0000:01:00.0"],
                "reserved_regions": [{ "start": 4096, "end": 4095, "kind": "msi" }] }],
        }));
        assert_eq!(
            problems(&s),
            ["IOMMU group 1: reserved region 0x1000-0xfff (msi) starts after it ends"]
        );
    }

    #[test]
    fn a_ghost_member_and_a_function_in_two_groups_are_named() {
        let s = snap(serde_json::json!({
            "devices": [device("0000:01:00.0", Some(1))],
            "groups": [group(1, &["0000:01:00.0", "0000:09:00.0"]), group(2, &["0000:01:00.0"])],
        }));
        let p = problems(&s);
        assert!(
            p.contains(
                &"IOMMU group 1 lists function 0000:09:00.0, which is not among the functions"
                    .to_string()
            ),
            "{p:?}"
        );
        assert!(
            p.contains(
                &"function 0000:01:00.0 is a member of both IOMMU group 1 and IOMMU group 2"
                    .to_string()
            ),
            "{p:?}"
        );
    }

    #[test]
    fn a_function_in_a_group_that_is_not_listed_is_named() {
        let s = snap(serde_json::json!({
            "devices": [device("0000:01:00.0", Some(7)), device("0000:02:00.0", Some(1))],
            "groups": [group(1, &["0000:02:00.0"])],
        }));
        assert_eq!(
            problems(&s),
            ["function 0000:01:00.0 is in IOMMU group 7, which is not among the groups"]
        );
        // Without an IOMMU no function has a group, and that is sound.
        let s = snap(serde_json::json!({
            "devices": [device("0000:01:00.0", None)], "groups": [],
        }));
        assert_eq!(s.validate(), Ok(()));
    }
}
