//! The one side-effect seam: every change vfioctl makes to a host goes through [`Host`].
//!
//! The trait is deliberately narrow: each method is one kernel primitive (a sysfs write, a
//! chown, a module load, one ioctl), checked by reading back. Decisions about *what* to change
//! live in the planner; the order, journaling and undo live in `apply`. Two implementations:
//! [`linux::LinuxHost`] (the real host, under [`crate::host::Roots`]) and
//! [`simulated::SimKernel`] (an in-memory kernel following the same rules, with fault injection
//! and a recording of calls, for tests).

pub mod linux;
#[cfg(any(test, feature = "testing"))]
pub mod simulated;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::{PciDevice, Snapshot};
use crate::pci::PciAddress;
use crate::vfio::GroupStatus;

/// The driver-facing state of one PCI function: what the journal records before a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The bound driver (`driver` link), `None` when unbound.
    pub driver: Option<String>,
    /// `driver_override`, `None` when unset.
    pub driver_override: Option<String>,
}

/// Owner and permission bits of a `/dev/vfio/N` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOwner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (`0o600`).
    pub mode: u32,
}

impl NodeOwner {
    /// What devtmpfs gives a fresh group node: `crw------- root root` (vm-notes, "Bind").
    pub const KERNEL_DEFAULT: NodeOwner = NodeOwner {
        uid: 0,
        gid: 0,
        mode: 0o600,
    };
}

impl fmt::Display for NodeOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} {:04o}", self.uid, self.gid, self.mode)
    }
}

/// Why a primitive failed. Every message says what was attempted and on what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    #[error("{what}: {path}: {message}")]
    Io {
        what: String,
        path: String,
        /// `errno` when the kernel gave one.
        errno: Option<i32>,
        message: String,
    },
    #[error("{what} did not return within {secs:.1}s; the kernel may still complete it")]
    Timeout {
        what: String,
        secs: f64,
        /// The process left blocked in the kernel with the write, when there is one.
        writer: Option<u32>,
    },
    #[error("{what}: expected {expected}, the kernel reports {found}")]
    NotConverged {
        what: String,
        expected: String,
        found: String,
    },
    #[error("{device}: not touched: an earlier {what} has not returned and may still hold it")]
    Stuck { device: PciAddress, what: String },
    #[error("no PCI function {0} on this host")]
    NoSuchDevice(PciAddress),
    #[error(
        "{what}: {pf} already has {current} VFs; the kernel needs 0 before a new count (EBUSY)"
    )]
    SriovBusy {
        what: String,
        pf: PciAddress,
        current: u32,
    },
    #[error("/dev/vfio/{group} did not appear within {secs:.1}s")]
    NodeMissing { group: u32, secs: f64 },
    #[error("/dev/vfio/{group} is in use by another process (EBUSY)")]
    GroupInUse { group: u32 },
    #[error("module {name}: {message}")]
    Module { name: String, message: String },
    #[error("reading the host failed: {0}")]
    Scan(String),
    #[error("injected fault at call {call} ({what})")]
    Injected { call: usize, what: String },
    #[error("the host stopped responding (simulated crash) before {what}")]
    Crashed { what: String },
}

impl KernelError {
    /// Builds an `Io` error from a std error.
    pub fn io(what: impl Into<String>, path: impl fmt::Display, e: &std::io::Error) -> Self {
        KernelError::Io {
            what: what.into(),
            path: path.to_string(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

/// The side-effect seam. Every method is one primitive; implementations check every write by
/// reading it back and report a mismatch as [`KernelError::NotConverged`].
pub trait Host: Send + Sync {
    /// The whole host, as the scanner reads it.
    fn snapshot(&self) -> Result<Snapshot, KernelError>;
    /// Only the part of the host a decision about `seeds` depends on (their closure, see
    /// [`crate::host::partial`]); a partial snapshot. By default cut from [`Host::snapshot`];
    /// the live host reads only that part.
    fn snapshot_of(&self, seeds: &[PciAddress]) -> Result<Snapshot, KernelError> {
        self.snapshot()
            .map(|s| crate::host::partial::restrict(&s, seeds))
    }
    /// One function's driver and override.
    fn device_state(&self, dev: PciAddress) -> Result<DeviceState, KernelError>;
    /// One function as a scan sees it: identity, driver, override, and what the host uses it
    /// for (interfaces, disks, boot console, root device, and what cannot be told), read for
    /// it alone. What a decision about one function ahead of a pass needs (the early claim).
    fn function(&self, dev: PciAddress) -> Result<PciDevice, KernelError>;
    /// One function's identity only: ids, class, driver link, override and `boot_vga`, and in
    /// its usage only what those prove (the boot console); nothing about interfaces, disks,
    /// mounts or `root=` is read. The early claim's first read, which races the probe: when
    /// [`crate::host::scan::usage::needs_usage_read`] says the rest can matter (a driver is
    /// bound, or a storage controller may hold the root device), follow it with
    /// [`Host::function`]. By default the full read.
    fn function_identity(&self, dev: PciAddress) -> Result<PciDevice, KernelError> {
        self.function(dev)
    }
    /// A physical function's current `sriov_numvfs`.
    fn num_vfs(&self, pf: PciAddress) -> Result<u32, KernelError>;
    /// The owner of `/dev/vfio/GROUP`, `None` when the node does not exist.
    fn node_owner(&self, group: u32) -> Result<Option<NodeOwner>, KernelError>;
    /// The VFs a physical function has now (`virtfn*`), in VF order.
    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError>;
    /// The IOMMU group of a function (`None` without an IOMMU).
    fn iommu_group(&self, dev: PciAddress) -> Result<Option<u32>, KernelError>;

    /// Writes `driver_override` (`None` clears it). Affects only the next probe.
    fn set_driver_override(&self, dev: PciAddress, driver: Option<&str>)
        -> Result<(), KernelError>;
    /// Unbinds the function from its driver; a no-op when it has none.
    fn unbind(&self, dev: PciAddress) -> Result<(), KernelError>;
    /// Asks the bus to probe the function (`drivers_probe`); returns the driver now bound,
    /// read from the `driver` link (the write succeeds even when nothing binds).
    fn probe(&self, dev: PciAddress) -> Result<Option<String>, KernelError>;
    /// Binds the function to one named driver (`drivers/NAME/bind`).
    fn bind(&self, dev: PciAddress, driver: &str) -> Result<(), KernelError>;
    /// Writes `sriov_numvfs`. The kernel refuses to change a non-zero count except to 0.
    fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<(), KernelError>;
    /// Sets owner and mode of `/dev/vfio/GROUP` and of the device cdevs
    /// (`/dev/vfio/devices/vfioN`, resolved now: numbers change on rebind) of the members that
    /// have one, waiting at most `wait` for them to appear.
    fn set_node_owner(
        &self,
        group: u32,
        owner: NodeOwner,
        wait: Duration,
    ) -> Result<(), KernelError>;
    /// Loads a kernel module (`vfio_pci`); a no-op when it is loaded.
    fn load_module(&self, name: &str) -> Result<(), KernelError>;
    /// Whether a kernel module is loaded (`/sys/module/NAME`).
    fn module_loaded(&self, name: &str) -> Result<bool, KernelError>;
    /// Unloads a module and the dependencies that leave unused (`modprobe -r`). Removing a
    /// driver's module unbinds every function on that driver: callers check
    /// [`Host::driver_devices`] first.
    fn unload_module(&self, name: &str) -> Result<(), KernelError>;
    /// The functions bound to a PCI driver now (`/sys/bus/pci/drivers/DRIVER/ADDR`).
    fn driver_devices(&self, driver: &str) -> Result<Vec<PciAddress>, KernelError>;
    /// Asks the kernel whether a group is viable (`VFIO_GROUP_GET_STATUS`).
    fn group_status(&self, group: u32) -> Result<GroupStatus, KernelError>;
    /// Whether a writer process abandoned by an earlier run (see [`KernelError::Timeout`]) is
    /// still blocked in the kernel.
    fn writer_blocked(&self, pid: u32) -> bool;
}
