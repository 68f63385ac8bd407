//! The VFIO ioctls vfioctl uses, as safe functions over our own nix declarations.
//!
//! Owns opening VFIO nodes and turning ioctl results into typed values and errors. The apply
//! stage asks [`group_status`] whether a group is viable, so success is the kernel's word.

pub mod container;
pub mod dma;
pub mod ioctl;
pub mod iommu_info;
pub mod iommufd;

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// What `VFIO_GROUP_GET_STATUS` reports for a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Every member is unbound or on a driver that manages no DMA.
    pub viable: bool,
    /// The group is already attached to a container.
    pub container_set: bool,
}

impl GroupStatus {
    /// Decodes the `flags` field.
    pub fn from_flags(flags: u32) -> Self {
        GroupStatus {
            viable: flags & ioctl::GROUP_FLAGS_VIABLE != 0,
            container_set: flags & ioctl::GROUP_FLAGS_CONTAINER_SET != 0,
        }
    }
}

/// Why a VFIO call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VfioError {
    #[error("{path}: in use by another process (EBUSY): a VM or the vfioctl daemon holds it")]
    InUse { path: PathBuf },
    #[error("{path}: does not exist")]
    Missing { path: PathBuf },
    #[error("{path}: permission denied")]
    Denied { path: PathBuf },
    #[error("{path}: {what} failed: {errno}")]
    Ioctl {
        path: PathBuf,
        what: &'static str,
        errno: Errno,
    },
    #[error("{path}: API version {found}, expected {expected}")]
    Version {
        path: PathBuf,
        found: i32,
        expected: i32,
    },
}

fn open_error(path: &Path, e: &std::io::Error) -> VfioError {
    let p = path.to_path_buf();
    match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::EBUSY => VfioError::InUse { path: p },
        Errno::ENOENT => VfioError::Missing { path: p },
        Errno::EACCES | Errno::EPERM => VfioError::Denied { path: p },
        errno => VfioError::Ioctl {
            path: p,
            what: "open",
            errno,
        },
    }
}

/// Opens `/dev/vfio/N` and asks the kernel for the group's status. A group node that is
/// already open elsewhere fails the open with EBUSY: [`VfioError::InUse`].
pub fn group_status(path: &Path) -> Result<GroupStatus, VfioError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| open_error(path, &e))?;
    let mut st = ioctl::VfioGroupStatus {
        argsz: std::mem::size_of::<ioctl::VfioGroupStatus>() as u32,
        flags: 0,
    };
    // SAFETY: the fd is open for the whole call and `st` is a valid, correctly sized
    // `struct vfio_group_status` the kernel fills in.
    unsafe { ioctl::vfio_group_get_status(f.as_raw_fd(), &mut st) }.map_err(|errno| {
        VfioError::Ioctl {
            path: path.to_path_buf(),
            what: "VFIO_GROUP_GET_STATUS",
            errno,
        }
    })?;
    Ok(GroupStatus::from_flags(st.flags))
}

/// Opens the container node (`/dev/vfio/vfio`) and checks `VFIO_GET_API_VERSION`.
pub fn api_version(path: &Path) -> Result<i32, VfioError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| open_error(path, &e))?;
    // SAFETY: no argument; the fd is open for the call.
    let v = unsafe { ioctl::vfio_get_api_version(f.as_raw_fd()) }.map_err(|errno| {
        VfioError::Ioctl {
            path: path.to_path_buf(),
            what: "VFIO_GET_API_VERSION",
            errno,
        }
    })?;
    if v != ioctl::VFIO_API_VERSION {
        return Err(VfioError::Version {
            path: path.to_path_buf(),
            found: v,
            expected: ioctl::VFIO_API_VERSION,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decode() {
        assert_eq!(
            GroupStatus::from_flags(1),
            GroupStatus {
                viable: true,
                container_set: false
            }
        );
        assert_eq!(
            GroupStatus::from_flags(2),
            GroupStatus {
                viable: false,
                container_set: true
            }
        );
    }

    #[test]
    fn a_missing_node_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("7");
        assert_eq!(
            group_status(&p),
            Err(VfioError::Missing { path: p.clone() })
        );
    }

    #[test]
    fn an_ioctl_on_a_regular_file_is_an_ioctl_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("7");
        std::fs::write(&p, b"").unwrap();
        match group_status(&p) {
            Err(VfioError::Ioctl { what, .. }) => assert_eq!(what, "VFIO_GROUP_GET_STATUS"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
