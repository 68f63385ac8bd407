//! What can make a config unrealisable on a host, and the non-fatal notes a plan carries.
//! Owns the problem kinds, their JSON form, and which functions and groups each one names, so
//! a scoped plan (`--device`) keeps only the problems about its closure.

use serde::Serialize;

use crate::pci::PciAddress;

/// Why part of the config cannot be realised on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A declared function is not present and will not be created by an SR-IOV change.
    Missing,
    /// The host has no IOMMU groups for a declared function.
    NoIommu,
    /// An entry selects a PCI bridge, which vfio-pci cannot take.
    Bridge,
    /// Two entries claim one function for different drivers.
    DriverConflict,
    /// A sibling in the group is on a driver that manages DMA, without consent.
    Sibling,
    /// The host uses the function and the entry does not say `force = true`.
    InUse,
    /// An `[[sriov]]` entry the PF cannot satisfy.
    Sriov,
    /// A user name or group name that the accounts database does not know.
    UnknownAccount,
    /// Two users claim one group node.
    OwnerConflict,
    /// A name in `[[user]]` or `[[domain]]` that no `[[device]]` has.
    UnknownEntry,
    /// A DMA window that hits a reserved region or exceeds the mapping limit.
    Window,
    /// The dependency graph has a cycle (a planner bug, reported rather than hidden).
    Cycle,
}

/// One reason the plan is not realisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The whole explanation, including how to fix it.
    pub message: String,
    /// The config entry it is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// The functions it names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<PciAddress>,
    /// The IOMMU groups it names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
    /// For an in-use refusal: the evidence that could not be read, per function
    /// (`ADDR: reason`). Such a function cannot be proven free, so it counts as in use.
    /// (A boxed slice: a problem stays small enough to return by value.)
    #[serde(skip_serializing_if = "no_reasons")]
    pub cannot_tell: Box<[String]>,
}

fn no_reasons(r: &[String]) -> bool {
    r.is_empty()
}

impl Problem {
    pub fn new(kind: ProblemKind, message: impl Into<String>) -> Self {
        Problem {
            kind,
            message: message.into(),
            entry: None,
            devices: Vec::new(),
            groups: Vec::new(),
            cannot_tell: Box::default(),
        }
    }

    pub fn entry(mut self, name: &str) -> Self {
        self.entry = Some(name.to_string());
        self
    }

    pub fn device(mut self, a: PciAddress) -> Self {
        if !self.devices.contains(&a) {
            self.devices.push(a);
        }
        self
    }

    pub fn group(mut self, g: u32) -> Self {
        if !self.groups.contains(&g) {
            self.groups.push(g);
        }
        self
    }
}
