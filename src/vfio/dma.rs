//! `VFIO_IOMMU_MAP_DMA` and `VFIO_IOMMU_UNMAP_DMA` on a type1 container: one call per window.
//!
//! Owns the two calls (the argument structs are the kernel's, from `vfio-bindings`) and the
//! errno meanings (EEXIST: overlaps a mapping; EINVAL:
//! outside the usable IOVA ranges or misaligned; ENOMEM/EPERM: locked-memory limit; ENOSPC:
//! no mappings left).

use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;

use super::container::{Container, VfioCallError, VFIO_BASE, VFIO_TYPE};

use vfio_bindings::bindings::vfio::{
    vfio_iommu_type1_dma_map as DmaMapArg, vfio_iommu_type1_dma_unmap as DmaUnmapArg,
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE,
};

nix::ioctl_write_ptr_bad!(
    vfio_iommu_map_dma,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 13),
    DmaMapArg
);
nix::ioctl_readwrite_bad!(
    vfio_iommu_unmap_dma,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 14),
    DmaUnmapArg
);

impl Container {
    /// Maps `size` bytes of this process's memory at `vaddr` read/write at `iova`.
    ///
    /// # Safety
    /// `vaddr..vaddr+size` must stay mapped in this process for as long as the mapping exists
    /// (the kernel pins those pages and devices may write them).
    pub unsafe fn map_dma(&self, iova: u64, size: u64, vaddr: u64) -> Result<(), VfioCallError> {
        let arg = DmaMapArg {
            argsz: std::mem::size_of::<DmaMapArg>() as u32,
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        };
        // SAFETY: `arg` is a valid `struct vfio_iommu_type1_dma_map`; the caller keeps the
        // memory mapped.
        unsafe { vfio_iommu_map_dma(self.as_fd().as_raw_fd(), &arg) }
            .map(drop)
            .map_err(|e| self.err("VFIO_IOMMU_MAP_DMA", e))
    }

    /// Unmaps `[iova, iova+size)`; returns how many bytes the kernel unmapped.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64, VfioCallError> {
        let mut arg = DmaUnmapArg {
            argsz: std::mem::size_of::<DmaUnmapArg>() as u32,
            flags: 0,
            iova,
            size,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid `struct vfio_iommu_type1_dma_unmap`; the fd is open.
        unsafe { vfio_iommu_unmap_dma(self.as_fd().as_raw_fd(), &mut arg) }
            .map_err(|e| self.err("VFIO_IOMMU_UNMAP_DMA", e))?;
        Ok(arg.size)
    }
}

/// What a failed map means, for messages.
pub fn map_errno_meaning(errno: Errno) -> &'static str {
    match errno {
        Errno::EEXIST => "the range overlaps an existing mapping",
        Errno::EINVAL => "the range is misaligned or outside the container's usable IOVA ranges",
        Errno::ENOMEM | Errno::EPERM => "the locked-memory limit (RLIMIT_MEMLOCK) is too low",
        Errno::ENOSPC => "the container has no DMA mappings left (dma_entry_limit)",
        Errno::EFAULT => "the backing memory is not mapped",
        _ => "the kernel refused the mapping",
    }
}
