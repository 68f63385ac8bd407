//! A simulated type1 IOMMU behind the [`Iommu`] seam, for tests and dry runs: group nodes that
//! are busy while open, containers that refuse groups behind a different IOMMU unit, usable
//! IOVA ranges with the members' reserved regions cut out, EEXIST on overlapping maps, EINVAL
//! outside the ranges, a DMA entry limit, and locked-memory accounting per container as
//! `vfio_iommu_type1` does it (a page mapped in two containers counts twice).
//!
//! It records every call (`log`) and can be told to fail one operation (`fail_next`). Its
//! handles are real fds (small memfds holding the id they stand for), so the fd broker and
//! systemd's fd store handle them like the kernel's, and adoption reads the id back.
//!
//! The iommufd backend is modelled beside it (issue 19): `/dev/iommu` (iommufd contexts, IOASes
//! in them), VFIO device cdevs that are busy while their group is open through the legacy API
//! (and the group busy while a cdev is open), binding once (a second bind of a bound device is
//! EINVAL, as 6.12 answers), attaching to an IOAS (IOASes take devices behind any IOMMU unit,
//! so no refusal), IOVA ranges with the attached groups' reserved regions cut out, and ENOENT
//! for an unmap of a range nothing is mapped at.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::iommu::{
    AttachError, Backing, Cdev, ContainerHandle, GroupHandle, Iommu, IommuError, Memlock,
};
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

/// One simulated container, or IOAS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimContainer {
    pub groups: Vec<u32>,
    pub iommu_set: bool,
    /// iova -> size.
    pub mappings: BTreeMap<u64, u64>,
    /// An IOAS: (iommufd context, IOAS id); `None` for a type1 container.
    pub ioas: Option<(u64, u32)>,
}

/// A VFIO device cdev of the simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCdev {
    pub group: u32,
    /// `vfioN`.
    pub name: String,
    /// The id its token fds hold.
    pub id: u64,
    /// Open fds on it (through this seam).
    pub open: u32,
    /// The iommufd context it is bound to.
    pub bound: Option<u64>,
    /// The container slot (IOAS) it is attached to.
    pub attached: Option<usize>,
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
    /// `allocate`, `info`, `ioas`, `bind`, `iommufd`) -> errno.
    pub fail_next: BTreeMap<&'static str, Errno>,
    /// `/dev/iommu` exists.
    pub dev_iommu: bool,
    /// VFIO device cdevs by PCI address.
    pub cdevs: BTreeMap<String, SimCdev>,
    next_addr: u64,
    next_object: u32,
    next_ctx: u64,
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
            dev_iommu: true,
            cdevs: BTreeMap::new(),
            next_addr: 0x7f00_0000_0000,
            next_object: 1,
            next_ctx: 1,
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

    /// A host with these groups (as [`SimIommu::with_groups`]) and `/dev/iommu`, and a
    /// device cdev for each `(address, group)`, named `vfio0`, `vfio1`, ... in order.
    pub fn with_cdevs(groups: &[(u32, &str)], devices: &[(&str, u32)]) -> Self {
        let mut s = SimIommu::with_groups(groups);
        for (i, &(address, group)) in devices.iter().enumerate() {
            s.cdevs.insert(
                address.to_string(),
                SimCdev {
                    group,
                    name: format!("vfio{i}"),
                    id: i as u64,
                    open: 0,
                    bound: None,
                    attached: None,
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

/// A simulated container handle: its slot, a token fd naming it (a type1 container: the
/// slot; an IOAS: its iommufd context), and the IOAS id.
#[derive(Debug)]
pub struct SimContainerId(pub usize, pub OwnedFd, pub Option<u32>);

/// A simulated group handle: the group and a token fd naming it (legacy), or the group's
/// device cdev fds by address, each a token naming the cdev (iommufd).
#[derive(Debug)]
pub enum SimGroupId {
    Node(u32, OwnedFd),
    Devices(u32, Vec<(String, OwnedFd)>),
}

impl SimGroupId {
    pub fn group(&self) -> u32 {
        match self {
            SimGroupId::Node(g, _) | SimGroupId::Devices(g, _) => *g,
        }
    }
}

impl PartialEq for SimContainerId {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl PartialEq for SimGroupId {
    fn eq(&self, other: &Self) -> bool {
        self.group() == other.group()
    }
}

impl AsFd for SimContainerId {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.1.as_fd()
    }
}

impl ContainerHandle for SimContainerId {
    fn ioas(&self) -> Option<u32> {
        self.2
    }
}

impl GroupHandle for SimGroupId {
    fn node(&self) -> Option<BorrowedFd<'_>> {
        match self {
            SimGroupId::Node(_, fd) => Some(fd.as_fd()),
            SimGroupId::Devices(..) => None,
        }
    }

    fn devices(&self) -> Vec<(&str, BorrowedFd<'_>)> {
        match self {
            SimGroupId::Node(..) => Vec::new(),
            SimGroupId::Devices(_, d) => d.iter().map(|(a, fd)| (a.as_str(), fd.as_fd())).collect(),
        }
    }
}

impl SimIommu {
    /// Whether any cdev of `group` is open through this seam.
    fn cdev_open(&self, group: u32) -> bool {
        self.cdevs.values().any(|c| c.group == group && c.open > 0)
    }

    fn attach_devices(
        &mut self,
        container: &SimContainerId,
        group: u32,
        devices: &[(String, OwnedFd)],
    ) -> Result<(), AttachError> {
        let failed = |what: &str, e: Errno| AttachError::Failed(IommuError::new(what, e));
        let Some((ctx, _)) = self
            .containers
            .get(container.0)
            .and_then(Option::as_ref)
            .and_then(|c| c.ioas)
        else {
            return Err(failed("VFIO_DEVICE_ATTACH_IOMMUFD_PT", Errno::EINVAL));
        };
        if let Some(e) = self.fail("bind") {
            return Err(failed("VFIO_DEVICE_BIND_IOMMUFD", e));
        }
        let viable = self.groups.get(&group).is_some_and(|g| g.viable);
        for (address, _) in devices {
            let Some(c) = self.cdevs.get_mut(address) else {
                return Err(failed("VFIO_DEVICE_BIND_IOMMUFD", Errno::ENODEV));
            };
            if c.bound == Some(ctx) && c.open > 0 {
                // Bound by this handle when its group was first attached (the held state
                // retries a refused group in another IOAS of the same iommufd).
                continue;
            }
            if c.bound.is_some() {
                self.log.push(format!("refuse bind {address}"));
                return Err(AttachError::Failed(
                    IommuError::new("VFIO_DEVICE_BIND_IOMMUFD", Errno::EINVAL)
                        .with_detail("the device is bound already"),
                ));
            }
            if !viable {
                return Err(failed("VFIO_DEVICE_BIND_IOMMUFD", Errno::EPERM));
            }
            c.bound = Some(ctx);
            self.log.push(format!("bind {address} -> iommufd{ctx}"));
        }
        if let Some(e) = self.fail("attach") {
            return Err(failed("VFIO_DEVICE_ATTACH_IOMMUFD_PT", e));
        }
        for (address, _) in devices {
            if let Some(c) = self.cdevs.get_mut(address) {
                c.attached = Some(container.0);
            }
            self.log
                .push(format!("attach-pt {address} -> c{}", container.0));
        }
        let c = self
            .container_mut(container.0)
            .map_err(|e| failed("VFIO_DEVICE_ATTACH_IOMMUFD_PT", e))?;
        c.groups.push(group);
        c.iommu_set = true;
        Ok(())
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
        let busy_cdev = self.cdev_open(group);
        let Some(g) = self.groups.get(&group) else {
            return Err(IommuError::new(what, Errno::ENOENT));
        };
        if g.held_elsewhere || self.open.contains(&group) || busy_cdev {
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
        Ok(SimGroupId::Node(group, fd))
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
        Ok(SimContainerId(id, fd, None))
    }

    fn open_devices(&mut self, group: u32, cdevs: &[Cdev]) -> Result<SimGroupId, IommuError> {
        if let Some(e) = self.fail("open") {
            return Err(IommuError::new(format!("open cdevs of group {group}"), e));
        }
        let Some(g) = self.groups.get(&group) else {
            return Err(IommuError::new(format!("group {group}"), Errno::ENOENT));
        };
        if g.held_elsewhere || self.open.contains(&group) {
            return Err(
                IommuError::new(format!("open cdevs of group {group}"), Errno::EBUSY)
                    .with_detail("the group is open through the legacy API"),
            );
        }
        if cdevs.is_empty() {
            return Err(IommuError::new(format!("group {group}"), Errno::ENOENT)
                .with_detail("no member has a VFIO device cdev"));
        }
        let mut fds = Vec::new();
        for c in cdevs {
            let what = format!("open /dev/vfio/devices/{}", c.name);
            let id = match self.cdevs.get(&c.address) {
                Some(s) if s.name == c.name && s.group == group => s.id,
                _ => return Err(IommuError::new(what, Errno::ENOENT)),
            };
            fds.push((
                c.address.clone(),
                token("cdev", id).map_err(|e| IommuError::new(what, e))?,
            ));
        }
        for c in cdevs {
            if let Some(s) = self.cdevs.get_mut(&c.address) {
                s.open += 1;
            }
            self.log.push(format!("open-cdev {}", c.name));
        }
        Ok(SimGroupId::Devices(group, fds))
    }

    fn open_iommufd(&mut self) -> Result<OwnedFd, IommuError> {
        if let Some(e) = self.fail("iommufd") {
            return Err(IommuError::new("open /dev/iommu", e));
        }
        if !self.dev_iommu {
            return Err(IommuError::new("open /dev/iommu", Errno::ENOENT));
        }
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let fd = token("iommufd", ctx).map_err(|e| IommuError::new("open /dev/iommu", e))?;
        self.log.push(format!("open-iommufd i{ctx}"));
        Ok(fd)
    }

    fn new_ioas(&mut self, share: Option<&SimContainerId>) -> Result<SimContainerId, IommuError> {
        if let Some(e) = self.fail("ioas") {
            return Err(IommuError::new("IOMMU_IOAS_ALLOC", e));
        }
        let ctx = match share {
            Some(c) => match self
                .containers
                .get(c.0)
                .and_then(Option::as_ref)
                .and_then(|c| c.ioas)
            {
                Some((ctx, _)) => ctx,
                None => return Err(IommuError::new("IOMMU_IOAS_ALLOC", Errno::EINVAL)),
            },
            None => {
                if !self.dev_iommu {
                    return Err(IommuError::new("open /dev/iommu", Errno::ENOENT));
                }
                self.next_ctx += 1;
                self.next_ctx - 1
            }
        };
        let slot = self.containers.len();
        let id = self.next_object;
        self.next_object += 1;
        let fd = token("iommufd", ctx).map_err(|e| IommuError::new("open /dev/iommu", e))?;
        self.containers.push(Some(SimContainer {
            ioas: Some((ctx, id)),
            iommu_set: true,
            ..SimContainer::default()
        }));
        self.log
            .push(format!("ioas c{slot} (iommufd{ctx}, id {id})"));
        Ok(SimContainerId(slot, fd, Some(id)))
    }

    fn attach(
        &mut self,
        container: &mut SimContainerId,
        group: &SimGroupId,
        first: bool,
    ) -> Result<(), AttachError> {
        let what = "VFIO_GROUP_SET_CONTAINER";
        let gid = match group {
            SimGroupId::Devices(g, devices) => {
                return self.attach_devices(container, *g, devices);
            }
            SimGroupId::Node(g, _) => *g,
        };
        if container.2.is_some() {
            return Err(AttachError::Failed(IommuError::new(what, Errno::EINVAL)));
        }
        if let Some(e) = self.fail("attach") {
            return Err(AttachError::Failed(IommuError::new(what, e)));
        }
        let unit = self.groups.get(&gid).map(|g| g.unit.clone());
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
            self.log.push(format!("refuse {gid} -> c{}", container.0));
            return Err(AttachError::Refused(
                IommuError::new(what, Errno::EINVAL)
                    .with_detail("the group sits behind a different IOMMU"),
            ));
        }
        let c = self
            .container_mut(container.0)
            .map_err(|e| AttachError::Failed(IommuError::new(what, e)))?;
        c.groups.push(gid);
        if first {
            c.iommu_set = true;
        }
        self.log.push(format!("attach {gid} -> c{}", container.0));
        Ok(())
    }

    fn release_group(&mut self, container: Option<&mut SimContainerId>, group: SimGroupId) {
        let gid = group.group();
        let ioas = container.as_ref().is_some_and(|c| c.2.is_some());
        if let Some(Ok(c)) = container.map(|c| self.container_mut(c.0)) {
            c.groups.retain(|g| *g != gid);
            // A type1 container drops its mappings with its last group; an IOAS keeps them.
            if c.groups.is_empty() && !ioas {
                c.mappings.clear();
                c.iommu_set = false;
            }
        }
        match group {
            SimGroupId::Node(..) => {
                self.open.remove(&gid);
                self.log.push(format!("release {gid}"));
            }
            SimGroupId::Devices(_, devices) => {
                // Closing a cdev fd unbinds (and so detaches) the device.
                for (address, _) in devices {
                    if let Some(c) = self.cdevs.get_mut(&address) {
                        c.open = c.open.saturating_sub(1);
                        c.bound = None;
                        c.attached = None;
                    }
                    self.log.push(format!("release-cdev {address}"));
                }
            }
        }
    }

    fn release_container(&mut self, container: SimContainerId) {
        if let Some(slot) = self.containers.get_mut(container.0) {
            if let Some(c) = slot.take() {
                for g in c.groups {
                    self.open.remove(&g);
                }
            }
        }
        for c in self.cdevs.values_mut() {
            if c.attached == Some(container.0) {
                c.attached = None;
            }
        }
        self.log.push(format!("close c{}", container.0));
    }

    fn info(&mut self, container: &SimContainerId) -> Result<IommuInfo, IommuError> {
        let what = if container.2.is_some() {
            "IOMMU_IOAS_IOVA_RANGES"
        } else {
            "VFIO_IOMMU_GET_INFO"
        };
        if let Some(e) = self.fail("info") {
            return Err(IommuError::new(what, e));
        }
        let limit = self.dma_entry_limit;
        let c = self
            .container_mut(container.0)
            .map_err(|e| IommuError::new(what, e))?;
        if c.ioas.is_some() {
            // iommufd reports the alignment (4 KiB) and the ranges, no DMA entry count.
            return Ok(IommuInfo {
                page_sizes: 1 << 12,
                iova_ranges: Some(self.iova_ranges(container.0)),
                dma_avail: None,
            });
        }
        if !c.iommu_set {
            return Err(IommuError::new(what, Errno::EINVAL));
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
        let ioas = container.2.is_some();
        let what = if ioas {
            "IOMMU_IOAS_MAP"
        } else {
            "VFIO_IOMMU_MAP_DMA"
        };
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
        if !ioas && c.mappings.len() >= limit {
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
        let ioas = container.2.is_some();
        let what = if ioas {
            "IOMMU_IOAS_UNMAP"
        } else {
            "VFIO_IOMMU_UNMAP_DMA"
        };
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
        // iommufd answers ENOENT for a range with nothing mapped, or one that would split a
        // mapping; type1v2 refuses a split with EINVAL.
        if ioas && (hit.is_empty() || hit.iter().any(|&(s, l)| s < iova || s + l > end)) {
            return Err(IommuError::new(what, Errno::ENOENT));
        }
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
        if !matches!(self.containers.get(id), Some(Some(c)) if c.ioas.is_none()) {
            return Err(
                IommuError::new(what, Errno::EBADF).with_detail(format!("no container c{id}"))
            );
        }
        self.log.push(format!("adopt c{id}"));
        Ok(SimContainerId(id, fd, None))
    }

    fn adopt_group(&mut self, group: u32, fd: OwnedFd) -> Result<SimGroupId, IommuError> {
        let what = format!("adopt group {group}");
        let id = token_id(&fd).map_err(|e| IommuError::new(what.clone(), e))?;
        if id != u64::from(group) || !self.open.contains(&group) {
            return Err(IommuError::new(what, Errno::EBADF)
                .with_detail(format!("the fd is group {id}, open: {:?}", self.open)));
        }
        self.log.push(format!("adopt {group}"));
        Ok(SimGroupId::Node(group, fd))
    }

    fn adopt_ioas(&mut self, fd: OwnedFd, ioas: u32) -> Result<SimContainerId, IommuError> {
        let what = format!("adopt IOAS {ioas}");
        let ctx = token_id(&fd).map_err(|e| IommuError::new(what.clone(), e))?;
        let slot = self
            .containers
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.ioas == Some((ctx, ioas))));
        let Some(slot) = slot else {
            return Err(IommuError::new(what, Errno::ENOENT)
                .with_detail(format!("iommufd{ctx} has no IOAS {ioas}")));
        };
        self.log.push(format!("adopt ioas c{slot}"));
        Ok(SimContainerId(slot, fd, Some(ioas)))
    }

    fn adopt_devices(
        &mut self,
        group: u32,
        devices: Vec<(String, OwnedFd)>,
    ) -> Result<SimGroupId, IommuError> {
        for (address, fd) in &devices {
            let what = format!("adopt device {address}");
            let id = token_id(fd).map_err(|e| IommuError::new(what.clone(), e))?;
            let ok = self
                .cdevs
                .get(address)
                .is_some_and(|c| c.id == id && c.group == group && c.bound.is_some());
            if !ok {
                return Err(IommuError::new(what, Errno::EBADF)
                    .with_detail(format!("not a bound cdev of group {group}")));
            }
            self.log.push(format!("adopt cdev {address}"));
        }
        Ok(SimGroupId::Devices(group, devices))
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
