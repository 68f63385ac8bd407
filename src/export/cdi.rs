//! The CDI (Container Device Interface) spec of what the config hands out: kind
//! `vfioctl.io/device`, one device per `[[device]]` name and one per handed-out function (named
//! by its PCI address), each giving the container `/dev/vfio/vfio` and the `/dev/vfio/N` of its
//! groups with the owner and mode the host gives them, and `VFIOCTL_PCI_ADDRESSES` listing its
//! functions. Pure: from a host as a pass leaves it, no I/O.
//!
//! Where the config's backend resolves to iommufd for an entry's functions (`backend`, file-wide:
//! entries in a `[[domain]]` are not exported here) and every function has its VFIO device cdev,
//! the entry gets the cdev form instead: `/dev/iommu` and each function's
//! `/dev/vfio/devices/vfioN`. A host without iommufd always gets the group form.
//!
//! `cdiVersion` is 0.5.0, the newest that Debian bookworm's podman 4.3 reads, and the oldest
//! that allows a device name to start with a digit (a PCI address). Only fields that version
//! knows are written: no annotations, no `hostPath`, no `major`/`minor` (the runtime reads them
//! from the host's node when it injects the device, so a renumbered node is never stale).

use serde::Serialize;

use crate::config::Config;
use crate::host::Snapshot;
use crate::pci::PciAddress;
use crate::plan::backend::{self, Backend};
use crate::plan::{Plan, Problem};

use super::handout::{handout, GroupNode, Handout};

/// The CDI kind (`vendor/class`): devices are `vfioctl.io/device=NAME`.
pub const KIND: &str = "vfioctl.io/device";
/// The spec version written.
pub const CDI_VERSION: &str = "0.5.0";
/// The environment variable listing a device's functions, comma-separated.
pub const ENV_ADDRESSES: &str = "VFIOCTL_PCI_ADDRESSES";
/// The VFIO container node every device needs beside its group nodes.
pub const CONTAINER_NODE: &str = "/dev/vfio/vfio";
/// `/dev/vfio/vfio` as the kernel makes it (its uevent asks for `DEVMODE=0666`).
const CONTAINER_NODE_MODE: u32 = 0o666;
/// The iommufd node the cdev form gives beside the device cdevs.
pub const IOMMUFD_NODE: &str = "/dev/iommu";
/// `/dev/iommu` as the kernel makes it, when the snapshot has no owner and mode for it.
const IOMMUFD_NODE_MODE: u32 = 0o660;

/// A CDI spec document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    #[serde(rename = "cdiVersion")]
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<Device>,
}

/// One CDI device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    pub container_edits: ContainerEdits,
}

/// What injecting a device changes in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    pub env: Vec<String>,
    pub device_nodes: Vec<DeviceNode>,
}

/// A device node created in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    /// `c`: a character device.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Permission bits (JSON number, as Go's `os.FileMode`).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A spec and the notes on what was left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub spec: Spec,
    pub notes: Vec<String>,
}

impl Spec {
    /// The spec as written to disk and printed: pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        s.push('\n');
        s
    }

    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// The spec for what `config` will hand out once `plan` is applied to `snap`: the plan's
/// outcome ([`super::outcome`]), with the groups its problems name left out. Functions that do not
/// exist yet (VFs the plan creates) are left out too: their group numbers are the kernel's to
/// choose, and a pass writes them once they exist.
pub fn planned(config: &Config, snap: &Snapshot, plan: &Plan) -> Export {
    observed(config, &super::outcome(snap, plan), &plan.problems)
}

/// The spec for what `config` hands out on `host` as it is (after a pass), with the groups
/// the plan's `problems` name left out.
pub fn observed(config: &Config, host: &Snapshot, problems: &[Problem]) -> Export {
    build(config, host, handout(config, host, problems))
}

/// Whether `name` is a valid CDI device name: a letter or digit first and last, letters,
/// digits, `_`, `-`, `.` and `:` between (the CDI parser's rule).
pub fn is_device_name(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            edge(first)
                && edge(last)
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'))
        }
        _ => false,
    }
}

fn build(config: &Config, host: &Snapshot, h: Handout) -> Export {
    let mut notes = h.notes.clone();
    let mut devices = Vec::new();
    for e in &h.entries {
        if !is_device_name(&e.name) {
            notes.push(format!(
                "[[device]] `{}` is not a valid CDI device name (it must end with a letter or \
                 digit); its functions are still exported by address; rename it to export it \
                 by name",
                e.name
            ));
            continue;
        }
        let addresses = e.addresses();
        devices.push(device(
            &e.name,
            &addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            nodes(config, host, &addresses, e.groups.values()),
        ));
    }
    for (a, node) in h.functions() {
        devices.push(device(
            &a.to_string(),
            &[a.to_string()],
            nodes(config, host, &[a], [node].iter()),
        ));
    }
    Export {
        spec: Spec {
            cdi_version: CDI_VERSION.to_string(),
            kind: KIND.to_string(),
            devices,
        },
        notes,
    }
}

/// The nodes giving `functions`: the cdev form (`/dev/iommu` and each function's
/// `/dev/vfio/devices/vfioN`, owner and mode as the host has them, else as their group node)
/// where the backend resolves to iommufd for them and each has a cdev; else the group form
/// (`/dev/vfio/vfio` and the group nodes).
fn nodes<'a>(
    config: &Config,
    host: &Snapshot,
    functions: &[PciAddress],
    groups: impl Iterator<Item = &'a GroupNode>,
) -> Vec<DeviceNode> {
    let groups: Vec<&GroupNode> = groups.collect();
    let devices: Vec<&crate::host::PciDevice> =
        functions.iter().filter_map(|a| host.device(*a)).collect();
    let cdev_form = devices.len() == functions.len()
        && devices.iter().all(|d| d.vfio_cdev.is_some())
        && backend::for_export(config, host, &devices) == Backend::Iommufd;
    if !cdev_form {
        let mut nodes = vec![DeviceNode {
            path: CONTAINER_NODE.to_string(),
            node_type: "c".to_string(),
            file_mode: CONTAINER_NODE_MODE,
            uid: 0,
            gid: 0,
        }];
        nodes.extend(groups.iter().map(|g| DeviceNode {
            path: g.path(),
            node_type: "c".to_string(),
            file_mode: g.mode,
            uid: g.uid,
            gid: g.gid,
        }));
        return nodes;
    }
    let iommu = host.vfio.iommufd_node.as_ref();
    let mut nodes = vec![DeviceNode {
        path: IOMMUFD_NODE.to_string(),
        node_type: "c".to_string(),
        file_mode: iommu.map_or(IOMMUFD_NODE_MODE, |n| n.mode & 0o7777),
        uid: iommu.map_or(0, |n| n.uid),
        gid: iommu.map_or(0, |n| n.gid),
    }];
    for d in devices {
        let Some(c) = &d.vfio_cdev else { continue };
        let group = groups.iter().find(|g| Some(g.group) == d.iommu_group);
        let (uid, gid, mode) = match (&c.node, group) {
            (Some(n), _) => (n.uid, n.gid, n.mode & 0o7777),
            (None, Some(g)) => (g.uid, g.gid, g.mode),
            (None, None) => (0, 0, 0o600),
        };
        nodes.push(DeviceNode {
            path: format!("/dev/vfio/devices/{}", c.name),
            node_type: "c".to_string(),
            file_mode: mode,
            uid,
            gid,
        });
    }
    nodes
}

fn device(name: &str, addresses: &[String], nodes: Vec<DeviceNode>) -> Device {
    Device {
        name: name.to_string(),
        container_edits: ContainerEdits {
            env: vec![format!("{ENV_ADDRESSES}={}", addresses.join(","))],
            device_nodes: nodes,
        },
    }
}
