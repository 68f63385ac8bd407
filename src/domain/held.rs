//! The domains `watch` holds: per domain its containers (with their role), the group fds in
//! each, and the windows mapped identically in every container with the memory backing them.
//! Reconciling one domain against its desired form runs through the [`Iommu`] seam in a fixed
//! order: release groups that left, place new ones (mirroring refused ones), then unmap every
//! removed or resized window before mapping the new ranges.
//!
//! Invariant: every container of a domain maps every held window.
//!
//! On the iommufd backend a container is an IOAS (all of a domain's IOASes in one iommufd) and
//! a group is its member devices' cdevs, bound and attached when the group is placed; a group
//! whose members (or their cdevs) changed is released and placed again.

use std::os::fd::{AsFd, BorrowedFd};

use super::iommu::{AttachError, Backing, Cdev, ContainerHandle, GroupHandle, Iommu};
use super::placement::{self, Refusals, Role, Target};
use super::report::{Action, Report};
use super::windows::{self, GroupReserved, Window, WindowChange, WindowError};
use super::DesiredDomain;
use crate::config::model::Placement;
use crate::plan::backend::Backend;
use crate::vfio::dma::map_errno_meaning;
use crate::vfio::iommu_info::IommuInfo;

/// An open group inside a container.
#[derive(Debug)]
pub struct HeldGroup<I: Iommu> {
    pub id: u32,
    pub handle: I::Group,
}

/// One container of a held domain.
#[derive(Debug)]
pub struct HeldContainer<I: Iommu> {
    pub role: Role,
    pub handle: I::Container,
    pub groups: Vec<HeldGroup<I>>,
    /// The last `VFIO_IOMMU_GET_INFO`, refreshed after every change.
    pub info: Option<IommuInfo>,
}

impl<I: Iommu> HeldContainer<I> {
    pub fn group_ids(&self) -> Vec<u32> {
        self.groups.iter().map(|g| g.id).collect()
    }

    /// The IOAS id (iommufd), `None` on legacy.
    pub fn ioas(&self) -> Option<u32> {
        self.handle.ioas()
    }
}

/// A window mapped in every container of its domain, with its backing memory.
#[derive(Debug)]
pub struct HeldWindow<I: Iommu> {
    pub window: Window,
    pub memory: I::Memory,
}

/// A held domain.
#[derive(Debug)]
pub struct HeldDomain<I: Iommu> {
    pub name: String,
    pub placement: Placement,
    /// The kernel interface it is held through.
    pub backend: Backend,
    /// Why that backend (`auto: /dev/iommu present, ...`), as of the last pass.
    pub backend_why: String,
    pub containers: Vec<HeldContainer<I>>,
    pub windows: Vec<HeldWindow<I>>,
    /// Group pairs the kernel refused to share a container; kept while the domain lives.
    pub refusals: Refusals,
}

/// The window changes a pass will make, after the checks.
#[derive(Debug, Default)]
pub struct WindowPlan {
    pub accepted: Vec<WindowChange>,
    pub refused: Vec<WindowError>,
}

impl WindowPlan {
    /// Bytes per container the domain holds once this plan ran.
    pub fn bytes_after(&self, held: &[Window]) -> u64 {
        let mut total: u64 = held.iter().map(|w| w.size).sum();
        for c in &self.accepted {
            match c {
                WindowChange::Add { window } => total += window.size,
                WindowChange::Remove { window } => total -= window.size.min(total),
                WindowChange::Resize { from, to } => {
                    total = total - from.size.min(total) + to.size;
                }
            }
        }
        total
    }

    /// Drops every change that needs more pinned memory (adds, and resizes that grow).
    pub fn drop_growth(&mut self) -> Vec<WindowChange> {
        let (keep, dropped) =
            std::mem::take(&mut self.accepted)
                .into_iter()
                .partition(|c| match c {
                    WindowChange::Add { .. } => false,
                    WindowChange::Remove { .. } => true,
                    WindowChange::Resize { from, to } => to.size <= from.size,
                });
        self.accepted = keep;
        dropped
    }
}

/// The file descriptors a held domain owns, for the fd broker and systemd's fd store:
/// containers, group nodes, and each window's memory file.
#[derive(Debug)]
pub struct DomainFds<'a> {
    pub backend: Backend,
    /// Legacy: each container's fd. iommufd: the iommufd's fd once per IOAS (the same
    /// iommufd; [`DomainFds::ioas`] has the ids).
    pub containers: Vec<BorrowedFd<'a>>,
    /// The IOAS id of each container (iommufd); empty on legacy.
    pub ioas: Vec<u32>,
    /// (group id, its `/dev/vfio/N` fd, the index of its container); legacy only.
    pub groups: Vec<(u32, BorrowedFd<'a>, usize)>,
    /// (group id, PCI address, its bound and attached cdev fd, the index of its container);
    /// iommufd only.
    pub devices: Vec<(u32, &'a str, BorrowedFd<'a>, usize)>,
    /// (window, its memory's fd).
    pub windows: Vec<(&'a Window, BorrowedFd<'a>)>,
}

impl<I: Iommu> HeldDomain<I> {
    /// Borrows every fd the domain holds (the fd view the broker's offers are built from).
    pub fn fds(&self) -> DomainFds<'_> {
        DomainFds {
            backend: self.backend,
            containers: self.containers.iter().map(|c| c.handle.as_fd()).collect(),
            ioas: self.containers.iter().filter_map(|c| c.ioas()).collect(),
            groups: self
                .containers
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    c.groups
                        .iter()
                        .filter_map(move |g| g.handle.node().map(|fd| (g.id, fd, i)))
                })
                .collect(),
            devices: self
                .containers
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    c.groups.iter().flat_map(move |g| {
                        g.handle
                            .devices()
                            .into_iter()
                            .map(move |(a, fd)| (g.id, a, fd, i))
                    })
                })
                .collect(),
            windows: self
                .windows
                .iter()
                .map(|w| (&w.window, w.memory.fd()))
                .collect(),
        }
    }
}

impl<I: Iommu> HeldDomain<I> {
    pub fn new(name: &str, placement: Placement) -> Self {
        Self::on(name, placement, Backend::Legacy)
    }

    /// A new, empty domain held through `backend`.
    pub fn on(name: &str, placement: Placement, backend: Backend) -> Self {
        HeldDomain {
            name: name.to_string(),
            placement,
            backend,
            backend_why: String::new(),
            containers: Vec::new(),
            windows: Vec::new(),
            refusals: Refusals::default(),
        }
    }

    /// Member groups, ascending.
    pub fn groups(&self) -> Vec<u32> {
        let mut g: Vec<u32> = self.containers.iter().flat_map(|c| c.group_ids()).collect();
        g.sort_unstable();
        g
    }

    pub fn held_windows(&self) -> Vec<Window> {
        self.windows.iter().map(|w| w.window.clone()).collect()
    }

    /// Bytes pinned: every window once per container.
    pub fn pinned_bytes(&self) -> u64 {
        let per: u64 = self.windows.iter().map(|w| w.window.size).sum();
        per * self.containers.len() as u64
    }

    /// First phase: make the container layout match the desired member groups.
    pub fn reconcile_groups(&mut self, iommu: &mut I, want: &DesiredDomain, report: &mut Report) {
        let keep = self.kept_groups(want);
        self.release_departed(iommu, &keep, report);
        let held = self.groups();
        for &g in want.groups.iter().filter(|g| !held.contains(g)) {
            let cdevs = want.cdevs.get(&g).map_or(&[][..], Vec::as_slice);
            self.add_group(iommu, g, cdevs, report);
        }
        self.refresh_info(iommu, report);
    }

    /// The held groups that stay as they are: those still wanted, except (iommufd) groups whose
    /// member functions changed, which are released and placed again with the new ones (a
    /// function that left the domain must not stay open: its unbind would wait for the fd).
    pub fn kept_groups(&self, want: &DesiredDomain) -> Vec<u32> {
        want.groups
            .iter()
            .copied()
            .filter(|g| !self.members_changed(*g, want.cdevs.get(g)))
            .collect()
    }

    /// Whether held group `g`'s devices differ from the desired cdevs (iommufd only).
    fn members_changed(&self, g: u32, want: Option<&Vec<Cdev>>) -> bool {
        if self.backend != Backend::Iommufd {
            return false;
        }
        let Some(held) = self
            .containers
            .iter()
            .flat_map(|c| &c.groups)
            .find(|h| h.id == g)
        else {
            return false;
        };
        let mut have: Vec<&str> = held.handle.devices().into_iter().map(|(a, _)| a).collect();
        have.sort_unstable();
        let want: Vec<&str> = want
            .map(|v| v.iter().map(|c| c.address.as_str()).collect())
            .unwrap_or_default();
        have != want
    }

    /// Releases the groups not in `keep` (devices that left the domain), closing containers
    /// left empty. `watch` runs this before a pass may give those devices back to the host.
    pub fn release_departed(&mut self, iommu: &mut I, keep: &[u32], report: &mut Report) {
        for c in &mut self.containers {
            let (stay, leave): (Vec<_>, Vec<_>) = std::mem::take(&mut c.groups)
                .into_iter()
                .partition(|g| keep.contains(&g.id));
            c.groups = stay;
            for g in leave {
                report.event(&self.name, Action::ReleaseGroup, format!("group {}", g.id));
                iommu.release_group(Some(&mut c.handle), g.handle);
            }
        }
        self.close_empty_containers(iommu, report);
    }

    fn close_empty_containers(&mut self, iommu: &mut I, report: &mut Report) {
        let mut kept = Vec::new();
        for (i, c) in std::mem::take(&mut self.containers).into_iter().enumerate() {
            if c.groups.is_empty() {
                report.event(&self.name, Action::CloseContainer, format!("container {i}"));
                iommu.release_container(c.handle);
            } else {
                kept.push(c);
            }
        }
        self.containers = kept;
        if self.containers.is_empty() {
            // Without a container nothing is mapped any more.
            self.windows.clear();
        }
    }

    fn add_group(&mut self, iommu: &mut I, id: u32, cdevs: &[Cdev], report: &mut Report) {
        let opened = match self.backend {
            Backend::Legacy => iommu.open_group(id),
            Backend::Iommufd => iommu.open_devices(id, cdevs),
        };
        let handle = match opened {
            Ok(h) => h,
            Err(e) => {
                report.error(&self.name, format!("group {id} cannot be held: {e}"));
                return;
            }
        };
        // Each refusal adds pairs, so this ends after at most one try per container.
        loop {
            let layout: Vec<Vec<u32>> = self.containers.iter().map(|c| c.group_ids()).collect();
            match placement::choose(self.placement, id, &layout, &self.refusals) {
                Target::Existing(i) => {
                    let c = &mut self.containers[i];
                    match iommu.attach(&mut c.handle, &handle, false) {
                        Ok(()) => {
                            c.groups.push(HeldGroup { id, handle });
                            report.event(
                                &self.name,
                                Action::AttachGroup,
                                format!("group {id} -> container {i} ({})", c.role),
                            );
                            return;
                        }
                        Err(AttachError::Refused(e)) => {
                            report.note(
                                &self.name,
                                format!("the kernel refused group {id} in container {i} ({e}); mirroring"),
                            );
                            self.refusals.record(id, &layout[i]);
                        }
                        Err(AttachError::Failed(e)) => {
                            report.error(&self.name, format!("group {id} cannot be held: {e}"));
                            iommu.release_group(None, handle);
                            return;
                        }
                    }
                }
                Target::New(role) => {
                    self.add_container(iommu, id, handle, role, report);
                    return;
                }
            }
        }
    }

    /// Builds a new container around one group and maps every held window into it.
    fn add_container(
        &mut self,
        iommu: &mut I,
        id: u32,
        group: I::Group,
        role: Role,
        report: &mut Report,
    ) {
        let created = match self.backend {
            Backend::Legacy => iommu.new_container(),
            Backend::Iommufd => iommu.new_ioas(self.containers.first().map(|c| &c.handle)),
        };
        let mut handle = match created {
            Ok(h) => h,
            Err(e) => {
                report.error(&self.name, format!("group {id}: no container: {e}"));
                iommu.release_group(None, group);
                return;
            }
        };
        if let Err(AttachError::Refused(e) | AttachError::Failed(e)) =
            iommu.attach(&mut handle, &group, true)
        {
            report.error(&self.name, format!("group {id} cannot be held: {e}"));
            iommu.release_group(None, group);
            iommu.release_container(handle);
            return;
        }
        let mut mapped: Vec<&Window> = Vec::new();
        for w in &self.windows {
            if let Err(e) = iommu.map(&mut handle, &w.window, &w.memory) {
                report.error(
                    &self.name,
                    format!(
                        "group {id}: cannot mirror {} into a new container: {e} ({})",
                        w.window,
                        map_errno_meaning(e.errno)
                    ),
                );
                for m in mapped {
                    let _ = iommu.unmap(&mut handle, m);
                }
                iommu.release_group(Some(&mut handle), group);
                iommu.release_container(handle);
                return;
            }
            mapped.push(&w.window);
        }
        let index = self.containers.len();
        let action = if role == Role::Mirror {
            Action::MirrorGroup
        } else {
            Action::AttachGroup
        };
        report.event(
            &self.name,
            action,
            format!("group {id} -> new container {index} ({role})"),
        );
        self.containers.push(HeldContainer {
            role,
            handle,
            groups: vec![HeldGroup { id, handle: group }],
            info: None,
        });
    }

    fn refresh_info(&mut self, iommu: &mut I, report: &mut Report) {
        for (i, c) in self.containers.iter_mut().enumerate() {
            match iommu.info(&c.handle) {
                Ok(info) => c.info = Some(info),
                Err(e) => {
                    c.info = None;
                    report.error(&self.name, format!("container {i}: {e}"));
                }
            }
        }
    }

    /// Second phase, pure: the window changes, checked against every container's live info
    /// and the members' reserved regions. Changes of refused windows are left out.
    pub fn plan_windows(&self, want: &DesiredDomain) -> WindowPlan {
        let changes = windows::diff(&want.windows, &self.held_windows());
        if self.containers.is_empty() {
            // Nothing to map into yet; say nothing, the group errors already do.
            return WindowPlan::default();
        }
        let to_map: Vec<Window> = changes
            .iter()
            .filter_map(|c| match c {
                WindowChange::Add { window } | WindowChange::Resize { to: window, .. } => {
                    Some(window.clone())
                }
                WindowChange::Remove { .. } => None,
            })
            .collect();
        let freed = changes
            .iter()
            .filter(|c| !matches!(c, WindowChange::Add { .. }))
            .count() as u32;
        let reserved: Vec<GroupReserved> = want
            .reserved
            .iter()
            .filter(|r| self.groups().contains(&r.group))
            .cloned()
            .collect();
        let mut refused: Vec<WindowError> = Vec::new();
        for c in &self.containers {
            let info = c.info.clone().unwrap_or_default();
            for e in windows::check(&to_map, &want.windows, &info, &reserved, freed) {
                if !refused.contains(&e) {
                    refused.push(e);
                }
            }
        }
        let bad = |name: &str| refused.iter().any(|e| e.window().name == name);
        let accepted = changes
            .into_iter()
            .filter(|c| matches!(c, WindowChange::Remove { .. }) || !bad(c.name()))
            .collect();
        WindowPlan { accepted, refused }
    }

    /// Runs a window plan: every unmap first, then every map, each in all containers.
    pub fn apply_windows(&mut self, iommu: &mut I, plan: &WindowPlan, report: &mut Report) {
        for e in &plan.refused {
            report.error(&self.name, e.to_string());
        }
        let resized: Vec<&str> = plan
            .accepted
            .iter()
            .filter(|c| matches!(c, WindowChange::Resize { .. }))
            .map(|c| c.name())
            .collect();
        for step in windows::steps(&plan.accepted) {
            match step {
                windows::WindowStep::Unmap(w) => {
                    let announce = !resized.contains(&w.name.as_str());
                    self.unmap_window(iommu, &w, announce, report);
                }
                windows::WindowStep::Map(w) => {
                    let announce = !resized.contains(&w.name.as_str());
                    self.map_window(iommu, &w, announce, report);
                }
            }
        }
        for c in &plan.accepted {
            if let WindowChange::Resize { to, .. } = c {
                if self.windows.iter().any(|h| h.window == *to) {
                    report.event(&self.name, Action::ResizeWindow, c.to_string());
                }
            }
        }
        self.refresh_info(iommu, report);
    }

    fn unmap_window(&mut self, iommu: &mut I, w: &Window, announce: bool, report: &mut Report) {
        let Some(pos) = self.windows.iter().position(|h| h.window == *w) else {
            return;
        };
        let mut ok = true;
        for (i, c) in self.containers.iter_mut().enumerate() {
            if let Err(e) = iommu.unmap(&mut c.handle, w) {
                ok = false;
                report.error(&self.name, format!("{w}: container {i}: {e}"));
            }
        }
        if ok {
            self.windows.remove(pos);
            if announce {
                report.event(&self.name, Action::UnmapWindow, w.to_string());
            }
        }
    }

    fn map_window(&mut self, iommu: &mut I, w: &Window, announce: bool, report: &mut Report) {
        if self.windows.iter().any(|h| h.window.name == w.name) {
            // Its old range could not be unmapped (reported above); mapping the new one now
            // would overlap it. The next pass tries again.
            report.error(
                &self.name,
                format!("{w}: not mapped: its old range is still mapped"),
            );
            return;
        }
        let memory = match iommu.allocate(w) {
            Ok(m) => m,
            Err(e) => {
                report.error(&self.name, format!("{w}: no backing memory: {e}"));
                return;
            }
        };
        if let Some(why) = memory.fallback() {
            report.note(&self.name, format!("{w}: not on huge pages: {why}"));
        }
        for i in 0..self.containers.len() {
            if let Err(e) = iommu.map(&mut self.containers[i].handle, w, &memory) {
                report.error(
                    &self.name,
                    format!("{w}: container {i}: {e}: {}", map_errno_meaning(e.errno)),
                );
                for c in &mut self.containers[..i] {
                    let _ = iommu.unmap(&mut c.handle, w);
                }
                return;
            }
        }
        if announce {
            report.event(&self.name, Action::MapWindow, w.to_string());
        }
        self.windows.push(HeldWindow {
            window: w.clone(),
            memory,
        });
    }

    /// Releases everything: groups first (the last detach drops the mappings), then the
    /// containers, then the window memory.
    pub fn teardown(mut self, iommu: &mut I, report: &mut Report) {
        for mut c in std::mem::take(&mut self.containers) {
            for g in std::mem::take(&mut c.groups) {
                iommu.release_group(Some(&mut c.handle), g.handle);
            }
            iommu.release_container(c.handle);
        }
        self.windows.clear();
        report.event(&self.name, Action::DestroyDomain, String::new());
    }
}
