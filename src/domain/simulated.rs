//! A simulated type1 IOMMU behind the [`Iommu`] seam, for tests and dry runs: group nodes that
//! are busy while open, containers that refuse groups behind a different IOMMU unit, usable
//! IOVA ranges with the members' reserved regions cut out, EEXIST on overlapping maps, EINVAL
//! outside the ranges, a DMA entry limit, and locked-memory accounting per container as
//! `vfio_iommu_type1` does it (a page mapped in two containers counts twice).
//!
//! It records every call (`log`) and can be told to fail one operation (`fail_next`). Its
//! handles are real fds (small memfds holding the id they stand for), so the fd broker and
//! systemd's fd store handle them like the kernel's, and adoption reads the id back.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::iommu::{AttachError, Backing, Iommu, IommuError, Memlock};
use super::windows::Window;
use crate::host::snapshot::ReservedRegion;
use crate::vfio::iommu_info::{IommuInfo, IovaRange};

/// Page sizes the simulated IOMMU supports: 4 KiB, 2 MiB, 1 GiB.
pub const SIM_PAGE_SIZES: u64 = (1 << 12) | (1 << 21) | (1 << 30);
/// Last usable IOVA (a 39-bit address width, like QEMU's vIOMMU).
pub const SIM_IOVA_END: u64 = (1 << 39) - 1;

/// A group the simulated host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    /// The IOMMU unit it sits behind; groups of different units refuse to share a container.
    pub unit: String,
    pub viable: bool,
    pub reserved: Vec<ReservedRegion>,
    /// Another process holds the node open.
    pub held_elsewhere: bool,
}

/// One simulated container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimContainer {
    pub groups: Vec<u32>,
    pub iommu_set: bool,
    /// iova -> size.
    pub mappings: BTreeMap<u64, u64>,
}

impl SimContainer {
    pub fn pinned(&self) -> u64 {
        self.mappings.values().sum()
    }
}

/// Window memory in the simulation: a made-up address and a length, and a token fd naming the
/// address.
#[derive(Debug)]
pub struct SimMemory {
    pub addr: u64,
    pub len: u64,
    pub huge: bool,
    pub fd: OwnedFd,
}

/// A memfd holding `id`: what a simulated handle's fd is.
fn token(what: &str, id: u64) -> Result<OwnedFd, Errno> {
    let fd = nix::sys::memfd::memfd_create(
        format!("vfioctl-sim-{what}").as_str(),
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    nix::sys::uio::pwrite(&fd, &id.to_le_bytes(), 0)?;
    Ok(fd)
}

/// The id a token fd holds.
fn token_id(fd: &OwnedFd) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    match nix::sys::uio::pread(fd, &mut b, 0)? {
        8 => Ok(u64::from_le_bytes(b)),
        _ => Err(Errno::EBADF),
    }
}

impl Backing for SimMemory {
    fn addr(&self) -> u64 {
        self.addr
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn huge(&self) -> bool {
        self.huge
    }
    fn fallback(&self) -> Option<&str> {
        None
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The simulated kernel.
#[derive(Debug, Clone)]
pub struct SimIommu {
    pub groups: BTreeMap<u32, SimGroup>,
    /// Groups open through this seam.
    pub open: BTreeSet<u32>,
    /// Container slots; `None` once closed.
    pub containers: Vec<Option<SimContainer>>,
    /// `dma_entry_limit` per container.
    pub dma_entry_limit: u32,
    /// RLIMIT_MEMLOCK soft and hard limits.
    pub memlock_soft: u64,
    pub memlock_hard: u64,
    /// Whether the hard limit may be raised (CAP_SYS_RESOURCE).
    pub may_raise_hard: bool,
    /// Free huge pages of 2 MiB.
    pub free_huge_pages: u64,
    /// The host's memory (`MemTotal`); `None`: unknown.
    pub mem_total: Option<u64>,
    /// Every call, in order, as text (`attach 5 -> c0`, `map c0 0x0+0x200000`).
    pub log: Vec<String>,
    /// One-shot failures: operation name (`open`, `container`, `attach`, `map`, `unmap`,
    /// `allocate`, `info`) -> errno.
    pub fail_next: BTreeMap<&'static str, Errno>,
    next_addr: u64,
}

impl Default for SimIommu {
    fn default() -> Self {
        SimIommu {
            groups: BTreeMap::new(),
            open: BTreeSet::new(),
            containers: Vec::new(),
            dma_entry_limit: 65535,
            memlock_soft: 8 << 20,
            memlock_hard: 8 << 20,
            may_raise_hard: true,
            free_huge_pages: 0,
            mem_total: Some(64 << 30),
            log: Vec::new(),
            fail_next: BTreeMap::new(),
            next_addr: 0x7f00_0000_0000,
        }
    }
}

/// The MSI window every group in the VM reports.
pub fn msi_region() -> ReservedRegion {
    ReservedRegion {
        start: 0xfee0_0000,
        end: 0xfeef_ffff,
        kind: "msi".into(),
    }
}

impl SimIommu {
    /// A host with these groups, each `(id, unit)`, viable, with the MSI reserved region.
    pub fn with_groups(groups: &[(u32, &str)]) -> Self {
        let mut s = SimIommu::default();
        for &(id, unit) in groups {
            s.groups.insert(
                id,
                SimGroup {
                    unit: unit.to_string(),
                    viable: true,
                    reserved: vec![msi_region()],
                    held_elsewhere: false,
                },
            );
        }
        s
    }

    /// Open containers, in creation order.
    pub fn live_containers(&self) -> Vec<&SimContainer> {
        self.containers.iter().flatten().collect()
    }

    /// Bytes pinned across all containers (what `VmLck` would show).
    pub fn pinned(&self) -> u64 {
        self.live_containers().iter().map(|c| c.pinned()).sum()
    }

    fn fail(&mut self, op: &'static str) -> Option<Errno> {
        self.fail_next.remove(op)
    }

    fn container_mut(&mut self, id: usize) -> Result<&mut SimContainer, Errno> {
        self.containers
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)
    }

    /// The usable IOVA ranges of a container: the address width minus its groups' reserved
    /// regions, as type1 computes them.
    pub fn iova_ranges(&self, id: usize) -> Vec<IovaRange> {
        let mut ranges = vec![IovaRange {
            start: 0,
            end: SIM_IOVA_END,
        }];
        let Some(Some(c)) = self.containers.get(id) else {
            return ranges;
        };
        for g in &c.groups {
            for r in self.groups.get(g).map(|g| &g.reserved[..]).unwrap_or(&[]) {
                let mut next = Vec::new();
                for x in ranges {
                    if r.end < x.start || r.start > x.end {
                        next.push(x);
                        continue;
                    }
                    if r.start > x.start {
                        next.push(IovaRange {
                            start: x.start,
                            end: r.start - 1,
                        });
                    }
                    if r.end < x.end {
                        next.push(IovaRange {
                            start: r.end + 1,
                            end: x.end,
                        });
                    }
                }
                ranges = next;
            }
        }
        ranges
    }
}

/// A simulated container handle: its slot, and a token fd naming it.
#[derive(Debug)]
pub struct SimContainerId(pub usize, pub OwnedFd);

/// A simulated group handle: the group, and a token fd naming it.
#[derive(Debug)]
pub struct SimGroupId(pub u32, pub OwnedFd);

impl PartialEq for SimContainerId {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl PartialEq for SimGroupId {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl AsFd for SimContainerId {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.1.as_fd()
    }
}

impl AsFd for SimGroupId {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.1.as_fd()
    }
}

impl Iommu for SimIommu {
    type Container = SimContainerId;
    type Group = SimGroupId;
    type Memory = SimMemory;

    fn open_group(&mut self, group: u32) -> Result<SimGroupId, IommuError> {
        let what = format!("open /dev/vfio/{group}");
        if let Some(e) = self.fail("open") {
            return Err(IommuError::new(what, e));
        }
        let Some(g) = self.groups.get(&group) else {
            return Err(IommuError::new(what, Errno::ENOENT));
        };
        if g.held_elsewhere || self.open.contains(&group) {
            return Err(
                IommuError::new(what, Errno::EBUSY).with_detail("another process holds the group")
            );
        }
        if !g.viable {
            return Err(IommuError::new("VFIO_GROUP_GET_STATUS", Errno::EPERM)
                .with_detail(format!("group {group} is not viable")));
        }
        let fd = token("group", group.into()).map_err(|e| IommuError::new(what, e))?;
        self.open.insert(group);
        self.log.push(format!("open {group}"));
        Ok(SimGroupId(group, fd))
    }

    fn new_container(&mut self) -> Result<SimContainerId, IommuError> {
        if let Some(e) = self.fail("container") {
            return Err(IommuError::new("open /dev/vfio/vfio", e));
        }
        let id = self.containers.len();
        let fd =
            token("container", id as u64).map_err(|e| IommuError::new("open /dev/vfio/vfio", e))?;
        self.containers.push(Some(SimContainer::default()));
        self.log.push(format!("container c{id}"));
        Ok(SimContainerId(id, fd))
    }

    fn attach(
        &mut self,
        container: &mut SimContainerId,
        group: &SimGroupId,
        first: bool,
    ) -> Result<(), AttachError> {
        let what = "VFIO_GROUP_SET_CONTAINER";
        if let Some(e) = self.fail("attach") {
            return Err(AttachError::Failed(IommuError::new(what, e)));
        }
        let unit = self.groups.get(&group.0).map(|g| g.unit.clone());
        let members: Vec<u32> = self
            .container_mut(container.0)
            .map_err(|e| AttachError::Failed(IommuError::new(what, e)))?
            .groups
            .clone();
        let other_unit = members
            .iter()
            .filter_map(|m| self.groups.get(m))
            .any(|m| Some(&m.unit) != unit.as_ref());
        if other_unit {
            self.log
                .push(format!("refuse {} -> c{}", group.0, container.0));
            return Err(AttachError::Refused(
                IommuError::new(what, Errno::EINVAL)
                    .with_detail("the group sits behind a different IOMMU"),
            ));
        }
        let c = self
            .container_mut(container.0)
            .map_err(|e| AttachError::Failed(IommuError::new(what, e)))?;
        c.groups.push(group.0);
        if first {
            c.iommu_set = true;
        }
        self.log
            .push(format!("attach {} -> c{}", group.0, container.0));
        Ok(())
    }

    fn release_group(&mut self, container: Option<&mut SimContainerId>, group: SimGroupId) {
        if let Some(Ok(c)) = container.map(|c| self.container_mut(c.0)) {
            c.groups.retain(|g| *g != group.0);
            if c.groups.is_empty() {
                c.mappings.clear();
                c.iommu_set = false;
            }
        }
        self.open.remove(&group.0);
        self.log.push(format!("release {}", group.0));
    }

    fn release_container(&mut self, container: SimContainerId) {
        if let Some(slot) = self.containers.get_mut(container.0) {
            if let Some(c) = slot.take() {
                for g in c.groups {
                    self.open.remove(&g);
                }
            }
        }
        self.log.push(format!("close c{}", container.0));
    }

    fn info(&mut self, container: &SimContainerId) -> Result<IommuInfo, IommuError> {
        if let Some(e) = self.fail("info") {
            return Err(IommuError::new("VFIO_IOMMU_GET_INFO", e));
        }
        let limit = self.dma_entry_limit;
        let c = self
            .container_mut(container.0)
            .map_err(|e| IommuError::new("VFIO_IOMMU_GET_INFO", e))?;
        if !c.iommu_set {
            return Err(IommuError::new("VFIO_IOMMU_GET_INFO", Errno::EINVAL));
        }
        let used = c.mappings.len() as u32;
        Ok(IommuInfo {
            page_sizes: SIM_PAGE_SIZES,
            iova_ranges: Some(self.iova_ranges(container.0)),
            dma_avail: Some(limit.saturating_sub(used)),
        })
    }

    fn allocate(&mut self, window: &Window) -> Result<SimMemory, IommuError> {
        if let Some(e) = self.fail("allocate") {
            return Err(IommuError::new("memfd_create", e));
        }
        let pages = window.size.div_ceil(2 << 20);
        let huge = window.hugepages && self.free_huge_pages >= pages;
        if huge {
            self.free_huge_pages -= pages;
        }
        let fd = token("window", self.next_addr).map_err(|e| IommuError::new("memfd_create", e))?;
        let m = SimMemory {
            addr: self.next_addr,
            len: window.size,
            huge,
            fd,
        };
        self.next_addr += window.size.next_multiple_of(1 << 30);
        Ok(m)
    }

    fn map(
        &mut self,
        container: &mut SimContainerId,
        window: &Window,
        memory: &SimMemory,
    ) -> Result<(), IommuError> {
        let what = "VFIO_IOMMU_MAP_DMA";
        if let Some(e) = self.fail("map") {
            return Err(IommuError::new(what, e));
        }
        let ranges = self.iova_ranges(container.0);
        let soft = self.memlock_soft;
        let pinned = self.pinned();
        let limit = self.dma_entry_limit as usize;
        let c = self
            .container_mut(container.0)
            .map_err(|e| IommuError::new(what, e))?;
        let (iova, size) = (window.iova, window.size);
        if size == 0 || iova % 4096 != 0 || size % 4096 != 0 || memory.len < size {
            return Err(IommuError::new(what, Errno::EINVAL));
        }
        if !ranges.iter().any(|r| r.contains(iova, size)) {
            return Err(IommuError::new(what, Errno::EINVAL));
        }
        let end = iova.saturating_add(size);
        if c.mappings
            .iter()
            .any(|(&s, &l)| s < end && iova < s.saturating_add(l))
        {
            return Err(IommuError::new(what, Errno::EEXIST));
        }
        if c.mappings.len() >= limit {
            return Err(IommuError::new(what, Errno::ENOSPC));
        }
        if pinned.saturating_add(size) > soft {
            return Err(IommuError::new(what, Errno::ENOMEM));
        }
        c.mappings.insert(iova, size);
        self.log
            .push(format!("map c{} {:#x}+{:#x}", container.0, iova, size));
        Ok(())
    }

    fn unmap(&mut self, container: &mut SimContainerId, window: &Window) -> Result<(), IommuError> {
        let what = "VFIO_IOMMU_UNMAP_DMA";
        if let Some(e) = self.fail("unmap") {
            return Err(IommuError::new(what, e));
        }
        let c = self
            .container_mut(container.0)
            .map_err(|e| IommuError::new(what, e))?;
        let (iova, end) = (window.iova, window.end());
        let hit: Vec<(u64, u64)> = c
            .mappings
            .iter()
            .filter(|(&s, &l)| s < end && iova < s.saturating_add(l))
            .map(|(&s, &l)| (s, l))
            .collect();
        // type1v2 refuses to split a mapping.
        if hit.iter().any(|&(s, l)| s < iova || s + l > end) {
            return Err(IommuError::new(what, Errno::EINVAL));
        }
        for (s, _) in hit {
            c.mappings.remove(&s);
        }
        self.log.push(format!(
            "unmap c{} {:#x}+{:#x}",
            container.0, iova, window.size
        ));
        Ok(())
    }

    fn ensure_memlock(&mut self, bytes: u64) -> Memlock {
        if bytes > self.memlock_soft {
            if bytes > self.memlock_hard && self.may_raise_hard {
                self.memlock_hard = bytes;
            }
            self.memlock_soft = bytes.min(self.memlock_hard);
        }
        Memlock {
            limit: self.memlock_soft,
            shortfall: bytes.saturating_sub(self.memlock_soft),
        }
    }

    fn host_memory(&mut self) -> Option<u64> {
        self.mem_total
    }

    fn adopt_container(&mut self, fd: OwnedFd) -> Result<SimContainerId, IommuError> {
        let what = "adopt container";
        let id = token_id(&fd).map_err(|e| IommuError::new(what, e))? as usize;
        if !matches!(self.containers.get(id), Some(Some(_))) {
            return Err(
                IommuError::new(what, Errno::EBADF).with_detail(format!("no container c{id}"))
            );
        }
        self.log.push(format!("adopt c{id}"));
        Ok(SimContainerId(id, fd))
    }

    fn adopt_group(&mut self, group: u32, fd: OwnedFd) -> Result<SimGroupId, IommuError> {
        let what = format!("adopt group {group}");
        let id = token_id(&fd).map_err(|e| IommuError::new(what.clone(), e))?;
        if id != u64::from(group) || !self.open.contains(&group) {
            return Err(IommuError::new(what, Errno::EBADF)
                .with_detail(format!("the fd is group {id}, open: {:?}", self.open)));
        }
        self.log.push(format!("adopt {group}"));
        Ok(SimGroupId(group, fd))
    }

    fn adopt_memory(&mut self, fd: OwnedFd, window: &Window) -> Result<SimMemory, IommuError> {
        let addr = token_id(&fd).map_err(|e| IommuError::new("adopt window", e))?;
        self.log.push(format!("adopt window {}", window.name));
        Ok(SimMemory {
            addr,
            len: window.size,
            huge: false,
            fd,
        })
    }
}
