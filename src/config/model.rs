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
    /// The file-wide `backend` (default `auto`): what domains without their own, and the
    /// cdev form of exports, follow.
    pub backend: BackendChoice,
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

/// Which kernel interface holds a domain: `backend = "auto" | "iommufd" | "legacy"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// iommufd where the kernel and every member support it (`/dev/iommu`, and a VFIO device
    /// cdev for every member on a vfio driver), else legacy.
    #[default]
    Auto,
    /// `/dev/iommu` with device cdevs; not realisable on a host without them.
    Iommufd,
    /// VFIO groups and type1 containers (`/dev/vfio/vfio`).
    Legacy,
}

impl BackendChoice {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Iommufd => "iommufd",
            BackendChoice::Legacy => "legacy",
        }
    }
}

/// A `[[domain]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    pub name: String,
    /// Names of `[[device]]` entries.
    pub devices: Vec<String>,
    pub placement: Placement,
    /// The entry's own `backend`, else the file-wide one (filled in by the checker).
    pub backend: BackendChoice,
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

impl DeviceSpec {
    /// The driver the entry's companions go to: always [`DEFAULT_DRIVER`] (the user consents
    /// to them being taken so the group is viable, not to a variant driver on them).
    pub fn companion_driver(&self) -> &'static str {
        DEFAULT_DRIVER
    }
}

/// How the config names a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// Its `[[device]]` selector picks it.
    Selected,
    /// It is in the entry's `companions`.
    Companion,
}

/// A function the config wants on a driver, and the entry that asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted<'c> {
    /// Index of the `[[device]]` entry.
    pub entry: usize,
    pub spec: &'c DeviceSpec,
    pub named: Named,
}

impl<'c> Wanted<'c> {
    /// The driver the config wants the function on.
    pub fn driver(&self) -> &'c str {
        match self.named {
            Named::Selected => &self.spec.driver,
            Named::Companion => self.spec.companion_driver(),
        }
    }
}

impl Config {
    pub fn device(&self, name: &str) -> Option<&DeviceSpec> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Which entry wants the function at `address` with `ids`, and for which driver: the first
    /// entry whose selector picks it, else the first that names it as a companion (the
    /// planner's order: a declared claim wins over a companion one). Without `ids` (a uevent
    /// that carried none) only addresses can match. The one answer to "does the config want
    /// this function": the early claim, `watch`'s relevance and the planner all ask here.
    pub fn wanted(&self, address: PciAddress, ids: Option<&FunctionIds>) -> Option<Wanted<'_>> {
        let selected = self.devices.iter().enumerate().find(|(_, spec)| match ids {
            Some(ids) => spec.selector.matches(address, ids),
            None => spec.selector == Selector::Address(address),
        });
        if let Some((entry, spec)) = selected {
            return Some(Wanted {
                entry,
                spec,
                named: Named::Selected,
            });
        }
        self.devices
            .iter()
            .enumerate()
            .find(|(_, spec)| spec.companions.contains(&address))
            .map(|(entry, spec)| Wanted {
                entry,
                spec,
                named: Named::Companion,
            })
    }

    /// The driver the config wants on the function, if it names it (see [`Config::wanted`]).
    pub fn wanted_driver(&self, address: PciAddress, ids: Option<&FunctionIds>) -> Option<&str> {
        self.wanted(address, ids).map(|w| w.driver())
    }
}
