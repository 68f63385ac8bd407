//! DMA windows: what a domain should map, the pure diff between the desired windows and the
//! mappings a domain holds (add, remove, resize as unmap + map), and the checks of a window
//! against the live container (`VFIO_IOMMU_GET_INFO`) and the groups' reserved regions.
//!
//! No I/O here: the held state feeds in what it holds and what the kernel reported.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::model::DomainSpec;
use crate::host::snapshot::ReservedRegion;
use crate::vfio::iommu_info::IommuInfo;

/// The huge page size windows with `hugepages = true` are aligned to.
pub const HUGE_PAGE: u64 = 2 * 1024 * 1024;

/// One window, resolved from the config: a name, an IOVA range and how to back it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub iova: u64,
    pub size: u64,
    pub hugepages: bool,
}

impl Window {
    /// Exclusive end (saturating; the config check rejects overflow).
    pub fn end(&self) -> u64 {
        self.iova.saturating_add(self.size)
    }

    fn overlaps(&self, other: &Window) -> bool {
        self.iova < other.end() && other.iova < self.end()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "window \"{}\" (IOVA {:#x}..{:#x}, {})",
            self.name,
            self.iova,
            self.end(),
            human_bytes(self.size)
        )
    }
}

/// `512 MiB`, `4 KiB`, `3000 B`: exact when a binary unit divides the value.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, scale) in UNITS {
        if n >= scale && n % scale == 0 {
            return format!("{} {unit}", n / scale);
        }
    }
    format!("{n} B")
}

/// The windows a `[[domain]]` asks for, named (`window N`, 1-based, when unnamed).
pub fn desired(spec: &DomainSpec) -> Vec<Window> {
    spec.windows
        .iter()
        .enumerate()
        .map(|(i, w)| Window {
            name: w
                .name
                .clone()
                .unwrap_or_else(|| format!("window {}", i + 1)),
            iova: w.iova,
            size: w.size,
            hugepages: w.hugepages,
        })
        .collect()
}

/// One change to a domain's mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum WindowChange {
    /// A window in the config that is not mapped.
    Add { window: Window },
    /// A mapped window no longer in the config.
    Remove { window: Window },
    /// A window whose range or backing changed: unmapped, then mapped anew.
    Resize { from: Window, to: Window },
}

impl WindowChange {
    pub fn name(&self) -> &str {
        match self {
            WindowChange::Add { window } | WindowChange::Remove { window } => &window.name,
            WindowChange::Resize { to, .. } => &to.name,
        }
    }
}

impl fmt::Display for WindowChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowChange::Add { window } => write!(f, "map {window}"),
            WindowChange::Remove { window } => write!(f, "unmap {window}"),
            WindowChange::Resize { from, to } => write!(
                f,
                "resize window \"{}\": IOVA {:#x}..{:#x} ({}) -> {:#x}..{:#x} ({})",
                to.name,
                from.iova,
                from.end(),
                human_bytes(from.size),
                to.iova,
                to.end(),
                human_bytes(to.size)
            ),
        }
    }
}

/// Compares desired windows with held ones, matching by name. The result is sorted by name
/// within each kind: removals, then resizes, then additions.
pub fn diff(desired: &[Window], held: &[Window]) -> Vec<WindowChange> {
    let want: BTreeMap<&str, &Window> = desired.iter().map(|w| (w.name.as_str(), w)).collect();
    let have: BTreeMap<&str, &Window> = held.iter().map(|w| (w.name.as_str(), w)).collect();
    let mut removes = Vec::new();
    let mut resizes = Vec::new();
    let mut adds = Vec::new();
    for (name, h) in &have {
        match want.get(name) {
            None => removes.push(WindowChange::Remove {
                window: (*h).clone(),
            }),
            Some(w) if w != h => resizes.push(WindowChange::Resize {
                from: (*h).clone(),
                to: (*w).clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, w) in &want {
        if !have.contains_key(name) {
            adds.push(WindowChange::Add {
                window: (*w).clone(),
            });
        }
    }
    removes.into_iter().chain(resizes).chain(adds).collect()
}

/// A single kernel operation, in the order it must run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowStep {
    Unmap(Window),
    Map(Window),
}

/// Flattens changes into steps: every unmap (removed windows and the old range of resized
/// ones) before any map, so a window may grow into a range another window gives up in the
/// same pass without the kernel seeing an overlap (EEXIST).
pub fn steps(changes: &[WindowChange]) -> Vec<WindowStep> {
    let mut unmaps = Vec::new();
    let mut maps = Vec::new();
    for c in changes {
        match c {
            WindowChange::Remove { window } => unmaps.push(WindowStep::Unmap(window.clone())),
            WindowChange::Resize { from, to } => {
                unmaps.push(WindowStep::Unmap(from.clone()));
                maps.push(WindowStep::Map(to.clone()));
            }
            WindowChange::Add { window } => maps.push(WindowStep::Map(window.clone())),
        }
    }
    unmaps.extend(maps);
    unmaps
}

/// A reserved region and the group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReserved {
    pub group: u32,
    pub region: ReservedRegion,
}

/// Why a window cannot be mapped; each names the window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{window}: size is zero")]
    Empty { window: Window },
    #[error("{window}: not aligned to the IOMMU's smallest page size {}; use a multiple of it for iova and size", human_bytes(*page))]
    Misaligned { window: Window, page: u64 },
    #[error(
        "{window}: hugepages = true needs iova and size aligned to {}",
        human_bytes(HUGE_PAGE)
    )]
    HugeMisaligned { window: Window },
    #[error(
        "{window}: outside the container's usable IOVA ranges ({ranges}); move it into one of them"
    )]
    OutsideRanges { window: Window, ranges: String },
    #[error("{window}: overlaps reserved region {:#x}-{:#x} ({}) of IOMMU group {group}; move the window", region.start, region.end, region.kind)]
    Reserved {
        window: Window,
        group: u32,
        region: ReservedRegion,
    },
    #[error("{window}: overlaps window \"{other}\" of the same domain")]
    Overlap { window: Window, other: String },
    #[error("{window}: the container has {avail} DMA mapping(s) available, {needed} needed")]
    NoMappingsLeft {
        window: Window,
        avail: u32,
        needed: u32,
    },
}

impl WindowError {
    pub fn window(&self) -> &Window {
        match self {
            WindowError::Empty { window }
            | WindowError::Misaligned { window, .. }
            | WindowError::HugeMisaligned { window }
            | WindowError::OutsideRanges { window, .. }
            | WindowError::Reserved { window, .. }
            | WindowError::Overlap { window, .. }
            | WindowError::NoMappingsLeft { window, .. } => window,
        }
    }
}

/// Checks the windows a pass is about to map (`to_map`) against the container's `info`, the
/// member groups' reserved regions and the domain's other windows (`all`, the whole desired
/// set). `freed` is how many mappings the same pass releases first. Returns every problem.
pub fn check(
    to_map: &[Window],
    all: &[Window],
    info: &IommuInfo,
    reserved: &[GroupReserved],
    freed: u32,
) -> Vec<WindowError> {
    let mut errors = Vec::new();
    let page = info.min_page_size();
    let mut fit = 0u32;
    for w in to_map {
        let before = errors.len();
        if w.size == 0 {
            errors.push(WindowError::Empty { window: w.clone() });
            continue;
        }
        if w.iova % page != 0 || w.size % page != 0 {
            errors.push(WindowError::Misaligned {
                window: w.clone(),
                page,
            });
        }
        if w.hugepages && (w.iova % HUGE_PAGE != 0 || w.size % HUGE_PAGE != 0) {
            errors.push(WindowError::HugeMisaligned { window: w.clone() });
        }
        if let Some(ranges) = &info.iova_ranges {
            if !ranges.iter().any(|r| r.contains(w.iova, w.size)) {
                let text = ranges
                    .iter()
                    .map(|r| format!("{:#x}-{:#x}", r.start, r.end))
                    .collect::<Vec<_>>()
                    .join(", ");
                errors.push(WindowError::OutsideRanges {
                    window: w.clone(),
                    ranges: text,
                });
            }
        }
        for r in reserved {
            if r.region.overlaps(w.iova, w.size) {
                errors.push(WindowError::Reserved {
                    window: w.clone(),
                    group: r.group,
                    region: r.region.clone(),
                });
            }
        }
        for o in all {
            if o.name != w.name && o.overlaps(w) {
                errors.push(WindowError::Overlap {
                    window: w.clone(),
                    other: o.name.clone(),
                });
            }
        }
        if errors.len() == before {
            fit += 1;
            if let Some(avail) = info.dma_avail {
                let avail = avail.saturating_add(freed);
                if fit > avail {
                    errors.push(WindowError::NoMappingsLeft {
                        window: w.clone(),
                        avail,
                        needed: fit,
                    });
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{Origin, Placement, WindowSpec};
    use crate::vfio::iommu_info::IovaRange;

    fn w(name: &str, iova: u64, size: u64) -> Window {
        Window {
            name: name.into(),
            iova,
            size,
            hugepages: false,
        }
    }

    const MIB: u64 = 1 << 20;

    fn vm_info() -> IommuInfo {
        IommuInfo {
            page_sizes: 0x4020_1000,
            iova_ranges: Some(vec![
                IovaRange {
                    start: 0,
                    end: 0xfedf_ffff,
                },
                IovaRange {
                    start: 0xfef0_0000,
                    end: 0x7f_ffff_ffff,
                },
            ]),
            dma_avail: Some(65535),
        }
    }

    fn msi(group: u32) -> GroupReserved {
        GroupReserved {
            group,
            region: ReservedRegion {
                start: 0xfee0_0000,
                end: 0xfeef_ffff,
                kind: "msi".into(),
            },
        }
    }

    #[test]
    fn unnamed_windows_are_numbered_from_one() {
        let spec = DomainSpec {
            name: "d".into(),
            devices: vec![],
            placement: Placement::Shared,
            backend: crate::config::model::BackendChoice::Auto,
            windows: vec![
                WindowSpec {
                    name: None,
                    iova: 0,
                    size: MIB,
                    hugepages: false,
                    origin: Origin::default(),
                },
                WindowSpec {
                    name: Some("ring".into()),
                    iova: MIB,
                    size: MIB,
                    hugepages: true,
                    origin: Origin::default(),
                },
            ],
            origin: Origin::default(),
        };
        let ws = desired(&spec);
        assert_eq!(ws[0].name, "window 1");
        assert_eq!(ws[1].name, "ring");
        assert!(ws[1].hugepages);
    }

    #[test]
    fn identical_sets_give_no_change() {
        let a = vec![w("a", 0, MIB), w("b", MIB, MIB)];
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn add_remove_and_resize_are_told_apart() {
        let held = vec![w("a", 0, MIB), w("b", MIB, MIB), w("gone", 8 * MIB, MIB)];
        let want = vec![
            w("a", 0, 2 * MIB),
            w("b", MIB, MIB),
            w("new", 16 * MIB, MIB),
        ];
        let d = diff(&want, &held);
        assert_eq!(
            d,
            vec![
                WindowChange::Remove {
                    window: w("gone", 8 * MIB, MIB)
                },
                WindowChange::Resize {
                    from: w("a", 0, MIB),
                    to: w("a", 0, 2 * MIB)
                },
                WindowChange::Add {
                    window: w("new", 16 * MIB, MIB)
                },
            ]
        );
    }

    #[test]
    fn a_backing_change_alone_is_a_resize() {
        let held = vec![w("a", 0, 2 * MIB)];
        let mut huge = w("a", 0, 2 * MIB);
        huge.hugepages = true;
        let d = diff(std::slice::from_ref(&huge), &held);
        assert!(matches!(&d[..], [WindowChange::Resize { .. }]));
    }

    #[test]
    fn every_unmap_runs_before_any_map() {
        // "a" grows into the range "b" moves away from: both unmaps must come first.
        let held = vec![w("a", 0, MIB), w("b", MIB, MIB)];
        let want = vec![w("a", 0, 2 * MIB), w("b", 2 * MIB, MIB)];
        let s = steps(&diff(&want, &held));
        assert_eq!(
            s,
            vec![
                WindowStep::Unmap(w("a", 0, MIB)),
                WindowStep::Unmap(w("b", MIB, MIB)),
                WindowStep::Map(w("a", 0, 2 * MIB)),
                WindowStep::Map(w("b", 2 * MIB, MIB)),
            ]
        );
    }

    #[test]
    fn a_window_in_the_msi_hole_is_refused_by_range_and_reserved_region() {
        let bad = w("irq", 0xfee0_0000, MIB);
        let errs = check(
            std::slice::from_ref(&bad),
            std::slice::from_ref(&bad),
            &vm_info(),
            &[msi(5)],
            0,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(matches!(errs[0], WindowError::OutsideRanges { .. }));
        let text = errs[1].to_string();
        assert!(text.contains("window \"irq\""), "{text}");
        assert!(text.contains("reserved region 0xfee00000-0xfeefffff (msi) of IOMMU group 5"));
    }

    #[test]
    fn a_window_past_the_address_width_is_outside_the_ranges() {
        let far = w("far", 0x80_0000_0000, MIB);
        let errs = check(
            std::slice::from_ref(&far),
            std::slice::from_ref(&far),
            &vm_info(),
            &[],
            0,
        );
        assert!(matches!(&errs[..], [WindowError::OutsideRanges { .. }]));
        assert!(errs[0].to_string().contains("0xfef00000-0x7fffffffff"));
    }

    #[test]
    fn misalignment_and_hugepage_alignment_are_checked() {
        let odd = w("odd", 0x1000_0800, 0x1000);
        let mut huge = w("huge", 0x20_1000, 2 * MIB);
        huge.hugepages = true;
        let all = vec![odd.clone(), huge.clone()];
        let errs = check(&all, &all, &vm_info(), &[], 0);
        assert!(matches!(
            errs[0],
            WindowError::Misaligned { page: 4096, .. }
        ));
        assert!(matches!(errs[1], WindowError::HugeMisaligned { .. }));
    }

    #[test]
    fn overlapping_windows_of_a_domain_are_refused() {
        let all = vec![w("a", 0, 2 * MIB), w("b", MIB, MIB)];
        let errs = check(&all[1..], &all, &vm_info(), &[], 0);
        assert_eq!(
            errs,
            vec![WindowError::Overlap {
                window: w("b", MIB, MIB),
                other: "a".into()
            }]
        );
    }

    #[test]
    fn the_available_mapping_count_limits_new_windows_after_frees() {
        let mut info = vm_info();
        info.dma_avail = Some(1);
        let all = vec![w("a", 0, MIB), w("b", MIB, MIB), w("c", 2 * MIB, MIB)];
        let errs = check(&all, &all, &info, &[], 0);
        assert_eq!(errs.len(), 2);
        assert!(errs[0]
            .to_string()
            .contains("1 DMA mapping(s) available, 2 needed"));
        assert!(check(&all, &all, &info, &[], 2).is_empty());
    }

    #[test]
    fn without_range_cap_any_aligned_range_is_usable() {
        let info = IommuInfo::default();
        let a = w("a", 0xfee0_0000, MIB);
        assert!(check(
            std::slice::from_ref(&a),
            std::slice::from_ref(&a),
            &info,
            &[],
            0
        )
        .is_empty());
    }

    #[test]
    fn sizes_print_in_exact_binary_units() {
        assert_eq!(human_bytes(512 * MIB), "512 MiB");
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(human_bytes(3 * MIB + 1), format!("{} B", 3 * MIB + 1));
    }
}
