//! Partial snapshots: which functions a decision about some functions depends on (their
//! *closure*), and a snapshot cut down to exactly those.
//!
//! A scoped pass (`reconcile --device`, `watch` on a hot-plug) and the verification after a
//! pass only need the part of the host the pass is about. The closure of a set of seed
//! functions is, for each seed present: the seed, the other functions of its slot (siblings of
//! a multi-function card), its physical function and its VFs; then every member of every IOMMU
//! group those belong to, so each group the planner sees is whole. Reading only that part is
//! the live scanner's job ([`crate::host::scan::scan_closure`]); [`restrict`] is its
//! definition on data, used by hosts that hold a whole snapshot anyway, and tests check that
//! the two agree on every fixture.
//!
//! A partial snapshot says which functions it covers ([`Snapshot::covered`]): a function it
//! does not list may still exist, so nothing may conclude from its absence that it is gone.

use std::collections::BTreeSet;

use crate::pci::PciAddress;

use super::snapshot::Snapshot;

/// The functions a decision about `seeds` depends on, as `snap` describes the host.
pub fn closure(snap: &Snapshot, seeds: &[PciAddress]) -> BTreeSet<PciAddress> {
    let mut out = BTreeSet::new();
    for seed in seeds {
        let Some(d) = snap.device(*seed) else {
            continue;
        };
        out.insert(d.address);
        out.extend(
            snap.devices
                .iter()
                .filter(|o| same_slot(&o.address, &d.address))
                .map(|o| o.address),
        );
        out.extend(d.physfn.filter(|pf| snap.device(*pf).is_some()));
        if let Some(s) = &d.sriov {
            out.extend(s.vfs.iter().filter(|vf| snap.device(**vf).is_some()));
        }
    }
    let groups: BTreeSet<u32> = out
        .iter()
        .filter_map(|a| snap.device(*a).and_then(|d| d.iommu_group))
        .collect();
    for g in groups.iter().filter_map(|g| snap.group(*g)) {
        out.extend(g.devices.iter().filter(|a| snap.device(**a).is_some()));
    }
    out
}

/// Two functions of one slot (same domain, bus and device number).
pub fn same_slot(a: &PciAddress, b: &PciAddress) -> bool {
    (a.domain, a.bus, a.device) == (b.domain, b.bus, b.device)
}

/// `snap` cut down to the closure of `seeds`: those functions, the groups they belong to, and
/// everything host-wide (units, drivers, the VFIO layer, accounts) as it is.
pub fn restrict(snap: &Snapshot, seeds: &[PciAddress]) -> Snapshot {
    let keep = closure(snap, seeds);
    let mut out = snap.clone();
    out.devices.retain(|d| keep.contains(&d.address));
    let groups: BTreeSet<u32> = out.devices.iter().filter_map(|d| d.iommu_group).collect();
    out.groups.retain(|g| groups.contains(&g.id));
    out.covers = Some(keep);
    out
}

/// The host as `base` describes it, with what `part` (read later) says about the functions it
/// covers: the host as a pass leaves it, from what the pass read before changing it and what
/// verification re-read after (the closure of what changed), with no read of the rest.
///
/// A whole `part` replaces `base`. Otherwise every function `part` covers is as `part` has it
/// (absent there: gone), and so are the VFs of a PF it covers (a VF count the pass lowered
/// takes them away); each group `part` lists is as `part` has it (groups are read whole); a
/// group left with no member is gone; the host-wide parts (units, drivers, the VFIO layer,
/// warnings) are `part`'s, the fresher read; the account table stays `base`'s. The result
/// covers what `base` covers.
pub fn overlay(base: &Snapshot, part: &Snapshot) -> Snapshot {
    let Some(covered) = &part.covers else {
        return part.clone();
    };
    let replaced = |d: &crate::host::PciDevice| {
        covered.contains(&d.address) || d.physfn.is_some_and(|pf| covered.contains(&pf))
    };
    let mut out = base.clone();
    out.devices.retain(|d| !replaced(d));
    out.devices.extend(part.devices.iter().cloned());
    let present: BTreeSet<PciAddress> = out.devices.iter().map(|d| d.address).collect();
    out.groups.retain(|g| part.group(g.id).is_none());
    for g in &mut out.groups {
        g.devices.retain(|a| present.contains(a));
    }
    out.groups.retain(|g| !g.devices.is_empty());
    out.groups.extend(part.groups.iter().cloned());
    out.iommus = part.iommus.clone();
    out.pci_drivers = part.pci_drivers.clone();
    out.vfio = part.vfio.clone();
    out.warnings = part.warnings.clone();
    if let Some(c) = &mut out.covers {
        c.extend(covered.iter().copied());
    }
    out.normalize();
    out
}

impl Snapshot {
    /// Whether this snapshot describes `function`'s state: always for a whole-host snapshot;
    /// for a partial one, only the functions it was read for.
    pub fn covered(&self, function: PciAddress) -> bool {
        self.covers.as_ref().map_or(true, |c| c.contains(&function))
    }
}
