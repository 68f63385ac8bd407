//! VFIO containers and groups, through our own nix ioctls: open `/dev/vfio/vfio`, check the
//! API version and type1v2 support, attach group fds (`VFIO_GROUP_SET_CONTAINER`), select the
//! IOMMU (`VFIO_SET_IOMMU`).
//!
//! `vfio-ioctls` keeps its group handling private (it attaches groups only while opening a
//! device), and a held domain must own bare group fds, so these calls are declared here.
//! Every handle is an `OwnedFd` the caller can lend out (`AsFd`) or pass on.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::ioctl::{
    vfio_get_api_version, vfio_group_get_status, VfioGroupStatus, GROUP_FLAGS_CONTAINER_SET,
    GROUP_FLAGS_VIABLE,
};
pub use super::ioctl::{VFIO_API_VERSION, VFIO_BASE, VFIO_TYPE};

/// `VFIO_TYPE1v2_IOMMU`.
pub const VFIO_TYPE1V2_IOMMU: i32 = vfio_bindings::bindings::vfio::VFIO_TYPE1v2_IOMMU as i32;

// The requests below are ours; GET_API_VERSION and GROUP_GET_STATUS come from `ioctl`.
nix::ioctl_write_int_bad!(
    vfio_check_extension,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 1)
);
nix::ioctl_write_int_bad!(
    vfio_set_iommu,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 2)
);
nix::ioctl_write_ptr_bad!(
    vfio_group_set_container,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 4),
    i32
);
nix::ioctl_none_bad!(
    vfio_group_unset_container,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 5)
);

/// A failed VFIO call, naming the node and the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {what} failed: {errno}{hint}", hint = hint(what, *errno))]
pub struct VfioCallError {
    pub path: PathBuf,
    pub what: &'static str,
    pub errno: Errno,
}

fn hint(what: &str, errno: Errno) -> &'static str {
    match (what, errno) {
        ("open", Errno::EBUSY) => " (another process holds the group: a VM or a vfioctl watch)",
        ("open", Errno::ENOENT) => " (the group has no member on a vfio driver yet)",
        ("open", Errno::EACCES) => " (permission denied: run as root or own the node)",
        ("VFIO_GROUP_SET_CONTAINER", Errno::EPERM) => {
            " (the group is not viable: a member is on a host driver)"
        }
        _ => "",
    }
}

/// Opens a VFIO or iommufd node read-write; the error names the path and the errno.
pub(super) fn open_rw(path: &Path) -> Result<OwnedFd, VfioCallError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| VfioCallError {
            path: path.to_path_buf(),
            what: "open",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })
}

/// An open container (`/dev/vfio/vfio`).
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
    path: PathBuf,
}

impl Container {
    /// Opens the container node and checks the API version and type1v2 support.
    pub fn open(path: &Path) -> Result<Self, VfioCallError> {
        let fd = open_rw(path)?;
        let c = Container {
            fd,
            path: path.to_path_buf(),
        };
        // SAFETY: no argument; the fd is open.
        let v = unsafe { vfio_get_api_version(c.fd.as_raw_fd()) }
            .map_err(|e| c.err("VFIO_GET_API_VERSION", e))?;
        if v != VFIO_API_VERSION {
            return Err(c.err("VFIO_GET_API_VERSION", Errno::EPROTO));
        }
        // SAFETY: integer argument; the fd is open.
        let ok = unsafe { vfio_check_extension(c.fd.as_raw_fd(), VFIO_TYPE1V2_IOMMU) }
            .map_err(|e| c.err("VFIO_CHECK_EXTENSION(TYPE1v2)", e))?;
        if ok != 1 {
            return Err(c.err("VFIO_CHECK_EXTENSION(TYPE1v2)", Errno::ENOTSUP));
        }
        Ok(c)
    }

    /// Adopts an already open container fd (a restart that got it back from the fd store).
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Self {
        Container { fd, path }
    }

    /// Selects the type1v2 IOMMU; valid once at least one group is attached.
    pub fn set_iommu_type1v2(&self) -> Result<(), VfioCallError> {
        // SAFETY: integer argument; the fd is open.
        unsafe { vfio_set_iommu(self.fd.as_raw_fd(), VFIO_TYPE1V2_IOMMU) }
            .map(drop)
            .map_err(|e| self.err("VFIO_SET_IOMMU(TYPE1v2)", e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, what: &'static str, errno: Errno) -> VfioCallError {
        VfioCallError {
            path: self.path.clone(),
            what,
            errno,
        }
    }
}

impl AsFd for Container {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What `VFIO_GROUP_GET_STATUS` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupFlags {
    pub viable: bool,
    pub container_set: bool,
}

/// An open group node (`/dev/vfio/N`). While it is open no other process can open it.
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
    path: PathBuf,
    pub id: u32,
}

impl Group {
    /// Opens `/dev/vfio/N`; EBUSY when another process holds it.
    pub fn open(path: &Path, id: u32) -> Result<Self, VfioCallError> {
        Ok(Group {
            fd: open_rw(path)?,
            path: path.to_path_buf(),
            id,
        })
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn status(&self) -> Result<GroupFlags, VfioCallError> {
        let mut arg = VfioGroupStatus {
            argsz: std::mem::size_of::<VfioGroupStatus>() as u32,
            flags: 0,
        };
        // SAFETY: `arg` is a correctly sized `struct vfio_group_status`; the fd is open.
        unsafe { vfio_group_get_status(self.fd.as_raw_fd(), &mut arg) }
            .map_err(|e| self.err("VFIO_GROUP_GET_STATUS", e))?;
        Ok(GroupFlags {
            viable: arg.flags & GROUP_FLAGS_VIABLE != 0,
            container_set: arg.flags & GROUP_FLAGS_CONTAINER_SET != 0,
        })
    }

    /// `VFIO_GROUP_SET_CONTAINER`: attaches this group to `container`. The kernel refuses
    /// (EINVAL, EBUSY) a group it cannot put into that container's IOMMU domains.
    pub fn set_container(&self, container: &Container) -> Result<(), VfioCallError> {
        let cfd: i32 = container.as_fd().as_raw_fd();
        // SAFETY: the argument points at a live `int` holding an open container fd.
        unsafe { vfio_group_set_container(self.fd.as_raw_fd(), &cfd) }
            .map(drop)
            .map_err(|e| self.err("VFIO_GROUP_SET_CONTAINER", e))
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: detaches the group (the last group's detach drops the
    /// container's mappings).
    pub fn unset_container(&self) -> Result<(), VfioCallError> {
        // SAFETY: no argument; the fd is open.
        unsafe { vfio_group_unset_container(self.fd.as_raw_fd()) }
            .map(drop)
            .map_err(|e| self.err("VFIO_GROUP_UNSET_CONTAINER", e))
    }

    /// Adopts an already open group fd.
    pub fn from_fd(fd: OwnedFd, path: PathBuf, id: u32) -> Self {
        Group { fd, path, id }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str, errno: Errno) -> VfioCallError {
        VfioCallError {
            path: self.path.clone(),
            what,
            errno,
        }
    }
}

impl AsFd for Group {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_container_node_is_an_open_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = Container::open(&dir.path().join("vfio")).unwrap_err();
        assert_eq!(err.what, "open");
        assert_eq!(err.errno, Errno::ENOENT);
        assert!(err.to_string().contains("no member on a vfio driver"));
    }

    #[test]
    fn ioctls_on_a_plain_file_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("5");
        std::fs::write(&p, b"").unwrap();
        let g = Group::open(&p, 5).unwrap();
        let err = g.status().unwrap_err();
        assert_eq!(err.what, "VFIO_GROUP_GET_STATUS");
        assert_eq!(err.errno, Errno::ENOTTY);
        let err = Container::open(&p).unwrap_err();
        assert_eq!(err.what, "VFIO_GET_API_VERSION");
    }
}
