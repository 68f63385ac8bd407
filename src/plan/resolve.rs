//! Selectors to functions: which functions each `[[device]]` entry names on this host, once the
//! `[[sriov]]` entries have set their VF counts. Owns the VF arithmetic (future VFs from the
//! PF's `sriov_offset`/`sriov_stride`) and the "declared but not present" problems.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, DeviceSpec, Selector};
use crate::host::{PciDevice, Snapshot};
use crate::pci::{FunctionIds, PciAddress, PciClass, PciId};

use super::problem::{Problem, ProblemKind};

/// A VF count change one `[[sriov]]` entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfChange {
    pub pf: PciAddress,
    pub from: u32,
    pub to: u32,
    /// Existing VFs the change removes (all of them: the count goes through 0).
    pub destroyed: Vec<PciAddress>,
    /// VFs the change creates, in VF index order.
    pub created: Vec<PciAddress>,
    /// The PF left `[[sriov]]`: this change puts back the count vfioctl found.
    pub release: bool,
}

/// Identity of a function that will exist after the SR-IOV changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutureIds {
    pub vendor: PciId,
    pub device: PciId,
    pub class: PciClass,
}

/// The functions the config names, and the SR-IOV changes it asks for.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Per `[[device]]` entry (same order as the config), the functions it selects.
    pub entries: Vec<Vec<PciAddress>>,
    /// VF count changes, by PF.
    pub vf_changes: BTreeMap<PciAddress, VfChange>,
    /// Functions that do not exist yet and will be created, with their PF.
    pub pending: BTreeMap<PciAddress, PciAddress>,
    /// Existing functions the SR-IOV changes remove.
    pub destroyed: BTreeSet<PciAddress>,
    pub problems: Vec<Problem>,
}

impl Resolution {
    /// Whether `a` exists now and survives the SR-IOV changes.
    pub fn survives(&self, snap: &Snapshot, a: PciAddress) -> bool {
        snap.device(a).is_some() && !self.destroyed.contains(&a)
    }
}

/// Resolves every selector and SR-IOV entry of `config` against `snap`. A PF in `released`
/// (vfioctl changed its VF count earlier) that no `[[sriov]]` entry names any more goes back
/// to its original count, unless a `[[device]]` entry still names one of the VFs that would
/// remove (then it keeps its VFs, with a note in the problems).
pub fn resolve(config: &Config, snap: &Snapshot, released: &[super::TakenVfs]) -> Resolution {
    let mut r = Resolution::default();
    for spec in &config.sriov {
        vf_change(snap, spec, &mut r);
    }
    for t in released {
        if config.sriov.iter().any(|s| s.pf == t.pf) {
            continue;
        }
        let spec = crate::config::SriovSpec {
            pf: t.pf,
            num_vfs: t.original_num_vfs,
            origin: crate::config::Origin::default(),
        };
        let mut back = Resolution::default();
        vf_change(snap, &spec, &mut back);
        let Some(mut change) = back.vf_changes.remove(&t.pf) else {
            // Already back or gone: nothing to do. Present but not changeable (a VF in use):
            // say why.
            if snap.device(t.pf).is_some() {
                r.problems.append(&mut back.problems);
            }
            continue;
        };
        let wanted: Vec<PciAddress> = change
            .destroyed
            .iter()
            .copied()
            .filter(|vf| {
                snap.device(*vf)
                    .is_some_and(|d| config.wanted(*vf, Some(&d.ids())).is_some())
            })
            .collect();
        if !wanted.is_empty() {
            r.problems.push(
                Problem::new(
                    ProblemKind::Sriov,
                    format!(
                        "{} is no longer in [[sriov]], but going back to its original {} VFs                          would remove {} that [[device]] entries still name; its VFs stay until                          those entries go (or add [[sriov]] for it again)",
                        t.pf,
                        t.original_num_vfs,
                        wanted
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .device(t.pf),
            );
            continue;
        }
        change.release = true;
        r.problems.append(&mut back.problems);
        r.destroyed.extend(back.destroyed);
        r.pending.extend(back.pending);
        r.vf_changes.insert(t.pf, change);
    }
    let future: Vec<(PciAddress, FutureIds)> = r
        .vf_changes
        .values()
        .flat_map(|c| {
            let pf = snap.device(c.pf);
            c.created.iter().filter_map(move |a| {
                let pf = pf?;
                Some((*a, future_ids(pf)))
            })
        })
        .collect();
    for spec in &config.devices {
        let found = select(spec, snap, &r, &future);
        if found.is_empty() {
            r.problems.push(missing(spec, snap));
        }
        r.entries.push(found);
    }
    r
}

impl FutureIds {
    /// What a selector can compare of a function that does not exist yet.
    pub fn ids(&self) -> FunctionIds {
        FunctionIds {
            vendor: self.vendor,
            device: self.device,
            subsystem_vendor: None,
            subsystem_device: None,
            class: Some(self.class),
        }
    }
}

fn future_ids(pf: &PciDevice) -> FutureIds {
    FutureIds {
        vendor: pf.vendor,
        device: pf
            .sriov
            .as_ref()
            .and_then(|s| s.vf_device)
            .unwrap_or(pf.device),
        class: pf.class,
    }
}

fn vf_change(snap: &Snapshot, spec: &crate::config::SriovSpec, r: &mut Resolution) {
    let problem = |msg: String| Problem::new(ProblemKind::Sriov, msg).device(spec.pf);
    let Some(pf) = snap.device(spec.pf) else {
        r.problems.push(problem(format!(
            "[[sriov]] names {}, which is not present on this host",
            spec.pf
        )));
        return;
    };
    let Some(sriov) = &pf.sriov else {
        r.problems.push(problem(format!(
            "[[sriov]] names {} ({}:{}, {}), which has no SR-IOV capability",
            spec.pf,
            pf.vendor,
            pf.device,
            pf.class.name()
        )));
        return;
    };
    if spec.num_vfs > sriov.total_vfs {
        r.problems.push(problem(format!(
            "[[sriov]] asks {} for {} VFs but it supports at most {} (sriov_totalvfs); \
             set num_vfs to {} or less",
            spec.pf, spec.num_vfs, sriov.total_vfs, sriov.total_vfs
        )));
        return;
    }
    if spec.num_vfs > 0 && sriov.stride == 0 && spec.num_vfs > 1 {
        r.problems.push(problem(format!(
            "{} reports sriov_stride 0, so the addresses of its VFs cannot be computed",
            spec.pf
        )));
        return;
    }
    if spec.num_vfs == sriov.num_vfs {
        return;
    }
    let mut destroyed: Vec<PciAddress> = sriov.vfs.clone();
    // VFs the snapshot lists by physfn but the PF's list missed are gone all the same.
    for d in &snap.devices {
        if d.physfn == Some(spec.pf) && !destroyed.contains(&d.address) {
            destroyed.push(d.address);
        }
    }
    // Changing the count removes every VF; refuse when the host is using one.
    let busy: Vec<String> = destroyed
        .iter()
        .filter_map(|a| snap.device(*a))
        .filter(|d| d.usage.in_use())
        .map(|d| format!("{}: {}", d.address, d.usage.reasons().join("; ")))
        .collect();
    if !busy.is_empty() {
        r.problems.push(problem(format!(
            "[[sriov]] {}: changing the VF count from {} to {} removes every VF, and the host \
             is using some:\n  {}\nstop using them first",
            spec.pf,
            sriov.num_vfs,
            spec.num_vfs,
            busy.join("\n  ")
        )));
        return;
    }
    let created: Vec<PciAddress> = (0..spec.num_vfs)
        .map(|i| sriov.vf_address(spec.pf, i))
        .collect();
    for a in &destroyed {
        r.destroyed.insert(*a);
    }
    for a in &created {
        r.pending.insert(*a, spec.pf);
    }
    r.vf_changes.insert(
        spec.pf,
        VfChange {
            pf: spec.pf,
            from: sriov.num_vfs,
            to: spec.num_vfs,
            destroyed,
            created,
            release: false,
        },
    );
}

fn select(
    spec: &DeviceSpec,
    snap: &Snapshot,
    r: &Resolution,
    future: &[(PciAddress, FutureIds)],
) -> Vec<PciAddress> {
    match &spec.selector {
        Selector::Address(a) => {
            if r.pending.contains_key(a) || r.survives(snap, *a) {
                vec![*a]
            } else {
                Vec::new()
            }
        }
        Selector::Ids { .. } => {
            let mut out: Vec<PciAddress> = snap
                .devices
                .iter()
                .filter(|d| !r.destroyed.contains(&d.address))
                .filter(|d| spec.selector.matches(d.address, &d.ids()))
                .map(|d| d.address)
                .collect();
            // A VF that does not exist yet has no subsystem ids: an entry that names them
            // does not match it.
            out.extend(
                future
                    .iter()
                    .filter(|(a, f)| spec.selector.matches(*a, &f.ids()))
                    .map(|(a, _)| *a),
            );
            out.sort();
            out.dedup();
            out
        }
    }
}

fn missing(spec: &DeviceSpec, snap: &Snapshot) -> Problem {
    match &spec.selector {
        Selector::Address(a) => {
            let mut msg = format!(
                "[[device]] `{}`: {} is not present on this host",
                spec.name, a
            );
            if let Some(pf) = snap.devices.iter().find(|d| {
                d.sriov
                    .as_ref()
                    .is_some_and(|s| covers_vf(s, d.address, *a))
            }) {
                msg.push_str(&format!(
                    " (it would be a VF of {}; add an [[sriov]] entry for {} with enough VFs)",
                    pf.address, pf.address
                ));
            }
            Problem::new(ProblemKind::Missing, msg)
                .entry(&spec.name)
                .device(*a)
        }
        Selector::Ids { vendor, device, .. } => Problem::new(
            ProblemKind::Missing,
            format!(
                "[[device]] `{}`: no function on this host matches {}:{}",
                spec.name, vendor, device
            ),
        )
        .entry(&spec.name),
    }
}

/// Whether `a` is one of the addresses PF `pf` can give a VF.
fn covers_vf(s: &crate::host::Sriov, pf: PciAddress, a: PciAddress) -> bool {
    (0..s.total_vfs.min(4096)).any(|i| s.vf_address(pf, i) == a)
}
