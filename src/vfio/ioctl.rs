//! The raw VFIO ioctl definitions we use: the kernel's `<linux/vfio.h>` constants and argument
//! structs come from `vfio-bindings` (bindgen output of the header, with layout assertions);
//! the request codes are declared here with nix's macros (the header's `_IO` requests are not
//! in the bindings).
//!
//! Owns only request codes and argument layouts; the safe wrappers live in `vfio/mod.rs`.

use vfio_bindings::bindings::vfio as uapi;

/// `VFIO_TYPE` (`';'`).
pub const VFIO_TYPE: u8 = uapi::VFIO_TYPE;
/// `VFIO_BASE`: all VFIO requests are `_IO(VFIO_TYPE, VFIO_BASE + n)`.
pub const VFIO_BASE: u32 = uapi::VFIO_BASE;
/// The API version every kernel since 3.6 reports (the ioctl returns it as an int).
pub const VFIO_API_VERSION: i32 = uapi::VFIO_API_VERSION as i32;

/// `VFIO_GROUP_FLAGS_VIABLE`.
pub const GROUP_FLAGS_VIABLE: u32 = uapi::VFIO_GROUP_FLAGS_VIABLE;
/// `VFIO_GROUP_FLAGS_CONTAINER_SET`.
pub const GROUP_FLAGS_CONTAINER_SET: u32 = uapi::VFIO_GROUP_FLAGS_CONTAINER_SET;

/// `struct vfio_group_status`.
pub use uapi::vfio_group_status as VfioGroupStatus;

// VFIO_GET_API_VERSION: _IO(VFIO_TYPE, VFIO_BASE + 0), no argument, returns the version.
nix::ioctl_none!(vfio_get_api_version, VFIO_TYPE, VFIO_BASE);

// VFIO_GROUP_GET_STATUS: _IO(VFIO_TYPE, VFIO_BASE + 3) with a `struct vfio_group_status *`.
// Declared `_IO` in the header although it passes a pointer, hence the `_bad` form.
nix::ioctl_readwrite_bad!(
    vfio_group_get_status,
    nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 3),
    VfioGroupStatus
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_match_the_kernel_header() {
        // _IO(';', 100) = 0x3b64 and _IO(';', 103) = 0x3b67 (linux/vfio.h).
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE), 0x3b64);
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 3), 0x3b67);
        assert_eq!(std::mem::size_of::<VfioGroupStatus>(), 8);
    }
}
