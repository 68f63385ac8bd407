//! Group closure by the kernel's viability rule (since 5.19): a group can be used through VFIO
//! only when every member is unbound or on a driver that manages no DMA (vfio-pci and its
//! variants, pci-stub, pcieport). Owns companions (consented siblings go to vfio-pci), the
//! treatment of bridges and driverless siblings, and the error that names a blocking sibling
//! together with the exact `companions = [...]` line that fixes it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::host::{driver_keeps_group_viable, is_vfio_driver, PciDevice, Snapshot};
use crate::pci::PciAddress;

use super::claims::{Claim, Claims, Role};
use super::problem::{Problem, ProblemKind};

/// Adds a claim for every present companion of every entry. A companion another entry already
/// claims keeps that claim. Returns notes about companions that are not in the entry's groups.
pub fn add_companions(config: &Config, snap: &Snapshot, claims: &mut Claims) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, spec) in config.devices.iter().enumerate() {
        let groups: BTreeSet<u32> = claims
            .of_entry(i)
            .filter_map(|(a, _)| snap.device(a).and_then(|d| d.iommu_group))
            .collect();
        for c in &spec.companions {
            let Some(dev) = snap.device(*c) else {
                notes.push(format!(
                    "[[device]] `{}`: companion {c} is not present; nothing to take",
                    spec.name
                ));
                continue;
            };
            if dev.bridge || dev.class.is_bridge() {
                notes.push(format!(
                    "[[device]] `{}`: companion {c} is a bridge; bridges are never taken \
                     (vfio-pci cannot), it is left on {}",
                    spec.name,
                    dev.driver.as_deref().unwrap_or("no driver")
                ));
                continue;
            }
            if !dev.iommu_group.is_some_and(|g| groups.contains(&g)) {
                notes.push(format!(
                    "[[device]] `{}`: companion {c} is not in the IOMMU group of any of its \
                     functions; it is left alone",
                    spec.name
                ));
                continue;
            }
            claims.claims.entry(*c).or_insert(Claim {
                driver: spec.companion_driver().to_string(),
                entry: i,
                role: Role::Companion,
                pending: false,
            });
        }
    }
    notes
}

/// The driver `dev` will be on after the plan, when the plan does not claim it.
fn final_driver<'a>(dev: &'a PciDevice, claims: &'a Claims) -> Option<&'a str> {
    match claims.releases.get(&dev.address) {
        Some(r) => r.final_driver(dev),
        None => dev.driver.as_deref(),
    }
}

/// Checks every group holding an existing claimed function. Returns the groups that cannot be
/// made viable (nothing in them is planned), with one problem per group, and notes naming the
/// members left alone.
pub fn check(
    config: &Config,
    snap: &Snapshot,
    claims: &Claims,
) -> (BTreeSet<u32>, Vec<Problem>, Vec<String>) {
    let mut failed = BTreeSet::new();
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    let mut by_group: BTreeMap<u32, Vec<PciAddress>> = BTreeMap::new();
    let mut no_iommu: Vec<PciAddress> = Vec::new();
    for (a, c) in &claims.claims {
        if c.pending {
            continue;
        }
        match snap.device(*a).and_then(|d| d.iommu_group) {
            Some(g) => by_group.entry(g).or_default().push(*a),
            None => no_iommu.push(*a),
        }
    }
    if !no_iommu.is_empty() {
        let list: Vec<String> = no_iommu.iter().map(|a| a.to_string()).collect();
        let mut p = Problem::new(
            ProblemKind::NoIommu,
            format!(
                "{} {} no IOMMU group: the IOMMU is off or absent on this host; enable it \
                 in firmware and on the kernel command line (intel_iommu=on or amd_iommu=on)",
                list.join(", "),
                if list.len() == 1 { "has" } else { "have" }
            ),
        );
        for a in &no_iommu {
            p = p.device(*a);
        }
        problems.push(p);
    }

    for (g, claimed) in by_group {
        let Some(group) = snap.group(g) else {
            failed.insert(g);
            problems.push(
                Problem::new(
                    ProblemKind::NoIommu,
                    format!(
                        "{} names IOMMU group {g}, which the snapshot does not list",
                        claimed[0]
                    ),
                )
                .group(g),
            );
            continue;
        };
        let left: Vec<String> = group
            .devices
            .iter()
            .filter(|a| !claims.claims.contains_key(a))
            .filter_map(|a| snap.device(*a))
            .filter(|d| {
                final_driver(d, claims)
                    .map_or(true, |x| driver_keeps_group_viable(x) && !is_vfio_driver(x))
            })
            .map(|d| {
                let what = if d.class.is_bridge() { "bridge " } else { "" };
                match final_driver(d, claims) {
                    Some(drv) => format!("{what}{} (on {drv})", d.address),
                    None => format!("{what}{} (no driver)", d.address),
                }
            })
            .collect();
        if !left.is_empty() {
            notes.push(format!(
                "IOMMU group {g}: {} left alone: no DMA driver, nothing to take",
                left.join(", ")
            ));
        }
        let blockers: Vec<&PciDevice> = group
            .devices
            .iter()
            .filter(|a| !claims.claims.contains_key(a))
            .filter_map(|a| snap.device(*a))
            .filter(|d| final_driver(d, claims).is_some_and(|drv| !driver_keeps_group_viable(drv)))
            .collect();
        if blockers.is_empty() {
            continue;
        }
        failed.insert(g);
        problems.push(sibling_problem(config, claims, g, &claimed, &blockers));
    }
    (failed, problems, notes)
}

fn sibling_problem(
    config: &Config,
    claims: &Claims,
    g: u32,
    claimed: &[PciAddress],
    blockers: &[&PciDevice],
) -> Problem {
    // The entry to extend: the first declared claim in the group, in config order.
    let entry = claimed
        .iter()
        .filter_map(|a| claims.claims.get(a))
        .filter(|c| c.role == Role::Declared)
        .map(|c| c.entry)
        .min()
        .or_else(|| {
            claimed
                .iter()
                .filter_map(|a| claims.claims.get(a))
                .map(|c| c.entry)
                .min()
        })
        .unwrap_or(0);
    let spec = &config.devices[entry];
    let names: Vec<String> = claimed
        .iter()
        .filter_map(|a| claims.claims.get(a).map(|c| (a, c)))
        .map(|(a, c)| format!("{a} of [[device]] `{}`", config.devices[c.entry].name))
        .collect();

    let mut msg = format!(
        "IOMMU group {g} cannot be used through VFIO: it holds {}, and",
        names.join(", ")
    );
    for d in blockers {
        let drv = final_driver(d, claims).unwrap_or("");
        let what = if d.bridge || d.class.is_bridge() {
            "bridge "
        } else {
            ""
        };
        let going_back = if claims.releases.contains_key(&d.address) {
            " (it goes back there: it is no longer in the config)"
        } else {
            ""
        };
        msg.push_str(&format!(
            "\n  {what}{} ({}:{}, {} [{}]) is on driver {drv}{going_back}, which does DMA",
            d.address,
            d.vendor,
            d.device,
            d.class.name(),
            d.class,
        ));
    }
    msg.push_str(
        "\nthe kernel allows a group only when every member is unbound or on vfio-pci, \
         pci-stub or pcieport.",
    );
    let is_bridge = |d: &PciDevice| d.bridge || d.class.is_bridge();
    let takeable: Vec<&PciDevice> = blockers.iter().copied().filter(|d| !is_bridge(d)).collect();
    if !takeable.is_empty() {
        let mut list: Vec<PciAddress> = spec.companions.clone();
        for d in &takeable {
            if !list.contains(&d.address) {
                list.push(d.address);
            }
        }
        let quoted: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
        msg.push_str(&format!(
            " To take {} too, add to [[device]] `{}`:\n    companions = [{}]",
            if takeable.len() == 1 { "it" } else { "them" },
            spec.name,
            quoted.join(", ")
        ));
    }
    for d in blockers.iter().filter(|d| is_bridge(d)) {
        msg.push_str(&format!(
            "\nbridge {} cannot be taken: bind it to pcieport or unbind it from {} (a bridge \
             needs no driver to forward DMA)",
            d.address,
            d.driver.as_deref().unwrap_or("its driver")
        ));
    }
    let mut p = Problem::new(ProblemKind::Sibling, msg)
        .entry(&spec.name)
        .group(g);
    for a in claimed {
        p = p.device(*a);
    }
    for d in blockers {
        p = p.device(d.address);
    }
    p
}
