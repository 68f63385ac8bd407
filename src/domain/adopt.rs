//! Rebuilding a held domain from the fds systemd's fd store hands back after a restart
//! (issue 10). This module owns the domain's layout record (stored beside its fds, since the
//! fds alone do not say which groups share a container, nor where each window is mapped) and
//! turning a stored domain back into a [`HeldDomain`] through the [`Iommu`] seam (the real
//! kernel or the simulated one): the container and group fds are taken as they are (their kernel mappings lived on in the container), each
//! window's memfd is mapped again so its memory is reachable in this process. On the iommufd
//! backend the record also holds each container's IOAS id and lists the device cdevs (stored
//! as `device.N`), and the one iommufd (`iommufd.0`) stands for every container.
//!
//! After adoption the domain goes through the normal pass: `plan_windows` diffs the adopted
//! windows against the config, so only what differs changes.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::fdstore::{sort, FdStore, Part, Stored, StoredName};
use super::held::{HeldContainer, HeldDomain, HeldGroup, HeldWindow};
use super::iommu::GroupHandle;
use super::iommu::Iommu;
use super::placement::{Refusals, Role};
use super::windows::Window;
use super::{placement_name, Report};
use crate::config::model::Placement;
use crate::plan::backend::Backend;

/// Version of the layout record.
pub const LAYOUT_VERSION: u32 = 1;

/// One container of the layout: container N is stored as `container.N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutContainer {
    pub role: Role,
    pub groups: Vec<u32>,
    /// The IOAS id (iommufd backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioas: Option<u32>,
}

/// One device cdev of the layout (iommufd backend): device N is stored as `device.N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutDevice {
    pub address: String,
    pub group: u32,
}

fn is_legacy(b: &Backend) -> bool {
    *b == Backend::Legacy
}

/// One window of the layout: window N is stored as `window.N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutWindow {
    pub name: String,
    pub iova: u64,
    pub size: u64,
    pub hugepages: bool,
}

/// What the fds of a stored domain are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub version: u32,
    pub placement: String,
    /// Absent in records of legacy domains (and of vfioctl before issue 19).
    #[serde(default, skip_serializing_if = "is_legacy")]
    pub backend: Backend,
    pub containers: Vec<LayoutContainer>,
    pub windows: Vec<LayoutWindow>,
    /// The device cdevs, in the order they are stored (iommufd backend).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<LayoutDevice>,
}

impl Layout {
    /// The layout of a held domain, in the order its fds are stored.
    pub fn of<I: Iommu>(held: &HeldDomain<I>) -> Layout {
        Layout {
            version: LAYOUT_VERSION,
            placement: placement_name(held.placement).to_string(),
            backend: held.backend,
            containers: held
                .containers
                .iter()
                .map(|c| LayoutContainer {
                    role: c.role,
                    groups: c.group_ids(),
                    ioas: c.ioas(),
                })
                .collect(),
            devices: held
                .containers
                .iter()
                .flat_map(|c| &c.groups)
                .flat_map(|g| {
                    g.handle.devices().into_iter().map(|(a, _)| LayoutDevice {
                        address: a.to_string(),
                        group: g.id,
                    })
                })
                .collect(),
            windows: held
                .windows
                .iter()
                .map(|w| LayoutWindow {
                    name: w.window.name.clone(),
                    iova: w.window.iova,
                    size: w.window.size,
                    hugepages: w.window.hugepages,
                })
                .collect(),
        }
    }
}

/// Why a stored domain cannot be adopted (it is then closed and rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("domain \"{0}\": no layout record among its stored fds")]
    NoLayout(String),
    #[error("domain \"{domain}\": layout record unreadable: {why}")]
    BadLayout { domain: String, why: String },
    #[error("domain \"{domain}\": the layout names {what}, which systemd did not hand back")]
    Missing { domain: String, what: String },
    #[error("domain \"{domain}\": {why}")]
    Handle { domain: String, why: String },
    #[error("domain \"{domain}\": window {window}: {why}")]
    Window {
        domain: String,
        window: String,
        why: String,
    },
}

fn placement_of(name: &str) -> Option<Placement> {
    [Placement::Shared, Placement::PerGroup]
        .into_iter()
        .find(|p| placement_name(*p) == name)
}

/// The layout record as a memfd, to store beside the domain's fds.
pub fn layout_memfd(layout: &Layout) -> Result<OwnedFd, std::io::Error> {
    use std::io::Write;
    let text = serde_json::to_string(layout).map_err(std::io::Error::other)?;
    let fd = nix::sys::memfd::memfd_create(
        "vfioctl-domain-layout",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes())?;
    Ok(f.into())
}

/// Reads the layout record from its stored memfd.
pub fn read_layout(domain: &str, fd: OwnedFd) -> Result<Layout, AdoptError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::from(fd);
    let mut text = String::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| AdoptError::BadLayout {
            domain: domain.to_string(),
            why: e.to_string(),
        })?;
    parse_layout(domain, &text)
}

/// Reads a layout record (the JSON text of the stored layout memfd).
pub fn parse_layout(domain: &str, text: &str) -> Result<Layout, AdoptError> {
    let bad = |why: String| AdoptError::BadLayout {
        domain: domain.to_string(),
        why,
    };
    let layout: Layout = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if layout.version != LAYOUT_VERSION {
        return Err(bad(format!(
            "version {} (this vfioctl reads {LAYOUT_VERSION})",
            layout.version
        )));
    }
    if placement_of(&layout.placement).is_none() {
        return Err(bad(format!("unknown placement \"{}\"", layout.placement)));
    }
    Ok(layout)
}

/// Rebuilds a held domain from its stored fds and layout, through the [`Iommu`] seam. Fds the
/// layout does not name are closed. Errors leave nothing held (every fd taken is closed on
/// return).
pub fn adopt<I: Iommu>(
    iommu: &mut I,
    domain: &str,
    layout: &Layout,
    mut stored: Stored,
    report: &mut Report,
) -> Result<HeldDomain<I>, AdoptError> {
    let missing = |what: String| AdoptError::Missing {
        domain: domain.to_string(),
        what,
    };
    let placement = placement_of(&layout.placement).unwrap_or_default();
    let mut held = HeldDomain::on(domain, placement, layout.backend);
    let handle_err = |e: super::iommu::IommuError| AdoptError::Handle {
        domain: domain.to_string(),
        why: e.to_string(),
    };
    let iommufd = match layout.backend {
        Backend::Legacy => None,
        Backend::Iommufd => Some(
            stored
                .iommufd
                .take()
                .ok_or_else(|| missing("the iommufd".to_string()))?,
        ),
    };
    for (i, lc) in layout.containers.iter().enumerate() {
        let mut groups = Vec::new();
        let handle = if let Some(iommufd) = &iommufd {
            let ioas = lc
                .ioas
                .ok_or_else(|| missing(format!("the IOAS id of container {i}")))?;
            for &g in &lc.groups {
                let mut fds = Vec::new();
                for (n, d) in layout
                    .devices
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.group == g)
                {
                    let fd = stored
                        .devices
                        .remove(&n)
                        .ok_or_else(|| missing(format!("device {n} ({})", d.address)))?;
                    fds.push((d.address.clone(), fd));
                }
                let handle = iommu.adopt_devices(g, fds).map_err(handle_err)?;
                groups.push(HeldGroup { id: g, handle });
            }
            let fd = iommufd.try_clone().map_err(|e| AdoptError::Handle {
                domain: domain.to_string(),
                why: format!("dup of the iommufd: {e}"),
            })?;
            iommu.adopt_ioas(fd, ioas).map_err(handle_err)?
        } else {
            let fd = stored
                .containers
                .remove(&i)
                .ok_or_else(|| missing(format!("container {i}")))?;
            for &g in &lc.groups {
                let gfd = stored
                    .groups
                    .remove(&g)
                    .ok_or_else(|| missing(format!("group {g}")))?;
                let handle = iommu.adopt_group(g, gfd).map_err(handle_err)?;
                groups.push(HeldGroup { id: g, handle });
            }
            iommu.adopt_container(fd).map_err(handle_err)?
        };
        held.containers.push(HeldContainer {
            role: lc.role,
            handle,
            groups,
            info: None,
        });
    }
    for (i, lw) in layout.windows.iter().enumerate() {
        let window = Window {
            name: lw.name.clone(),
            iova: lw.iova,
            size: lw.size,
            hugepages: lw.hugepages,
        };
        let fd: OwnedFd = stored
            .windows
            .remove(&i)
            .ok_or_else(|| missing(format!("window {i} ({window})")))?;
        let memory = iommu
            .adopt_memory(fd, &window)
            .map_err(|e| AdoptError::Window {
                domain: domain.to_string(),
                window: window.to_string(),
                why: e.to_string(),
            })?;
        held.windows.push(HeldWindow { window, memory });
    }
    held.refusals = Refusals::default();
    let extra =
        stored.containers.len() + stored.groups.len() + stored.windows.len() + stored.devices.len();
    if extra > 0 {
        report.note(
            domain,
            format!("{extra} stored fd(s) the layout does not name were closed"),
        );
    }
    Ok(held)
}

/// Splits the stored domains into those the config still wants and the others.
pub fn split_wanted(
    stored: BTreeMap<String, Stored>,
    wanted: &[String],
) -> (BTreeMap<String, Stored>, BTreeMap<String, Stored>) {
    stored
        .into_iter()
        .partition(|(name, _)| wanted.contains(name))
}

/// Names of every fd stored for a domain with this layout (what `FDSTOREREMOVE` needs).
pub fn stored_names(domain: &str, layout: &Layout) -> Vec<StoredName> {
    let name = |part| StoredName {
        domain: domain.to_string(),
        part,
    };
    let mut out = vec![name(Part::Layout)];
    match layout.backend {
        Backend::Legacy => {
            for (i, c) in layout.containers.iter().enumerate() {
                out.push(name(Part::Container(i)));
                out.extend(c.groups.iter().map(|&g| name(Part::Group(g))));
            }
        }
        Backend::Iommufd => {
            out.push(name(Part::Iommufd));
            out.extend((0..layout.devices.len()).map(|i| name(Part::Device(i))));
        }
    }
    out.extend((0..layout.windows.len()).map(|i| name(Part::Window(i))));
    out
}

fn all_names(domain: &str, s: &Stored) -> Vec<StoredName> {
    let name = |part| StoredName {
        domain: domain.to_string(),
        part,
    };
    let mut out: Vec<StoredName> = s
        .containers
        .keys()
        .map(|&i| name(Part::Container(i)))
        .collect();
    out.extend(s.groups.keys().map(|&g| name(Part::Group(g))));
    out.extend(s.windows.keys().map(|&i| name(Part::Window(i))));
    out.extend(s.devices.keys().map(|&i| name(Part::Device(i))));
    if s.iommufd.is_some() {
        out.push(name(Part::Iommufd));
    }
    if s.layout.is_some() {
        out.push(name(Part::Layout));
    }
    out
}

/// What a start made of the fds systemd passed back.
#[derive(Debug)]
pub struct Adopted<I: Iommu> {
    pub domains: Vec<HeldDomain<I>>,
    /// Fds passed that are not vfioctl domain fds (closed).
    pub foreign: Vec<String>,
    pub report: Report,
}

/// Adopts the stored domains the config still wants (`wanted`); the others, and those that
/// cannot be adopted, are closed and removed from the store (when given), so their groups
/// are free and the first pass rebuilds what the config asks for.
pub fn adopt_passed<I: Iommu>(
    iommu: &mut I,
    passed: Vec<(OwnedFd, String)>,
    wanted: &[String],
    store: Option<&FdStore>,
) -> Adopted<I> {
    let mut out = Adopted {
        domains: Vec::new(),
        foreign: Vec::new(),
        report: Report::default(),
    };
    let (domains, other) = sort(passed);
    out.foreign = other.into_iter().map(|(_, n)| n).collect();
    let (keep, unwanted) = split_wanted(domains, wanted);
    let mut remove: Vec<StoredName> = Vec::new();
    for (name, stored) in unwanted {
        out.report.note(
            &name,
            "stored by an earlier watch, no longer in the config: closed".to_string(),
        );
        remove.extend(all_names(&name, &stored));
    }
    for (name, mut stored) in keep {
        let names = all_names(&name, &stored);
        let result = stored
            .layout
            .take()
            .ok_or_else(|| AdoptError::NoLayout(name.clone()))
            .and_then(|fd| read_layout(&name, fd))
            .and_then(|layout| adopt(iommu, &name, &layout, stored, &mut out.report));
        match result {
            Ok(held) => {
                out.report.note(
                    &name,
                    format!(
                        "adopted from systemd's fd store: groups {:?}, {} window(s)",
                        held.groups(),
                        held.windows.len()
                    ),
                );
                out.domains.push(held);
            }
            Err(e) => {
                out.report
                    .error(&name, format!("{e}; closed, the domain is rebuilt"));
                remove.extend(names);
            }
        }
    }
    if let Some(store) = store {
        if let Err(e) = store.remove(&remove) {
            out.report
                .error("fd store", format!("cannot remove stale fds: {e}"));
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::iommu::Backing;
    use crate::domain::linux::LinuxIommu;
    use crate::domain::memory::WindowMemory;
    use crate::domain::DesiredDomain;
    use crate::host::Roots;
    use std::path::Path;

    fn window(name: &str, iova: u64) -> Window {
        Window {
            name: name.into(),
            iova,
            size: 64 << 10,
            hugepages: false,
        }
    }

    fn fake_fd() -> OwnedFd {
        tempfile::tempfile().unwrap().into()
    }

    /// A domain as systemd would hand it back: one shared container with groups 5 and 7,
    /// windows `a` and `b` whose memfds hold data written before the "restart".
    fn stored_domain() -> (Layout, Stored) {
        let layout = Layout {
            version: LAYOUT_VERSION,
            placement: "shared".into(),
            backend: crate::plan::backend::Backend::Legacy,
            devices: vec![],
            containers: vec![LayoutContainer {
                role: Role::Shared,
                groups: vec![5, 7],
                ioas: None,
            }],
            windows: [window("a", 1 << 20), window("b", 4 << 20)]
                .iter()
                .map(|w| LayoutWindow {
                    name: w.name.clone(),
                    iova: w.iova,
                    size: w.size,
                    hugepages: w.hugepages,
                })
                .collect(),
        };
        let mut stored = Stored::default();
        stored.containers.insert(0, fake_fd());
        stored.groups.insert(5, fake_fd());
        stored.groups.insert(7, fake_fd());
        for (i, lw) in layout.windows.iter().enumerate() {
            let w = window(&lw.name, lw.iova);
            let mem = WindowMemory::allocate(&w, Path::new("/nonexistent")).unwrap();
            let fd = mem.fd().try_clone_to_owned().unwrap();
            let mut f = std::fs::File::from(fd.try_clone().unwrap());
            std::io::Write::write_all(&mut f, lw.name.as_bytes()).unwrap();
            stored.windows.insert(i, fd);
        }
        let fd = layout_memfd(&layout).unwrap();
        stored.layout = Some(fd);
        (layout, stored)
    }

    #[test]
    fn a_stored_domain_is_adopted_and_only_what_differs_changes() {
        let (layout, mut stored) = stored_domain();
        let read = read_layout("dma", stored.layout.take().unwrap()).unwrap();
        assert_eq!(read, layout);
        let mut report = Report::default();
        stored.groups.insert(9, fake_fd());
        let held = adopt(
            &mut LinuxIommu::new(Roots::default()),
            "dma",
            &read,
            stored,
            &mut report,
        )
        .unwrap();
        assert_eq!(held.groups(), [5, 7]);
        assert_eq!(held.containers[0].role, Role::Shared);
        assert_eq!(held.windows.len(), 2);
        // The window memory is the memory written before the restart.
        for w in &held.windows {
            // SAFETY: nothing else writes it in this test.
            let bytes = unsafe { w.memory.as_slice() };
            assert_eq!(&bytes[..w.window.name.len()], w.window.name.as_bytes());
            assert_eq!(w.memory.len(), w.window.size);
        }
        assert!(
            format!("{report:?}").contains("1 stored fd(s)"),
            "{report:?}"
        );
        // The config keeps `a`, moves `b`, adds `c`: only `b` and `c` change.
        let want = DesiredDomain {
            name: "dma".into(),
            placement: Placement::Shared,
            groups: vec![5, 7],
            windows: vec![
                window("a", 1 << 20),
                window("b", 8 << 20),
                window("c", 16 << 20),
            ],
            reserved: vec![],
            pending: vec![],
            backend: crate::plan::backend::Resolved {
                backend: Backend::Legacy,
                why: "set in the config".into(),
            },
            cdevs: Default::default(),
        };
        let changes = crate::domain::windows::diff(&want.windows, &held.held_windows());
        let names: Vec<&str> = changes.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), 2, "{changes:?}");
        assert!(names.contains(&"b") && names.contains(&"c"), "{changes:?}");
    }

    #[test]
    fn missing_fds_and_bad_records_are_refused() {
        let (layout, mut stored) = stored_domain();
        stored.groups.remove(&7);
        let mut report = Report::default();
        let err = adopt(
            &mut LinuxIommu::new(Roots::default()),
            "dma",
            &layout,
            stored,
            &mut report,
        )
        .unwrap_err();
        assert!(err.to_string().contains("group 7"), "{err}");
        assert!(parse_layout("dma", "{").is_err());
        let other = serde_json::to_string(&Layout {
            version: 2,
            ..layout.clone()
        })
        .unwrap();
        let err = parse_layout("dma", &other).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let (keep, drop) = split_wanted(
            [
                ("dma".to_string(), Stored::default()),
                ("old".into(), Stored::default()),
            ]
            .into_iter()
            .collect(),
            &["dma".to_string()],
        );
        assert_eq!(keep.keys().collect::<Vec<_>>(), ["dma"]);
        assert_eq!(drop.keys().collect::<Vec<_>>(), ["old"]);
    }
}
