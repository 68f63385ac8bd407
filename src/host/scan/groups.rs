//! IOMMU groups (`/sys/kernel/iommu_groups/N`: members, default domain `type`,
//! `reserved_regions`) and IOMMU units (`/sys/class/iommu/*/devices`), and how a function's
//! own `iommu_group` link and the groups' member lists are joined ([`join_members`]).

use std::path::Path;

use crate::host::snapshot::{IommuGroup, IommuUnit, PciDevice, ReservedRegion};
use crate::pci::PciAddress;

use super::read::{Need, Reader};

/// Every group under `groups_dir`, sorted by id. An empty directory means no IOMMU.
pub fn scan_groups(
    r: &mut Reader,
    groups_dir: &Path,
    only: Option<&std::collections::BTreeSet<u32>>,
) -> Vec<IommuGroup> {
    let mut out = Vec::new();
    let names = match only {
        None => r.list(groups_dir, Need::Optional),
        Some(ids) => ids.iter().map(|g| g.to_string().into()).collect(),
    };
    for name in names {
        let dir = groups_dir.join(&name);
        let Ok(id) = name.to_string_lossy().parse::<u32>() else {
            r.warn(&dir, "not a group number; entry skipped");
            continue;
        };
        let devices = addresses_in(r, &dir.join("devices"));
        let domain_type = r.text(&dir.join("type"), Need::Optional);
        let reserved_regions = r
            .text(&dir.join("reserved_regions"), Need::Optional)
            .map(|t| parse_reserved_regions(r, &dir.join("reserved_regions"), &t))
            .unwrap_or_default();
        out.push(IommuGroup {
            id,
            devices,
            domain_type,
            reserved_regions,
            node: None,
        });
    }
    out.sort_by_key(|g| g.id);
    out
}

/// Joins the two views of membership: each function's `iommu_group` link, and each group's
/// `devices/` list. A function the list names whose link is missing takes the list's group
/// (one function, one group: it is never shown both in its group and as groupless), with a
/// warning; a link that disagrees with the lists is warned about; a link naming a group that is
/// not there (dangling, or a group that went away mid-scan) is warned about, and the function
/// counts as having no group, so nothing takes it on a guess. `scanned`: the groups a partial
/// scan read (`None`: all).
pub fn join_members(
    r: &mut Reader,
    pci_devices: &Path,
    groups_dir: &Path,
    devices: &mut [PciDevice],
    groups: &[IommuGroup],
    scanned: Option<&std::collections::BTreeSet<u32>>,
) {
    let index: std::collections::BTreeMap<PciAddress, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.address, i))
        .collect();
    for g in groups {
        for a in &g.devices {
            let Some(&i) = index.get(a) else { continue };
            match devices[i].iommu_group {
                Some(x) if x == g.id => {}
                None => {
                    r.warn(
                        &pci_devices.join(a.to_string()).join("iommu_group"),
                        format!(
                            "link missing, but IOMMU group {} lists {a}: taken as its member",
                            g.id
                        ),
                    );
                    devices[i].iommu_group = Some(g.id);
                }
                Some(x) => {
                    let dir = groups_dir.join(g.id.to_string()).join("devices");
                    r.warn(&dir, format!("lists {a}, whose iommu_group link says {x}"));
                }
            }
        }
    }
    let present: std::collections::BTreeSet<u32> = groups.iter().map(|g| g.id).collect();
    for d in devices.iter_mut() {
        let Some(g) = d.iommu_group else { continue };
        let looked = scanned.map_or(true, |s| s.contains(&g));
        if looked && !present.contains(&g) {
            r.warn(
                &pci_devices.join(d.address.to_string()).join("iommu_group"),
                format!(
                    "link names IOMMU group {g}, which is not in /sys/kernel/iommu_groups; \
                     {} counts as having no group (nothing takes it)",
                    d.address
                ),
            );
            d.iommu_group = None;
        }
    }
}

/// The PCI addresses named in a `devices/` directory, sorted; other entries are ignored
/// (an IOMMU unit may list non-PCI devices).
fn addresses_in(r: &mut Reader, dir: &Path) -> Vec<PciAddress> {
    let mut v: Vec<PciAddress> = r
        .list(dir, Need::Required)
        .iter()
        .filter_map(|n| n.to_str().and_then(|s| s.parse().ok()))
        .collect();
    v.sort();
    v
}

/// Parses `reserved_regions`: lines `0x%016llx 0x%016llx type`, end inclusive.
pub fn parse_reserved_regions(r: &mut Reader, path: &Path, text: &str) -> Vec<ReservedRegion> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let parsed = (|| {
            let start = parse_hex_u64(f.next()?)?;
            let end = parse_hex_u64(f.next()?)?;
            let kind = f.next()?.to_string();
            (start <= end).then_some(ReservedRegion { start, end, kind })
        })();
        match parsed {
            Some(reg) => out.push(reg),
            None => r.warn(
                path,
                format!(
                    "line {}: `{}` is not `START END TYPE` (hex, end inclusive)",
                    i + 1,
                    line.escape_debug()
                ),
            ),
        }
    }
    out
}

fn parse_hex_u64(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// Every IOMMU unit under `class_dir` (`/sys/class/iommu`), sorted by name.
pub fn scan_units(r: &mut Reader, class_dir: &Path) -> Vec<IommuUnit> {
    let mut out: Vec<IommuUnit> = r
        .list(class_dir, Need::Optional)
        .into_iter()
        .map(|name| {
            let devices = addresses_in(r, &class_dir.join(&name).join("devices"));
            IommuUnit {
                name: name.to_string_lossy().into_owned(),
                devices,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
