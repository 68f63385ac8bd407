//! The VFIO ioctls vfioctl uses, as safe functions over our own nix declarations.

pub mod container;
pub mod dma;
pub mod iommu_info;
