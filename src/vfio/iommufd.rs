//! iommufd (`/dev/iommu`) and VFIO device cdevs (`/dev/vfio/devices/vfioN`): the calls a held
//! domain on the iommufd backend makes (issue 19).
//!
//! IOAS allocation, map, unmap and object destruction go through `iommufd-ioctls` (its
//! `IommuFd`, over `iommufd-bindings`' structs). What those crates lack is declared here with
//! nix's macros, as `vfio::ioctl` does: `IOMMU_IOAS_IOVA_RANGES` (the usable IOVA ranges of an
//! IOAS) and the device cdev requests `VFIO_DEVICE_BIND_IOMMUFD`,
//! `VFIO_DEVICE_ATTACH_IOMMUFD_PT` and `VFIO_DEVICE_DETACH_IOMMUFD_PT` (structs from
//! `vfio-bindings`). Every failure is a [`VfioCallError`] naming the node and the request.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use iommufd_bindings::iommufd as uapi;
use iommufd_ioctls::{IommuFd, IommufdError};
use nix::errno::Errno;
use vfio_bindings::bindings::vfio as vfio_uapi;

use super::container::{open_rw, VfioCallError, VFIO_BASE, VFIO_TYPE};
use super::iommu_info::IovaRange;

// IOMMU_IOAS_IOVA_RANGES: _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES).
nix::ioctl_readwrite_bad!(
    iommu_ioas_iova_ranges,
    nix::request_code_none!(uapi::IOMMUFD_TYPE, uapi::IOMMUFD_CMD_IOAS_IOVA_RANGES),
    uapi::iommu_ioas_iova_ranges
);
// VFIO_DEVICE_BIND_IOMMUFD: _IO(VFIO_TYPE, VFIO_BASE + 18).
nix::ioctl_readwrite_bad!(
    vfio_device_bind_iommufd,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 18),
    vfio_uapi::vfio_device_bind_iommufd
);
// VFIO_DEVICE_ATTACH_IOMMUFD_PT: _IO(VFIO_TYPE, VFIO_BASE + 19).
nix::ioctl_readwrite_bad!(
    vfio_device_attach_iommufd_pt,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 19),
    vfio_uapi::vfio_device_attach_iommufd_pt
);
// VFIO_DEVICE_DETACH_IOMMUFD_PT: _IO(VFIO_TYPE, VFIO_BASE + 20).
nix::ioctl_write_ptr_bad!(
    vfio_device_detach_iommufd_pt,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 20),
    vfio_uapi::vfio_device_detach_iommufd_pt
);

/// `struct vfio_device_bind_iommufd` up to `out_devid`: what every kernel since 6.6 reads
/// (`vfio-bindings` has the later `token_uuid_ptr` too; a 6.12 kernel takes `argsz` 16).
const BIND_MINSZ: u32 = 16;
/// Most IOVA ranges accepted from the kernel (it reports a handful).
const MAX_RANGES: u32 = 4096;

/// The errno inside an `iommufd-ioctls` error.
fn errno_of(e: IommufdError) -> Errno {
    let raw = match e {
        IommufdError::IommuDestroy(s)
        | IommufdError::IommuIoasAlloc(s)
        | IommufdError::IommuIoasMap(s)
        | IommufdError::IommuIoasUnmap(s) => s.errno(),
        IommufdError::OpenIommufd(io) => io.raw_os_error().unwrap_or(0),
        _ => 0,
    };
    if raw == 0 {
        Errno::EIO
    } else {
        Errno::from_raw(raw)
    }
}

/// An open iommufd (`/dev/iommu`). Duplicates ([`Iommufd::try_clone`]) share its IOAS ids.
pub struct Iommufd {
    inner: IommuFd,
    path: PathBuf,
}

impl std::fmt::Debug for Iommufd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iommufd")
            .field("fd", &self.inner.as_raw_fd())
            .field("path", &self.path)
            .finish()
    }
}

impl Iommufd {
    /// Opens `/dev/iommu` (under the roots' `/dev`).
    pub fn open(path: &Path) -> Result<Self, VfioCallError> {
        Ok(Self::from_fd(open_rw(path)?, path.to_path_buf()))
    }

    /// Takes an already open iommufd (adopted from systemd's fd store).
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> Self {
        Iommufd {
            inner: IommuFd::new_from_fd(File::from(fd)),
            path,
        }
    }

    /// A second fd on the same iommufd (its IOAS ids stay valid through it).
    pub fn try_clone(&self) -> Result<Self, VfioCallError> {
        let fd = self
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| self.err("dup", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        Ok(Self::from_fd(fd, self.path.clone()))
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

    /// `IOMMU_IOAS_ALLOC`: a new, empty IOAS; its id.
    pub fn alloc_ioas(&self) -> Result<u32, VfioCallError> {
        let mut arg = uapi::iommu_ioas_alloc {
            size: std::mem::size_of::<uapi::iommu_ioas_alloc>() as u32,
            ..Default::default()
        };
        self.inner
            .alloc_iommu_ioas(&mut arg)
            .map_err(|e| self.err("IOMMU_IOAS_ALLOC", errno_of(e)))?;
        Ok(arg.out_ioas_id)
    }

    /// `IOMMU_DESTROY` of an object (an IOAS: its mappings go with it; EBUSY while a device
    /// is attached).
    pub fn destroy(&self, id: u32) -> Result<(), VfioCallError> {
        self.inner
            .destroy_iommu_object(id)
            .map_err(|e| self.err("IOMMU_DESTROY", errno_of(e)))
    }

    /// `IOMMU_IOAS_MAP` with `FIXED_IOVA | READABLE | WRITEABLE`: maps `size` bytes of this
    /// process's memory at `vaddr` to `iova` (the kernel pins them).
    ///
    /// # Safety
    /// `vaddr..vaddr+size` must be memory of this process that stays mapped while the IOVA
    /// range is mapped (the pins hold the pages; the process's mapping is what they came from).
    pub unsafe fn map(
        &self,
        ioas: u32,
        iova: u64,
        size: u64,
        vaddr: u64,
    ) -> Result<(), VfioCallError> {
        let flags = uapi::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA
            | uapi::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE
            | uapi::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
        let arg = uapi::iommu_ioas_map {
            size: std::mem::size_of::<uapi::iommu_ioas_map>() as u32,
            flags,
            ioas_id: ioas,
            __reserved: 0,
            user_va: vaddr,
            length: size,
            iova,
        };
        self.inner
            .map_iommu_ioas(&arg)
            .map_err(|e| self.err("IOMMU_IOAS_MAP", errno_of(e)))
    }

    /// `IOMMU_IOAS_UNMAP` of exactly `iova..iova+size` (ENOENT when nothing is mapped there);
    /// the bytes unmapped.
    pub fn unmap(&self, ioas: u32, iova: u64, size: u64) -> Result<u64, VfioCallError> {
        let mut arg = uapi::iommu_ioas_unmap {
            size: std::mem::size_of::<uapi::iommu_ioas_unmap>() as u32,
            ioas_id: ioas,
            iova,
            length: size,
        };
        self.inner
            .unmap_iommu_ioas(&mut arg)
            .map_err(|e| self.err("IOMMU_IOAS_UNMAP", errno_of(e)))?;
        Ok(arg.length)
    }

    /// `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges the IOAS may map (end inclusive) and the
    /// alignment every mapping needs. Asks again with room for as many as the kernel says.
    pub fn iova_ranges(&self, ioas: u32) -> Result<(Vec<IovaRange>, u64), VfioCallError> {
        let mut room: u32 = 8;
        loop {
            let mut ranges = vec![uapi::iommu_iova_range::default(); room as usize];
            let mut arg = uapi::iommu_ioas_iova_ranges {
                size: std::mem::size_of::<uapi::iommu_ioas_iova_ranges>() as u32,
                ioas_id: ioas,
                num_iovas: room,
                __reserved: 0,
                allowed_iovas: ranges.as_mut_ptr() as u64,
                out_iova_alignment: 0,
            };
            // SAFETY: `allowed_iovas` points at `num_iovas` writable ranges that outlive the
            // call; `arg` is a correctly sized struct; the fd is open.
            let r = unsafe { iommu_ioas_iova_ranges(self.inner.as_raw_fd(), &mut arg) };
            match r {
                Ok(_) => {
                    let n = (arg.num_iovas as usize).min(ranges.len());
                    let out = ranges[..n]
                        .iter()
                        .map(|r| IovaRange {
                            start: r.start,
                            end: r.last,
                        })
                        .collect();
                    return Ok((out, arg.out_iova_alignment));
                }
                Err(Errno::EMSGSIZE) if arg.num_iovas > room && arg.num_iovas <= MAX_RANGES => {
                    room = arg.num_iovas;
                }
                Err(e) => return Err(self.err("IOMMU_IOAS_IOVA_RANGES", e)),
            }
        }
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `inner` owns the fd and keeps it open for as long as `self` lives, which
        // bounds the borrow.
        unsafe { BorrowedFd::borrow_raw(self.inner.as_raw_fd()) }
    }
}

/// An open VFIO device cdev (`/dev/vfio/devices/vfioN`) of the function at `address`.
#[derive(Debug)]
pub struct DeviceFd {
    fd: OwnedFd,
    path: PathBuf,
    pub address: String,
}

impl DeviceFd {
    /// Opens the cdev (EBUSY while the device's group is open through the legacy API).
    pub fn open(path: &Path, address: &str) -> Result<Self, VfioCallError> {
        Ok(DeviceFd {
            fd: open_rw(path)?,
            path: path.to_path_buf(),
            address: address.to_string(),
        })
    }

    /// Takes an already open (bound and attached) device fd.
    pub fn from_fd(fd: OwnedFd, path: PathBuf, address: &str) -> Self {
        DeviceFd {
            fd,
            path,
            address: address.to_string(),
        }
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

    /// `VFIO_DEVICE_BIND_IOMMUFD`: binds the device to `iommufd` (EINVAL when this device is
    /// bound already, EPERM/EBUSY when its group is not viable or owned elsewhere); the
    /// device's id in the iommufd.
    pub fn bind(&self, iommufd: &Iommufd) -> Result<u32, VfioCallError> {
        let mut arg = vfio_uapi::vfio_device_bind_iommufd {
            argsz: BIND_MINSZ,
            flags: 0,
            iommufd: iommufd.as_fd().as_raw_fd(),
            out_devid: 0,
            token_uuid_ptr: 0,
        };
        // SAFETY: `arg` is a valid struct whose first `argsz` bytes the kernel reads and
        // updates; both fds are open for the call.
        unsafe { vfio_device_bind_iommufd(self.fd.as_raw_fd(), &mut arg) }
            .map_err(|e| self.err("VFIO_DEVICE_BIND_IOMMUFD", e))?;
        Ok(arg.out_devid)
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches the bound device to the IOAS (or page
    /// table) `pt_id`.
    pub fn attach(&self, pt_id: u32) -> Result<(), VfioCallError> {
        let mut arg = vfio_uapi::vfio_device_attach_iommufd_pt {
            argsz: std::mem::size_of::<vfio_uapi::vfio_device_attach_iommufd_pt>() as u32,
            flags: 0,
            pt_id,
            pasid: 0,
        };
        // SAFETY: `arg` is a correctly sized struct; the fd is open.
        unsafe { vfio_device_attach_iommufd_pt(self.fd.as_raw_fd(), &mut arg) }
            .map(drop)
            .map_err(|e| self.err("VFIO_DEVICE_ATTACH_IOMMUFD_PT", e))
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    pub fn detach(&self) -> Result<(), VfioCallError> {
        let arg = vfio_uapi::vfio_device_detach_iommufd_pt {
            argsz: std::mem::size_of::<vfio_uapi::vfio_device_detach_iommufd_pt>() as u32,
            flags: 0,
            pasid: 0,
        };
        // SAFETY: `arg` is a correctly sized struct; the fd is open.
        unsafe { vfio_device_detach_iommufd_pt(self.fd.as_raw_fd(), &arg) }
            .map(drop)
            .map_err(|e| self.err("VFIO_DEVICE_DETACH_IOMMUFD_PT", e))
    }
}

impl AsFd for DeviceFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_match_the_kernel_headers() {
        // linux/vfio.h: _IO(';', 100 + 18..20); linux/iommufd.h: _IO(';', 0x84).
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 18), 0x3b76);
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 19), 0x3b77);
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 20), 0x3b78);
        assert_eq!(
            nix::request_code_none!(uapi::IOMMUFD_TYPE, uapi::IOMMUFD_CMD_IOAS_IOVA_RANGES),
            0x3b84
        );
        assert_eq!(std::mem::size_of::<uapi::iommu_ioas_iova_ranges>(), 32);
        assert_eq!(std::mem::size_of::<uapi::iommu_iova_range>(), 16);
    }

    #[test]
    fn calls_on_a_plain_file_fail_with_the_request_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("iommu");
        std::fs::write(&p, b"").unwrap();
        let fd = Iommufd::open(&p).unwrap();
        let e = fd.alloc_ioas().unwrap_err();
        assert_eq!((e.what, e.errno), ("IOMMU_IOAS_ALLOC", Errno::ENOTTY));
        let e = fd.iova_ranges(1).unwrap_err();
        assert_eq!(e.what, "IOMMU_IOAS_IOVA_RANGES");
        let e = fd.unmap(1, 0, 4096).unwrap_err();
        assert_eq!(e.what, "IOMMU_IOAS_UNMAP");
        let dev = DeviceFd::open(&p, "0000:00:03.0").unwrap();
        let e = dev.bind(&fd).unwrap_err();
        assert_eq!(
            (e.what, e.errno),
            ("VFIO_DEVICE_BIND_IOMMUFD", Errno::ENOTTY)
        );
        let e = dev.attach(1).unwrap_err();
        assert_eq!(e.what, "VFIO_DEVICE_ATTACH_IOMMUFD_PT");
        let e = Iommufd::open(&dir.path().join("absent")).unwrap_err();
        assert_eq!((e.what, e.errno), ("open", Errno::ENOENT));
    }
}
