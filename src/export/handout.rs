//! What the config hands out on a host: for every `[[device]]` entry, the functions it selects
//! and its companions that sit on a vfio driver in a viable group with a `/dev/vfio/N` node, and
//! that node's owner and mode. Pure: computed from a host as a pass leaves it (observed after a
//! pass, or [`crate::plan::simulate`]d from a plan) and the plan's problems, never from I/O.
//!
//! Fail closed: a function is handed out only when the host shows it usable. An entry a
//! problem names (other than a missing function), a group a problem names, a function not on
//! a vfio driver, a non-viable group, a group without its node: none of these is handed out.
//! Entries in a `[[domain]]` are not handed out either: `watch` holds their groups open and
//! hands them to users through the broker, so a second opener would get `EBUSY`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::host::{is_vfio_driver, Snapshot};
use crate::pci::PciAddress;
use crate::plan::{Problem, ProblemKind};

/// A group node as the host has it (or will have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupNode {
    pub group: u32,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl GroupNode {
    /// `/dev/vfio/N`.
    pub fn path(&self) -> String {
        format!("/dev/vfio/{}", self.group)
    }
}

/// What one `[[device]]` entry hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Its functions (selected and companions) with their group, by address.
    pub functions: BTreeMap<PciAddress, u32>,
    /// The nodes of their groups, by group number.
    pub groups: BTreeMap<u32, GroupNode>,
}

impl Entry {
    /// The functions' addresses, sorted.
    pub fn addresses(&self) -> Vec<PciAddress> {
        self.functions.keys().copied().collect()
    }
}

/// Every entry that hands something out, in config order, and why others do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handout {
    pub entries: Vec<Entry>,
    /// One line per entry (or function) left out, saying why.
    pub notes: Vec<String>,
}

impl Handout {
    /// Every handed-out function with its group node, each once, by address.
    pub fn functions(&self) -> BTreeMap<PciAddress, GroupNode> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            for (a, g) in &e.functions {
                if let Some(n) = e.groups.get(g) {
                    out.insert(*a, *n);
                }
            }
        }
        out
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// What `config` hands out on `host` (the host as a pass leaves it), given the problems the
/// plan for it reported.
pub fn handout(config: &Config, host: &Snapshot, problems: &[Problem]) -> Handout {
    let mut out = Handout::default();
    let mut blocked_groups: BTreeSet<u32> = BTreeSet::new();
    let mut blocked_entries: BTreeMap<&str, &Problem> = BTreeMap::new();
    for p in problems {
        blocked_groups.extend(p.groups.iter().copied());
        blocked_groups.extend(
            p.devices
                .iter()
                .filter_map(|a| host.device(*a).and_then(|d| d.iommu_group)),
        );
        if let Some(e) = &p.entry {
            if p.kind != ProblemKind::Missing {
                blocked_entries.entry(e.as_str()).or_insert(p);
            }
        }
    }
    let in_domain: BTreeMap<&str, &str> = config
        .domains
        .iter()
        .flat_map(|d| d.devices.iter().map(move |n| (n.as_str(), d.name.as_str())))
        .collect();

    for spec in &config.devices {
        let name = spec.name.as_str();
        if let Some(dom) = in_domain.get(name) {
            out.notes.push(format!(
                "[[device]] `{name}` is in [[domain]] `{dom}`: `vfioctl watch` holds its groups \
                 and hands them out with `vfioctl domain open`, so it is not exported"
            ));
            continue;
        }
        if let Some(p) = blocked_entries.get(name) {
            out.notes.push(format!(
                "[[device]] `{name}` is not exported: {}",
                p.message
            ));
            continue;
        }
        let selected: BTreeSet<PciAddress> = host
            .devices
            .iter()
            .filter(|d| spec.selector.matches(d.address, &d.ids()))
            .map(|d| d.address)
            .collect();
        let selected_groups: BTreeSet<u32> = selected
            .iter()
            .filter_map(|a| host.device(*a).and_then(|d| d.iommu_group))
            .collect();
        let companions = spec.companions.iter().filter(|c| {
            host.device(**c)
                .and_then(|d| d.iommu_group)
                .is_some_and(|g| selected_groups.contains(&g))
        });
        let mut entry = Entry {
            name: spec.name.clone(),
            functions: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        let mut left_out = Vec::new();
        for a in selected.iter().chain(companions) {
            match usable(host, *a, &blocked_groups) {
                Ok(node) => {
                    entry.functions.insert(*a, node.group);
                    entry.groups.insert(node.group, node);
                }
                Err(why) => left_out.push(format!("{a} {why}")),
            }
        }
        if entry.functions.is_empty() {
            let why = if left_out.is_empty() {
                "it selects no function on this host".to_string()
            } else {
                left_out.join("; ")
            };
            out.notes
                .push(format!("[[device]] `{name}` hands out nothing: {why}"));
            continue;
        }
        for l in left_out {
            out.notes
                .push(format!("[[device]] `{name}`: {l}; it is left out"));
        }
        out.entries.push(entry);
    }
    out
}

/// The node through which `a` is usable, or why it is not.
fn usable(host: &Snapshot, a: PciAddress, blocked: &BTreeSet<u32>) -> Result<GroupNode, String> {
    let dev = host.device(a).ok_or("is not present")?;
    let g = dev.iommu_group.ok_or("has no IOMMU group")?;
    match dev.driver.as_deref() {
        Some(d) if is_vfio_driver(d) => {}
        Some(d) => return Err(format!("is on {d}, not on a vfio driver")),
        None => return Err("is on no driver, not on a vfio driver".to_string()),
    }
    if blocked.contains(&g) {
        return Err(format!(
            "is in group {g}, which the plan reports a problem for"
        ));
    }
    if !host.viability(g).is_some_and(|v| v.viable) {
        return Err(format!("is in group {g}, which is not viable"));
    }
    let node = host
        .group(g)
        .and_then(|x| x.node.as_ref())
        .ok_or_else(|| format!("is in group {g}, which has no /dev/vfio/{g}"))?;
    Ok(GroupNode {
        group: g,
        uid: node.uid,
        gid: node.gid,
        mode: node.mode & 0o7777,
    })
}
