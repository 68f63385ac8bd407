//! `VFIO_IOMMU_GET_INFO` for a type1 container: the supported page sizes and the capability
//! chain (usable IOVA ranges, available DMA mappings), decoded into a plain [`IommuInfo`].
//!
//! Owns the two-call protocol (ask, grow the buffer to the `argsz` the kernel wants, ask again)
//! and the pure decoder of the returned bytes, which is what the unit tests exercise.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::container::{VFIO_BASE, VFIO_TYPE};

use vfio_bindings::bindings::vfio as uapi;

/// `VFIO_IOMMU_INFO_PGSIZES`: `iova_pgsizes` is valid.
const INFO_PGSIZES: u32 = uapi::VFIO_IOMMU_INFO_PGSIZES;
/// `VFIO_IOMMU_INFO_CAPS`: `cap_offset` is valid.
const INFO_CAPS: u32 = uapi::VFIO_IOMMU_INFO_CAPS;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`.
const CAP_IOVA_RANGE: u16 = uapi::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`.
const CAP_MIGRATION: u16 = uapi::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION as u16;
/// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`.
const CAP_DMA_AVAIL: u16 = uapi::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16;

/// Size of `struct vfio_iommu_type1_info` (argsz, flags, iova_pgsizes, cap_offset, pad).
const INFO_HEADER: usize = std::mem::size_of::<uapi::vfio_iommu_type1_info>();
/// The largest reply we accept; the kernel's chain is a few hundred bytes.
const INFO_MAX: usize = 64 * 1024;

/// An IOVA range a container can map, end inclusive as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IovaRange {
    pub start: u64,
    pub end: u64,
}

impl IovaRange {
    /// Whether `[iova, iova+size)` lies wholly inside this range.
    pub fn contains(&self, iova: u64, size: u64) -> bool {
        if size == 0 {
            return iova >= self.start && iova <= self.end;
        }
        match iova.checked_add(size - 1) {
            Some(last) => iova >= self.start && last <= self.end,
            None => false,
        }
    }
}

/// What a type1 container tells about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuInfo {
    /// Bitmap of supported IOMMU page sizes (bit n set: 2^n bytes); 0 when not reported.
    pub page_sizes: u64,
    /// Usable IOVA ranges; `None` when the kernel gave no `CAP_IOVA_RANGE` (everything usable).
    pub iova_ranges: Option<Vec<IovaRange>>,
    /// DMA mappings still available (`CAP_DMA_AVAIL`); `None` on kernels without the cap.
    pub dma_avail: Option<u32>,
}

impl IommuInfo {
    /// The smallest supported IOMMU page size, 4 KiB when the kernel did not say.
    pub fn min_page_size(&self) -> u64 {
        if self.page_sizes == 0 {
            4096
        } else {
            1u64 << self.page_sizes.trailing_zeros()
        }
    }
}

/// Why a `VFIO_IOMMU_GET_INFO` reply could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoDecodeError {
    #[error("reply of {0} bytes is shorter than the fixed header")]
    Short(usize),
    #[error("capability at offset {offset} runs past the {len}-byte reply")]
    Truncated { offset: usize, len: usize },
    #[error("capability chain loops back to offset {0}")]
    Loop(usize),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes a `struct vfio_iommu_type1_info` and its capability chain from `bytes` (the
/// buffer the kernel filled, `argsz` long). Unknown capabilities are skipped.
pub fn decode(bytes: &[u8]) -> Result<IommuInfo, InfoDecodeError> {
    let len = bytes.len();
    let short = || InfoDecodeError::Short(len);
    let flags = u32_at(bytes, 4).ok_or_else(short)?;
    let pgsizes = u64_at(bytes, 8).ok_or_else(short)?;
    let cap_offset = u32_at(bytes, 16).ok_or_else(short)? as usize;
    let mut info = IommuInfo {
        page_sizes: if flags & INFO_PGSIZES != 0 {
            pgsizes
        } else {
            0
        },
        ..IommuInfo::default()
    };
    if flags & INFO_CAPS == 0 || cap_offset == 0 {
        return Ok(info);
    }
    let mut offset = cap_offset;
    let mut seen = Vec::new();
    while offset != 0 {
        if seen.contains(&offset) || offset < INFO_HEADER {
            return Err(InfoDecodeError::Loop(offset));
        }
        seen.push(offset);
        let truncated = InfoDecodeError::Truncated { offset, len };
        let id = u16_at(bytes, offset).ok_or(truncated.clone())?;
        let next = u32_at(bytes, offset + 4).ok_or(truncated.clone())? as usize;
        match id {
            CAP_IOVA_RANGE => {
                let n = u32_at(bytes, offset + 8).ok_or(truncated.clone())? as usize;
                let mut ranges = Vec::with_capacity(n.min(1024));
                for i in 0..n {
                    let at = offset + 16 + i * 16;
                    let start = u64_at(bytes, at).ok_or(truncated.clone())?;
                    let end = u64_at(bytes, at + 8).ok_or(truncated.clone())?;
                    ranges.push(IovaRange { start, end });
                }
                info.iova_ranges = Some(ranges);
            }
            CAP_DMA_AVAIL => {
                info.dma_avail = Some(u32_at(bytes, offset + 8).ok_or(truncated)?);
            }
            CAP_MIGRATION => {}
            _ => {}
        }
        offset = next;
    }
    Ok(info)
}

// VFIO_IOMMU_GET_INFO: _IO(VFIO_TYPE, VFIO_BASE + 12) with a `struct vfio_iommu_type1_info *`.
nix::ioctl_readwrite_bad!(
    vfio_iommu_get_info,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 12),
    u64
);

/// Asks the container (with its IOMMU set) for its info and capability chain.
pub fn query(container: BorrowedFd<'_>) -> Result<IommuInfo, QueryError> {
    // u64 words keep the buffer 8-byte aligned for the kernel's `__aligned_u64` fields.
    let mut words = INFO_HEADER / 8;
    loop {
        let mut buf = vec![0u64; words];
        let argsz = (words * 8) as u32;
        // argsz is the first u32 of the struct.
        buf[0] = if cfg!(target_endian = "little") {
            u64::from(argsz)
        } else {
            u64::from(argsz) << 32
        };
        // SAFETY: the fd stays open for the call; `buf` is `argsz` bytes, 8-aligned, and the
        // kernel writes at most `argsz` bytes into it.
        unsafe { vfio_iommu_get_info(container.as_raw_fd(), buf.as_mut_ptr()) }
            .map_err(QueryError::Ioctl)?;
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let wanted = u32_at(&bytes, 0).unwrap_or(argsz) as usize;
        if wanted > words * 8 {
            if wanted > INFO_MAX {
                return Err(QueryError::TooLarge(wanted));
            }
            words = wanted.div_ceil(8);
            continue;
        }
        return decode(&bytes).map_err(QueryError::Decode);
    }
}

/// Why [`query`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("VFIO_IOMMU_GET_INFO failed: {0}")]
    Ioctl(Errno),
    #[error("VFIO_IOMMU_GET_INFO asked for a {0}-byte buffer, more than vfioctl accepts")]
    TooLarge(usize),
    #[error("VFIO_IOMMU_GET_INFO reply: {0}")]
    Decode(InfoDecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reply(Vec<u8>);

    impl Reply {
        fn new(flags: u32, pgsizes: u64, cap_offset: u32) -> Self {
            let mut b = Vec::new();
            b.extend(0u32.to_ne_bytes());
            b.extend(flags.to_ne_bytes());
            b.extend(pgsizes.to_ne_bytes());
            b.extend(cap_offset.to_ne_bytes());
            b.extend(0u32.to_ne_bytes());
            Reply(b)
        }
        fn cap_header(&mut self, id: u16, next: u32) {
            self.0.extend(id.to_ne_bytes());
            self.0.extend(1u16.to_ne_bytes());
            self.0.extend(next.to_ne_bytes());
        }
        fn finish(mut self) -> Vec<u8> {
            let len = self.0.len() as u32;
            self.0[0..4].copy_from_slice(&len.to_ne_bytes());
            self.0
        }
    }

    /// The chain the VM's vIOMMU returned: ranges around the MSI hole, then DMA avail.
    fn vm_reply() -> Vec<u8> {
        let mut r = Reply::new(INFO_PGSIZES | INFO_CAPS, 0x4020_1000, 24);
        // IOVA range cap at 24: header(8) nr(4) reserved(4) 2 ranges (32) = 48 -> next at 72.
        r.cap_header(CAP_IOVA_RANGE, 72);
        r.0.extend(2u32.to_ne_bytes());
        r.0.extend(0u32.to_ne_bytes());
        for (s, e) in [(0u64, 0xfedf_ffffu64), (0xfef0_0000, 0x7f_ffff_ffff)] {
            r.0.extend(s.to_ne_bytes());
            r.0.extend(e.to_ne_bytes());
        }
        r.cap_header(CAP_DMA_AVAIL, 0);
        r.0.extend(65535u32.to_ne_bytes());
        r.0.extend(0u32.to_ne_bytes());
        r.finish()
    }

    #[test]
    fn decodes_the_chain_the_vm_reported() {
        let info = decode(&vm_reply()).unwrap();
        assert_eq!(info.page_sizes, 0x4020_1000);
        assert_eq!(info.min_page_size(), 4096);
        assert_eq!(info.dma_avail, Some(65535));
        let ranges = info.iova_ranges.unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].end, 0xfedf_ffff);
        assert_eq!(ranges[1].start, 0xfef0_0000);
    }

    #[test]
    fn without_caps_flag_the_chain_is_ignored() {
        let mut bytes = vm_reply();
        bytes[4..8].copy_from_slice(&INFO_PGSIZES.to_ne_bytes());
        let info = decode(&bytes).unwrap();
        assert_eq!(info.iova_ranges, None);
        assert_eq!(info.dma_avail, None);
    }

    #[test]
    fn a_truncated_range_list_is_an_error_not_a_panic() {
        let bytes = vm_reply();
        let err = decode(&bytes[..50]).unwrap_err();
        assert_eq!(
            err,
            InfoDecodeError::Truncated {
                offset: 24,
                len: 50
            }
        );
        assert_eq!(decode(&bytes[..10]), Err(InfoDecodeError::Short(10)));
    }

    #[test]
    fn a_looping_chain_is_refused() {
        let mut r = Reply::new(INFO_CAPS, 0, 24);
        r.cap_header(CAP_MIGRATION, 24);
        r.0.extend([0u8; 8]);
        assert_eq!(decode(&r.finish()), Err(InfoDecodeError::Loop(24)));
    }

    #[test]
    fn range_containment_is_inclusive_of_the_end_and_overflow_safe() {
        let r = IovaRange {
            start: 0x1000,
            end: 0x1fff,
        };
        assert!(r.contains(0x1000, 0x1000));
        assert!(!r.contains(0x1000, 0x1001));
        assert!(!r.contains(0xfff, 2));
        assert!(!r.contains(u64::MAX, 2));
    }
}
