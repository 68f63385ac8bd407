//! The real kernel behind the [`Iommu`] seam: VFIO type1v2 containers and groups from
//! [`crate::vfio`], window memory from [`super::memory`]. Thin by design; every decision is made
//! in the held state.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::errno::Errno;

use super::iommu::{AttachError, Iommu, IommuError, Memlock};
use super::memory::{self, WindowMemory};
use super::windows::Window;
use crate::host::Roots;
use crate::vfio::container::{Container, Group, VfioCallError};
use crate::vfio::iommu_info::{self, IommuInfo, QueryError};

/// The live host's VFIO layer, with paths from `Roots`.
#[derive(Debug, Clone)]
pub struct LinuxIommu {
    roots: Roots,
}

impl LinuxIommu {
    pub fn new(roots: Roots) -> Self {
        LinuxIommu { roots }
    }

    fn container_node(&self) -> PathBuf {
        self.roots.dev_vfio().join("vfio")
    }
}

fn call_error(e: VfioCallError) -> IommuError {
    let what = if e.what == "open" {
        format!("open {}", e.path.display())
    } else {
        format!("{} on {}", e.what, e.path.display())
    };
    let detail = match e.errno {
        Errno::EBUSY if e.what == "open" => {
            Some("another process holds the group (a VM, a program given this domain by an earlier watch through `vfioctl domain open`, or another vfioctl watch); once it closes, the next pass (SIGHUP, or the resync) holds the group again")
        }
        Errno::ENOENT if e.what == "open" => Some("no member is on a vfio driver"),
        _ => None,
    };
    let err = IommuError::new(what, e.errno);
    match detail {
        Some(d) => err.with_detail(d),
        None => err,
    }
}

impl Iommu for LinuxIommu {
    type Container = Container;
    type Group = Group;
    type Memory = WindowMemory;

    fn open_group(&mut self, group: u32) -> Result<Group, IommuError> {
        let g = Group::open(&self.roots.group_node(group), group).map_err(call_error)?;
        let status = g.status().map_err(call_error)?;
        if !status.viable {
            return Err(IommuError::new(
                format!("VFIO_GROUP_GET_STATUS on {}", g.path().display()),
                Errno::EPERM,
            )
            .with_detail(format!(
                "group {group} is not viable: a member is on a host driver"
            )));
        }
        Ok(g)
    }

    fn new_container(&mut self) -> Result<Container, IommuError> {
        Container::open(&self.container_node()).map_err(call_error)
    }

    fn attach(
        &mut self,
        container: &mut Container,
        group: &Group,
        first: bool,
    ) -> Result<(), AttachError> {
        match group.set_container(container) {
            Ok(()) => {}
            Err(e) if !first && matches!(e.errno, Errno::EINVAL | Errno::EBUSY) => {
                return Err(AttachError::Refused(call_error(e)));
            }
            Err(e) => return Err(AttachError::Failed(call_error(e))),
        }
        if first {
            if let Err(e) = container.set_iommu_type1v2() {
                let _ = group.unset_container();
                return Err(AttachError::Failed(call_error(e)));
            }
        }
        Ok(())
    }

    fn release_group(&mut self, container: Option<&mut Container>, group: Group) {
        if container.is_some() {
            // Closing the fd detaches too; the explicit call makes the order deterministic.
            let _ = group.unset_container();
        }
        drop(group);
    }

    fn release_container(&mut self, container: Container) {
        drop(container);
    }

    fn info(&mut self, container: &Container) -> Result<IommuInfo, IommuError> {
        use std::os::fd::AsFd;
        iommu_info::query(container.as_fd()).map_err(|e| match e {
            QueryError::Ioctl(errno) => IommuError::new("VFIO_IOMMU_GET_INFO", errno),
            other => {
                IommuError::new("VFIO_IOMMU_GET_INFO", Errno::EPROTO).with_detail(other.to_string())
            }
        })
    }

    fn allocate(&mut self, window: &Window) -> Result<WindowMemory, IommuError> {
        WindowMemory::allocate(window, &self.roots.proc)
    }

    fn map(
        &mut self,
        container: &mut Container,
        window: &Window,
        memory: &WindowMemory,
    ) -> Result<(), IommuError> {
        use super::iommu::Backing;
        if memory.len() < window.size {
            return Err(IommuError::new("VFIO_IOMMU_MAP_DMA", Errno::EINVAL)
                .with_detail("backing memory smaller than the window"));
        }
        // SAFETY: `memory` maps `window.size` bytes and the held state keeps it alive (and
        // mapped) until the window is unmapped from every container.
        unsafe { container.map_dma(window.iova, window.size, memory.addr()) }
            .map_err(|e| IommuError::new("VFIO_IOMMU_MAP_DMA", e.errno))
    }

    fn unmap(&mut self, container: &mut Container, window: &Window) -> Result<(), IommuError> {
        container
            .unmap_dma(window.iova, window.size)
            .map(drop)
            .map_err(|e| IommuError::new("VFIO_IOMMU_UNMAP_DMA", e.errno))
    }

    fn ensure_memlock(&mut self, bytes: u64) -> Memlock {
        memory::ensure_memlock(bytes)
    }

    fn host_memory(&mut self) -> Option<u64> {
        let text = std::fs::read_to_string(self.roots.proc.join("meminfo")).ok()?;
        memory::mem_total(&text)
    }

    fn adopt_container(&mut self, fd: OwnedFd) -> Result<Container, IommuError> {
        Ok(Container::from_fd(fd, self.container_node()))
    }

    fn adopt_group(&mut self, group: u32, fd: OwnedFd) -> Result<Group, IommuError> {
        Ok(Group::from_fd(fd, self.roots.group_node(group), group))
    }

    fn adopt_memory(&mut self, fd: OwnedFd, window: &Window) -> Result<WindowMemory, IommuError> {
        WindowMemory::adopt(fd, window)
    }
}
