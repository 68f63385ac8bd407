//! The desired state, after parsing and checking: what `/etc/vfio.toml` asks for, in normalised
//! form (addresses parsed, sizes in bytes, defaults filled in).
//!
//! Owns only the data. Parsing with locations lives in `parse`, the semantic checks in `check`.
//! The planner consumes this model and never sees TOML.

use crate::pci::{FunctionIds, PciAddress, PciClass, PciId};

/// The config format version this build understands.
pub const CONFIG_VERSION: u32 = 1;

/// Default target driver for a claimed device.
pub const DEFAULT_DRIVER: &str = "vfio-pci";

/// Where an entry was written (1-based), so later stages can point back at the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub line: usize,
    pub column: usize,
}

/// A whole, valid desired state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub version: u32,
    pub devices: Vec<DeviceSpec>,
    pub users: Vec<UserSpec>,
    pub sriov: Vec<SriovSpec>,
    pub domains: Vec<DomainSpec>,
}

/// How a `[[device]]` entry picks functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Exactly one function.
    Address(PciAddress),
    /// Every function with these ids (and, when given, these narrower fields).
    Ids {
        vendor: PciId,
        device: PciId,
        subsystem_vendor: Option<PciId>,
        subsystem_device: Option<PciId>,
        class: Option<PciClass>,
    },
}

impl Selector {
    /// Whether this selector picks the function at `address` with `ids`: the address, or the
    /// vendor and device ids with every narrower field that is given.
    pub fn matches(&self, address: PciAddress, ids: &FunctionIds) -> bool {
        match self {
            Selector::Address(a) => *a == address,
            Selector::Ids {
                vendor,
                device,
                subsystem_vendor,
                subsystem_device,
                class,
            } => {
                *vendor == ids.vendor
                    && *device == ids.device
                    && subsystem_vendor.map_or(true, |v| ids.subsystem_vendor == Some(v))
                    && subsystem_device.map_or(true, |v| ids.subsystem_device == Some(v))
                    && class.map_or(true, |c| ids.class == Some(c))
            }
        }
    }
}

/// A `[[device]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Unique logical name.
    pub name: String,
    pub selector: Selector,
    /// Target driver (`vfio-pci` or a vfio variant).
    pub driver: String,
    /// Other members of the IOMMU group the user consents to take.
    pub companions: Vec<PciAddress>,
    /// Take it even if the host is using it.
    pub force: bool,
    pub origin: Origin,
}

/// Who a `[[user]]` entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserRef {
    Name(String),
    Uid(u32),
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserRef::Name(n) => f.write_str(n),
            UserRef::Uid(u) => write!(f, "{u}"),
        }
    }
}

/// Who a `group = ...` names.
pub type GroupRef = UserRef;

/// A `[[user]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: UserRef,
    pub group: Option<GroupRef>,
    /// Permission bits for the group nodes (default 0o600, or 0o660 with a group).
    pub mode: u32,
    /// Names of `[[device]]` entries.
    pub devices: Vec<String>,
    /// Locked-memory budget in bytes.
    pub memlock: Option<u64>,
    pub origin: Origin,
}

/// A `[[sriov]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SriovSpec {
    pub pf: PciAddress,
    pub num_vfs: u32,
    pub origin: Origin,
}

/// How a domain's groups are placed in containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// All member groups in one container (mirrored into more only when the kernel refuses).
    #[default]
    Shared,
    /// One container per group, identical mappings.
    PerGroup,
}

/// A `[[domain]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: String,
    /// Names of `[[device]]` entries.
    pub devices: Vec<String>,
    pub placement: Placement,
    pub windows: Vec<WindowSpec>,
    pub origin: Origin,
}

/// A `[[domain.window]]`: an IOVA range the domain maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Optional name, for messages; defaults to `window N` (1-based).
    pub name: Option<String>,
    pub iova: u64,
    pub size: u64,
    /// Back the window with hugetlb pages.
    pub hugepages: bool,
    pub origin: Origin,
}

impl WindowSpec {
    /// Exclusive end; checked not to overflow by the semantic pass.
    pub fn end(&self) -> u64 {
        self.iova.saturating_add(self.size)
    }
}

impl Config {
    pub fn device(&self, name: &str) -> Option<&DeviceSpec> {
        self.devices.iter().find(|d| d.name == name)
    }
}
