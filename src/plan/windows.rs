//! Offline checks of `[[domain]]` DMA windows against the host: every window must miss the
//! reserved regions (the MSI window, direct-mapped ranges) of every member group, and a
//! container must not need more mappings than `vfio_iommu_type1`'s `dma_entry_limit`. Owns
//! these checks and their messages, which name the window and the region it hits. (Opening
//! domains and mapping windows belongs to `watch`; the live `VFIO_IOMMU_GET_INFO` check is
//! done there.)

use std::collections::BTreeSet;

use crate::config::{Config, WindowSpec};
use crate::host::Snapshot;
use crate::pci::PciAddress;

use super::problem::{Problem, ProblemKind};
use super::resolve::Resolution;

fn window_name(w: &WindowSpec, i: usize) -> String {
    match &w.name {
        Some(n) => format!("window `{n}`"),
        None => format!("window {}", i + 1),
    }
}

/// Checks every window of every domain; `res` gives the functions each entry selects.
pub fn check(config: &Config, snap: &Snapshot, res: &Resolution) -> Vec<Problem> {
    let mut problems = Vec::new();
    for dom in &config.domains {
        let mut members: Vec<(u32, PciAddress)> = Vec::new();
        let mut seen = BTreeSet::new();
        for name in &dom.devices {
            let Some(i) = config.devices.iter().position(|d| &d.name == name) else {
                problems.push(
                    Problem::new(
                        ProblemKind::UnknownEntry,
                        format!("[[domain]] `{}`: no [[device]] is named `{name}`", dom.name),
                    )
                    .entry(&dom.name),
                );
                continue;
            };
            for a in res.entries.get(i).into_iter().flatten() {
                if let Some(g) = snap.device(*a).and_then(|d| d.iommu_group) {
                    if seen.insert(g) {
                        members.push((g, *a));
                    }
                }
            }
        }
        for (wi, w) in dom.windows.iter().enumerate() {
            for (g, a) in &members {
                let Some(group) = snap.group(*g) else {
                    continue;
                };
                for r in group
                    .reserved_regions
                    .iter()
                    .filter(|r| r.overlaps(w.iova, w.size))
                {
                    problems.push(
                        Problem::new(
                            ProblemKind::Window,
                            format!(
                                "[[domain]] `{}` {} [{:#x}, {:#x}) hits the {} region \
                                 {:#x}-{:#x} of IOMMU group {g} ({a}); move the window's iova \
                                 outside it",
                                dom.name,
                                window_name(w, wi),
                                w.iova,
                                w.end(),
                                r.kind,
                                r.start,
                                r.end
                            ),
                        )
                        .entry(&dom.name)
                        .group(*g)
                        .device(*a),
                    );
                }
            }
        }
        if let Some(limit) = snap.vfio.dma_entry_limit {
            let needed = dom.windows.len() as u64;
            if needed > u64::from(limit) {
                problems.push(
                    Problem::new(
                        ProblemKind::Window,
                        format!(
                            "[[domain]] `{}` needs {needed} DMA mappings per container but \
                             vfio_iommu_type1 allows {limit} (dma_entry_limit); merge windows \
                             or raise the module parameter",
                            dom.name
                        ),
                    )
                    .entry(&dom.name),
                );
            }
        }
    }
    problems
}
