//! The side-effect seam of held domains: every kernel call a domain makes (open a group,
//! build a container, attach, map, unmap, allocate window memory, raise RLIMIT_MEMLOCK) goes
//! through [`Iommu`]. [`super::linux::LinuxIommu`] is the real kernel, [`super::simulated`] the
//! simulated one the tests drive.
//!
//! Handles are associated types; every one is a file descriptor ([`AsFd`], [`Backing::fd`]) so
//! the fd broker and systemd's fd store work the same on both (the simulated ones are small
//! memfds that name their id), and adoption after a restart goes through the seam too.
//!
//! Two backends share the seam (issue 19): *legacy* (a container is a type1 container, a
//! group its `/dev/vfio/N` fd) and *iommufd* (a container is an IOAS in the domain's iommufd,
//! its handle the iommufd's fd and the IOAS id; a group is its member devices' cdev fds, bound
//! to that iommufd and attached to the IOAS by [`Iommu::attach`]). The held state makes the
//! same decisions for both.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use super::windows::Window;
use crate::vfio::iommu_info::IommuInfo;

/// A failed kernel call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuError {
    /// What was attempted, e.g. `open /dev/vfio/5`, `VFIO_IOMMU_MAP_DMA`.
    pub what: String,
    pub errno: Errno,
    /// Why, in words, when we can tell.
    pub detail: Option<String>,
}

impl IommuError {
    pub fn new(what: impl Into<String>, errno: Errno) -> Self {
        IommuError {
            what: what.into(),
            errno,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for IommuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.errno.desc())?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for IommuError {}

/// The outcome of attaching a group to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The kernel will not put this group into that container's IOMMU domain (EINVAL, EBUSY
    /// on `VFIO_GROUP_SET_CONTAINER` while the container already holds groups): mirror it.
    Refused(IommuError),
    /// Anything else (not viable, I/O error): the group cannot be held.
    Failed(IommuError),
}

/// Memory backing one window, mapped in this process.
pub trait Backing {
    /// Start of the mapping in this process.
    fn addr(&self) -> u64;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether it is backed by huge pages.
    fn huge(&self) -> bool;
    /// Why huge pages were asked for but not used, if so.
    fn fallback(&self) -> Option<&str>;
    /// The memory's file (a memfd), for the fd broker and systemd's fd store.
    fn fd(&self) -> BorrowedFd<'_>;
}

/// RLIMIT_MEMLOCK after [`Iommu::ensure_memlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memlock {
    /// Soft limit in bytes (`u64::MAX`: unlimited).
    pub limit: u64,
    /// Bytes still missing for what was asked; 0 when it fits.
    pub shortfall: u64,
}

/// A member function's VFIO device cdev, as the snapshot names it on this pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cdev {
    /// The function's PCI address.
    pub address: String,
    /// `vfioN` (`/dev/vfio/devices/vfioN`).
    pub name: String,
}

/// A container handle: a type1 container's fd, or an iommufd's fd with an IOAS id.
pub trait ContainerHandle: fmt::Debug + AsFd {
    /// The IOAS id on iommufd; `None` on legacy.
    fn ioas(&self) -> Option<u32>;
}

/// A group handle: the group node's fd (legacy), or its member devices' cdev fds (iommufd).
pub trait GroupHandle: fmt::Debug {
    /// `/dev/vfio/N`'s fd on legacy.
    fn node(&self) -> Option<BorrowedFd<'_>>;
    /// (PCI address, device cdev fd) of each member on iommufd, by address.
    fn devices(&self) -> Vec<(&str, BorrowedFd<'_>)>;
}

/// Every kernel operation of a held domain.
pub trait Iommu {
    /// A container; its fd is what the broker hands out and the fd store keeps.
    type Container: ContainerHandle;
    /// An open group node, or a group's open device cdevs.
    type Group: GroupHandle;
    type Memory: Backing + fmt::Debug;

    /// Opens `/dev/vfio/N` (EBUSY when another process holds it) and checks it is viable.
    fn open_group(&mut self, group: u32) -> Result<Self::Group, IommuError>;
    /// Opens a new, empty container.
    fn new_container(&mut self) -> Result<Self::Container, IommuError>;
    /// iommufd: opens the cdevs of group `group`'s members (`/dev/vfio/devices/vfioN`; EBUSY
    /// while the group is open through the legacy API). They are bound by [`Iommu::attach`].
    fn open_devices(&mut self, group: u32, cdevs: &[Cdev]) -> Result<Self::Group, IommuError>;
    /// iommufd: a new, empty IOAS, in `share`'s iommufd when given (the domain's other
    /// IOASes), else in a newly opened `/dev/iommu`.
    fn new_ioas(&mut self, share: Option<&Self::Container>) -> Result<Self::Container, IommuError>;
    /// Opens `/dev/iommu`: a fresh iommufd tied to no domain, for the fd broker to hand to a
    /// user that binds its own devices (a VMM). ENOENT: this kernel has no iommufd.
    fn open_iommufd(&mut self) -> Result<OwnedFd, IommuError>;
    /// Attaches `group` to `container`; legacy: for the first group (`first`) also selects
    /// the type1v2 IOMMU; iommufd: binds each device to the container's iommufd (once) and
    /// attaches it to the IOAS.
    fn attach(
        &mut self,
        container: &mut Self::Container,
        group: &Self::Group,
        first: bool,
    ) -> Result<(), AttachError>;
    /// Detaches a group from its container (when attached) and closes it.
    fn release_group(&mut self, container: Option<&mut Self::Container>, group: Self::Group);
    /// Closes a container (its mappings go with it).
    fn release_container(&mut self, container: Self::Container);
    /// `VFIO_IOMMU_GET_INFO` of a container with its IOMMU set.
    fn info(&mut self, container: &Self::Container) -> Result<IommuInfo, IommuError>;
    /// Allocates and maps the memory backing `window`.
    fn allocate(&mut self, window: &Window) -> Result<Self::Memory, IommuError>;
    /// Maps `memory` read/write at the window's IOVA.
    fn map(
        &mut self,
        container: &mut Self::Container,
        window: &Window,
        memory: &Self::Memory,
    ) -> Result<(), IommuError>;
    /// Unmaps the window's IOVA range.
    fn unmap(&mut self, container: &mut Self::Container, window: &Window)
        -> Result<(), IommuError>;
    /// Raises RLIMIT_MEMLOCK so `bytes` may be pinned, as far as allowed.
    fn ensure_memlock(&mut self, bytes: u64) -> Memlock;
    /// The host's memory in bytes (`MemTotal`), when it can be read.
    fn host_memory(&mut self) -> Option<u64>;

    /// Takes back a container fd an earlier process held (systemd's fd store): its groups and
    /// mappings lived on in the kernel.
    fn adopt_container(&mut self, fd: OwnedFd) -> Result<Self::Container, IommuError>;
    /// Takes back the fd of group `group`'s node.
    fn adopt_group(&mut self, group: u32, fd: OwnedFd) -> Result<Self::Group, IommuError>;
    /// Takes back an iommufd fd and the id of an IOAS in it (iommufd).
    fn adopt_ioas(&mut self, fd: OwnedFd, ioas: u32) -> Result<Self::Container, IommuError>;
    /// Takes back the (bound, attached) device cdev fds of group `group`: (address, fd).
    fn adopt_devices(
        &mut self,
        group: u32,
        devices: Vec<(String, OwnedFd)>,
    ) -> Result<Self::Group, IommuError>;
    /// Takes back the memory of `window` from its file, mapping it again in this process.
    fn adopt_memory(&mut self, fd: OwnedFd, window: &Window) -> Result<Self::Memory, IommuError>;
}
