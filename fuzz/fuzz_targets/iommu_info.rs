//! Fuzzes the `VFIO_IOMMU_GET_INFO` decoder: the `vfio_iommu_type1_info` header and its
//! capability chain (offsets, lengths and counts as the kernel, or a hostile one, fills them).
//! No input may panic or loop; every decoded range came from inside the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfioctl::vfio::iommu_info::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = decode(data) {
        if let Some(ranges) = &info.iova_ranges {
            // Each range is 16 bytes of the buffer.
            assert!(ranges.len() * 16 <= data.len());
            for r in ranges {
                let _ = r.contains(r.start, 4096);
            }
        }
        assert!(info.min_page_size().is_power_of_two());
    }
});
