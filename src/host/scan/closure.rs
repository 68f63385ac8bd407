//! Which functions and groups a scoped scan reads: the closure of its seeds (defined in
//! [`crate::host::partial`]), found through sysfs listings and links alone, so no attribute of a
//! function outside the closure is read.

use std::collections::BTreeSet;
use std::path::Path;

use crate::host::partial::same_slot;
use crate::host::Roots;
use crate::pci::PciAddress;

use super::read::{Need, Reader};

/// The functions and IOMMU groups to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    pub functions: BTreeSet<PciAddress>,
    pub groups: BTreeSet<u32>,
}

fn address(name: &str) -> Option<PciAddress> {
    name.parse().ok()
}

/// Finds the closure of `seeds` under `devices_dir` (`/sys/bus/pci/devices`).
pub fn read(r: &mut Reader, roots: &Roots, devices_dir: &Path, seeds: &[PciAddress]) -> Closure {
    let present: BTreeSet<PciAddress> = r
        .list(devices_dir, Need::Required)
        .iter()
        .filter_map(|n| n.to_str().and_then(address))
        .collect();
    let mut functions = BTreeSet::new();
    for seed in seeds.iter().filter(|s| present.contains(s)) {
        functions.insert(*seed);
        functions.extend(present.iter().filter(|o| same_slot(o, seed)));
        let dir = devices_dir.join(seed.to_string());
        if let Some(pf) = r
            .link_name(&dir.join("physfn"), Need::Optional)
            .and_then(|n| address(&n))
        {
            if present.contains(&pf) {
                functions.insert(pf);
            }
        }
        let num_vfs = r
            .decimal(&dir.join("sriov_numvfs"), Need::Optional, "count")
            .unwrap_or(0u32);
        functions.extend(
            super::pci::virtfns(r, &dir, num_vfs, Need::Optional)
                .into_iter()
                .filter(|vf| present.contains(vf)),
        );
    }
    let mut groups = BTreeSet::new();
    for f in &functions {
        let link = devices_dir.join(f.to_string()).join("iommu_group");
        if let Some(g) = r
            .link_name(&link, Need::Optional)
            .and_then(|n| n.parse::<u32>().ok())
        {
            groups.insert(g);
        }
    }
    for g in &groups {
        let members = roots.iommu_groups().join(g.to_string()).join("devices");
        functions.extend(
            r.list(&members, Need::Optional)
                .iter()
                .filter_map(|n| n.to_str().and_then(address))
                .filter(|a| present.contains(a)),
        );
    }
    Closure { functions, groups }
}
