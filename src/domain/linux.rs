//! The real kernel behind the [`Iommu`] seam: VFIO type1v2 containers and groups, or iommufd
//! IOASes and device cdevs, from [`crate::vfio`]; window memory from [`super::memory`]. Thin by
//! design; every decision is made in the held state.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use super::iommu::{AttachError, Cdev, ContainerHandle, GroupHandle, Iommu, IommuError, Memlock};
use super::memory::{self, WindowMemory};
use super::windows::Window;
use crate::host::Roots;
use crate::vfio::container::{Container, Group, VfioCallError};
use crate::vfio::iommu_info::{self, IommuInfo, QueryError};
use crate::vfio::iommufd::{DeviceFd, Iommufd};

/// A container on the live host: a type1 container, or an IOAS with its iommufd.
#[derive(Debug)]
pub enum LinuxContainer {
    Legacy(Container),
    Ioas { iommufd: Iommufd, id: u32 },
}

impl AsFd for LinuxContainer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            LinuxContainer::Legacy(c) => c.as_fd(),
            LinuxContainer::Ioas { iommufd, .. } => iommufd.as_fd(),
        }
    }
}

impl ContainerHandle for LinuxContainer {
    fn ioas(&self) -> Option<u32> {
        match self {
            LinuxContainer::Legacy(_) => None,
            LinuxContainer::Ioas { id, .. } => Some(*id),
        }
    }
}

/// A group on the live host: its node, or its members' device cdevs (with whether they are
/// bound to the domain's iommufd yet: a device fd binds once, and a group the kernel refused
/// in one IOAS is attached to another without binding again).
#[derive(Debug)]
pub enum LinuxGroup {
    Legacy(Group),
    Devices {
        id: u32,
        devices: Vec<DeviceFd>,
        bound: AtomicBool,
    },
}

impl GroupHandle for LinuxGroup {
    fn node(&self) -> Option<BorrowedFd<'_>> {
        match self {
            LinuxGroup::Legacy(g) => Some(g.as_fd()),
            LinuxGroup::Devices { .. } => None,
        }
    }

    fn devices(&self) -> Vec<(&str, BorrowedFd<'_>)> {
        match self {
            LinuxGroup::Legacy(_) => Vec::new(),
            LinuxGroup::Devices { devices, .. } => devices
                .iter()
                .map(|d| (d.address.as_str(), d.as_fd()))
                .collect(),
        }
    }
}

fn wrong_backend(what: &str) -> IommuError {
    IommuError::new(what, Errno::EINVAL)
        .with_detail("a legacy group and an iommufd container (or the reverse) were mixed")
}

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
        Errno::EINVAL if e.what == "VFIO_DEVICE_BIND_IOMMUFD" => {
            Some("the device is bound already: another process holds it through its cdev")
        }
        Errno::EPERM | Errno::EBUSY if e.what == "VFIO_DEVICE_BIND_IOMMUFD" => Some(
            "the group is not viable, or owned elsewhere (binding also needs interrupt remapping)",
        ),
        _ => None,
    };
    let err = IommuError::new(what, e.errno);
    match detail {
        Some(d) => err.with_detail(d),
        None => err,
    }
}

impl Iommu for LinuxIommu {
    type Container = LinuxContainer;
    type Group = LinuxGroup;
    type Memory = WindowMemory;

    fn open_group(&mut self, group: u32) -> Result<LinuxGroup, IommuError> {
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
        Ok(LinuxGroup::Legacy(g))
    }

    fn new_container(&mut self) -> Result<LinuxContainer, IommuError> {
        Container::open(&self.container_node())
            .map(LinuxContainer::Legacy)
            .map_err(call_error)
    }

    fn open_devices(&mut self, group: u32, cdevs: &[Cdev]) -> Result<LinuxGroup, IommuError> {
        if cdevs.is_empty() {
            return Err(IommuError::new(format!("group {group}"), Errno::ENOENT)
                .with_detail("no member has a VFIO device cdev"));
        }
        let mut devices = Vec::new();
        for c in cdevs {
            let d =
                DeviceFd::open(&self.roots.device_cdev(&c.name), &c.address).map_err(call_error)?;
            devices.push(d);
        }
        Ok(LinuxGroup::Devices {
            id: group,
            devices,
            bound: AtomicBool::new(false),
        })
    }

    fn new_ioas(&mut self, share: Option<&LinuxContainer>) -> Result<LinuxContainer, IommuError> {
        let iommufd = match share {
            Some(LinuxContainer::Ioas { iommufd, .. }) => iommufd.try_clone(),
            Some(LinuxContainer::Legacy(_)) => return Err(wrong_backend("IOMMU_IOAS_ALLOC")),
            None => Iommufd::open(&self.roots.iommufd()),
        }
        .map_err(call_error)?;
        let id = iommufd.alloc_ioas().map_err(call_error)?;
        Ok(LinuxContainer::Ioas { iommufd, id })
    }

    fn open_iommufd(&mut self) -> Result<OwnedFd, IommuError> {
        let path = self.roots.iommufd();
        let what = format!("open {}", path.display());
        let iommufd = Iommufd::open(&path).map_err(|e| IommuError::new(&what, e.errno))?;
        // Our own fd on it (close-on-exec, like every fd this process opens); the handle closes.
        iommufd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| IommuError::new(what, Errno::from_raw(e.raw_os_error().unwrap_or(0))))
    }

    fn attach(
        &mut self,
        container: &mut LinuxContainer,
        group: &LinuxGroup,
        first: bool,
    ) -> Result<(), AttachError> {
        match (container, group) {
            (LinuxContainer::Legacy(container), LinuxGroup::Legacy(group)) => {
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
            (LinuxContainer::Ioas { iommufd, id }, LinuxGroup::Devices { devices, bound, .. }) => {
                // A device fd binds once, the first time its group is attached; every IOAS of
                // the domain is in the same iommufd.
                if !bound.load(Ordering::SeqCst) {
                    for d in devices {
                        d.bind(iommufd)
                            .map_err(|e| AttachError::Failed(call_error(e)))?;
                    }
                    bound.store(true, Ordering::SeqCst);
                }
                let mut attached: Vec<&DeviceFd> = Vec::new();
                for d in devices {
                    if let Err(e) = d.attach(*id) {
                        for a in attached {
                            let _ = a.detach();
                        }
                        return Err(
                            if !first && matches!(e.errno, Errno::EINVAL | Errno::EBUSY) {
                                AttachError::Refused(call_error(e))
                            } else {
                                AttachError::Failed(call_error(e))
                            },
                        );
                    }
                    attached.push(d);
                }
                Ok(())
            }
            _ => Err(AttachError::Failed(wrong_backend("attach"))),
        }
    }

    fn release_group(&mut self, container: Option<&mut LinuxContainer>, group: LinuxGroup) {
        match group {
            LinuxGroup::Legacy(group) => {
                if container.is_some() {
                    // Closing the fd detaches too; the explicit call makes the order
                    // deterministic.
                    let _ = group.unset_container();
                }
                drop(group);
            }
            LinuxGroup::Devices { devices, .. } => {
                if container.is_some() {
                    for d in &devices {
                        let _ = d.detach();
                    }
                }
                // Closing a device fd unbinds it from the iommufd.
                drop(devices);
            }
        }
    }

    fn release_container(&mut self, container: LinuxContainer) {
        if let LinuxContainer::Ioas { iommufd, id } = &container {
            // Its mappings (and pins) go with it; the held state detached every device first.
            let _ = iommufd.destroy(*id);
        }
        drop(container);
    }

    fn info(&mut self, container: &LinuxContainer) -> Result<IommuInfo, IommuError> {
        match container {
            LinuxContainer::Legacy(c) => iommu_info::query(c.as_fd()).map_err(|e| match e {
                QueryError::Ioctl(errno) => IommuError::new("VFIO_IOMMU_GET_INFO", errno),
                other => IommuError::new("VFIO_IOMMU_GET_INFO", Errno::EPROTO)
                    .with_detail(other.to_string()),
            }),
            LinuxContainer::Ioas { iommufd, id } => {
                let (ranges, align) = iommufd.iova_ranges(*id).map_err(call_error)?;
                Ok(IommuInfo {
                    // The alignment every mapping needs is the smallest page the IOAS maps.
                    page_sizes: if align.is_power_of_two() { align } else { 0 },
                    iova_ranges: Some(ranges),
                    dma_avail: None,
                })
            }
        }
    }

    fn allocate(&mut self, window: &Window) -> Result<WindowMemory, IommuError> {
        WindowMemory::allocate(window, &self.roots.proc)
    }

    fn map(
        &mut self,
        container: &mut LinuxContainer,
        window: &Window,
        memory: &WindowMemory,
    ) -> Result<(), IommuError> {
        use super::iommu::Backing;
        let what = match container {
            LinuxContainer::Legacy(_) => "VFIO_IOMMU_MAP_DMA",
            LinuxContainer::Ioas { .. } => "IOMMU_IOAS_MAP",
        };
        if memory.len() < window.size {
            return Err(IommuError::new(what, Errno::EINVAL)
                .with_detail("backing memory smaller than the window"));
        }
        match container {
            // SAFETY: `memory` maps `window.size` bytes and the held state keeps it alive (and
            // mapped) until the window is unmapped from every container.
            LinuxContainer::Legacy(c) => {
                unsafe { c.map_dma(window.iova, window.size, memory.addr()) }
                    .map_err(|e| IommuError::new(what, e.errno))
            }
            // SAFETY: as above: the holder's own mapping of the window's memfd (6.12 has no
            // IOAS_MAP_FILE), kept while the range is mapped.
            LinuxContainer::Ioas { iommufd, id } => {
                unsafe { iommufd.map(*id, window.iova, window.size, memory.addr()) }
                    .map_err(|e| IommuError::new(what, e.errno))
            }
        }
    }

    fn unmap(&mut self, container: &mut LinuxContainer, window: &Window) -> Result<(), IommuError> {
        match container {
            LinuxContainer::Legacy(c) => c
                .unmap_dma(window.iova, window.size)
                .map(drop)
                .map_err(|e| IommuError::new("VFIO_IOMMU_UNMAP_DMA", e.errno)),
            LinuxContainer::Ioas { iommufd, id } => iommufd
                .unmap(*id, window.iova, window.size)
                .map(drop)
                .map_err(|e| IommuError::new("IOMMU_IOAS_UNMAP", e.errno)),
        }
    }

    fn ensure_memlock(&mut self, bytes: u64) -> Memlock {
        memory::ensure_memlock(bytes)
    }

    fn host_memory(&mut self) -> Option<u64> {
        let text = std::fs::read_to_string(self.roots.proc.join("meminfo")).ok()?;
        memory::mem_total(&text)
    }

    fn adopt_container(&mut self, fd: OwnedFd) -> Result<LinuxContainer, IommuError> {
        Ok(LinuxContainer::Legacy(Container::from_fd(
            fd,
            self.container_node(),
        )))
    }

    fn adopt_group(&mut self, group: u32, fd: OwnedFd) -> Result<LinuxGroup, IommuError> {
        Ok(LinuxGroup::Legacy(Group::from_fd(
            fd,
            self.roots.group_node(group),
            group,
        )))
    }

    fn adopt_ioas(&mut self, fd: OwnedFd, ioas: u32) -> Result<LinuxContainer, IommuError> {
        Ok(LinuxContainer::Ioas {
            iommufd: Iommufd::from_fd(fd, self.roots.iommufd()),
            id: ioas,
        })
    }

    fn adopt_devices(
        &mut self,
        group: u32,
        devices: Vec<(String, OwnedFd)>,
    ) -> Result<LinuxGroup, IommuError> {
        let devices = devices
            .into_iter()
            .map(|(address, fd)| {
                let path = self.roots.dev_vfio().join("devices");
                DeviceFd::from_fd(fd, path, &address)
            })
            .collect();
        Ok(LinuxGroup::Devices {
            id: group,
            devices,
            bound: AtomicBool::new(true),
        })
    }

    fn adopt_memory(&mut self, fd: OwnedFd, window: &Window) -> Result<WindowMemory, IommuError> {
        WindowMemory::adopt(fd, window)
    }
}
