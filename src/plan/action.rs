//! The actions a plan holds: one host change each, with the value it replaces, so every action
//! knows its own undo. Owns their data, their JSON form and their inverse; nothing here decides
//! *whether* an action is needed (that is the planner's job) or performs it (that is apply's).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pci::PciAddress;

/// Permission bits of a device node, written in octal (`"0660"`) in JSON and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(|| serde::de::Error::custom(format!("bad file mode `{s}`")))
    }
}

/// Owner, group and mode of a `/dev/vfio/N` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: Mode,
}

impl Ownership {
    /// What the kernel gives a fresh group node: root:root 0600.
    pub const KERNEL_DEFAULT: Ownership = Ownership {
        uid: 0,
        gid: 0,
        mode: Mode(0o600),
    };
}

impl fmt::Display for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} {}", self.uid, self.gid, self.mode)
    }
}

/// One change to the host. The JSON form carries `action` (the kebab-case kind), `device` for
/// every action on a device, and `driver` for every action that hands a device to a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// `modprobe MODULE`, so that `driver` registers on the PCI bus.
    LoadModule { module: String, driver: String },
    /// Write `sriov_numvfs` of a physical function. The kernel refuses a change between two
    /// non-zero counts, so the planner always goes through 0.
    SetNumVfs {
        device: PciAddress,
        from: u32,
        to: u32,
    },
    /// Write `driver_override` (replacing `from`, `None` when it was unset).
    SetOverride {
        device: PciAddress,
        from: Option<String>,
        to: String,
    },
    /// Clear `driver_override` (write an empty line), replacing `from`.
    ClearOverride { device: PciAddress, from: String },
    /// Write the address to `/sys/bus/pci/drivers/FROM/unbind`. `from` is `None` for a function
    /// that does not exist yet (a VF to be created): unbind whatever probed it, if anything.
    Unbind {
        device: PciAddress,
        from: Option<String>,
    },
    /// Hand the function to `driver` (with the override set, `drivers_probe`; otherwise
    /// `drivers/DRIVER/bind`). Done only when the `driver` link says so.
    Bind { device: PciAddress, driver: String },
    /// Let the kernel pick a driver: `drivers_probe` with no override naming one (the release
    /// of a function claimed before any driver probed it, whose own driver is unknown).
    /// Whatever binds, or nothing, is the outcome.
    Probe { device: PciAddress },
    /// chown/chmod `/dev/vfio/GROUP` once it exists. `group` is `None` while the function's
    /// group is not known yet (a VF to be created): look it up from `device` when applying.
    /// `from` is `None` when the node does not exist yet (it appears root:root 0600).
    SetNodeOwner {
        device: PciAddress,
        group: Option<u32>,
        from: Option<Ownership>,
        to: Ownership,
    },
}

impl Action {
    /// The kebab-case kind, as in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::LoadModule { .. } => "load-module",
            Action::SetNumVfs { .. } => "set-num-vfs",
            Action::SetOverride { .. } => "set-override",
            Action::ClearOverride { .. } => "clear-override",
            Action::Unbind { .. } => "unbind",
            Action::Bind { .. } => "bind",
            Action::Probe { .. } => "probe",
            Action::SetNodeOwner { .. } => "set-node-owner",
        }
    }

    /// The function the action changes, when it changes one.
    pub fn device(&self) -> Option<PciAddress> {
        match self {
            Action::LoadModule { .. } => None,
            Action::SetNumVfs { device, .. }
            | Action::SetOverride { device, .. }
            | Action::ClearOverride { device, .. }
            | Action::Unbind { device, .. }
            | Action::Bind { device, .. }
            | Action::Probe { device }
            | Action::SetNodeOwner { device, .. } => Some(*device),
        }
    }

    /// The action that puts back what this one replaces, or `None` when there is nothing to put
    /// back (a loaded module stays loaded; an unbind of "whatever probed" a new VF; a node that
    /// did not exist before disappears with its last vfio member). A probe is undone by
    /// unbinding whatever it bound.
    pub fn undo(&self) -> Option<Action> {
        match self {
            Action::LoadModule { .. } => None,
            Action::SetNumVfs { device, from, to } => Some(Action::SetNumVfs {
                device: *device,
                from: *to,
                to: *from,
            }),
            Action::SetOverride { device, from, to } => Some(match from {
                Some(prev) => Action::SetOverride {
                    device: *device,
                    from: Some(to.clone()),
                    to: prev.clone(),
                },
                None => Action::ClearOverride {
                    device: *device,
                    from: to.clone(),
                },
            }),
            Action::ClearOverride { device, from } => Some(Action::SetOverride {
                device: *device,
                from: None,
                to: from.clone(),
            }),
            Action::Unbind { device, from } => from.as_ref().map(|d| Action::Bind {
                device: *device,
                driver: d.clone(),
            }),
            Action::Bind { device, driver } => Some(Action::Unbind {
                device: *device,
                from: Some(driver.clone()),
            }),
            Action::Probe { device } => Some(Action::Unbind {
                device: *device,
                from: None,
            }),
            Action::SetNodeOwner {
                device,
                group,
                from,
                to,
            } => from.map(|prev| Action::SetNodeOwner {
                device: *device,
                group: *group,
                from: Some(*to),
                to: prev,
            }),
        }
    }
}

/// Where a step runs: the unit whose steps must run one after another. Steps of different
/// units in the same batch are independent and may run in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Unit {
    /// Module loading, before anything that binds.
    Modules,
    /// Everything on the members of one IOMMU group, and its node.
    Group { group: u32 },
    /// The VF count of one physical function.
    Sriov { pf: PciAddress },
    /// A function that does not exist yet (a VF to be created): its group is pending.
    Pending { device: PciAddress },
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Modules => f.write_str("modules"),
            Unit::Group { group } => write!(f, "group {group}"),
            Unit::Sriov { pf } => write!(f, "SR-IOV of {pf}"),
            Unit::Pending { device } => write!(f, "{device} (group pending)"),
        }
    }
}

/// One planned action, where it runs, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    /// 1-based batch: every step of batch N runs after every step of batch N-1.
    pub batch: usize,
    pub unit: Unit,
    /// Why the planner wants this change.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn json_names_are_fixed() {
        let step = Step {
            action: Action::Bind {
                device: addr("0000:03:00.0"),
                driver: "vfio-pci".into(),
            },
            batch: 2,
            unit: Unit::Group { group: 7 },
            reason: "claimed".into(),
        };
        let v = serde_json::to_value(&step).unwrap();
        assert_eq!(v["action"], "bind");
        assert_eq!(v["device"], "0000:03:00.0");
        assert_eq!(v["driver"], "vfio-pci");
        assert_eq!(v["batch"], 2);
        let back: Step = serde_json::from_value(v).unwrap();
        assert_eq!(back, step);
    }

    #[test]
    fn undo_puts_back_what_was_replaced() {
        let d = addr("0000:03:00.0");
        let set = Action::SetOverride {
            device: d,
            from: None,
            to: "vfio-pci".into(),
        };
        assert_eq!(
            set.undo(),
            Some(Action::ClearOverride {
                device: d,
                from: "vfio-pci".into()
            })
        );
        let unbind = Action::Unbind {
            device: d,
            from: Some("e1000e".into()),
        };
        assert_eq!(
            unbind.undo(),
            Some(Action::Bind {
                device: d,
                driver: "e1000e".into()
            })
        );
        let vfs = Action::SetNumVfs {
            device: d,
            from: 0,
            to: 4,
        };
        assert_eq!(vfs.undo().and_then(|u| u.undo()), Some(vfs));
        let owner = Action::SetNodeOwner {
            device: d,
            group: Some(3),
            from: None,
            to: Ownership::KERNEL_DEFAULT,
        };
        assert_eq!(owner.undo(), None);
        assert_eq!(
            Action::Probe { device: d }.undo(),
            Some(Action::Unbind {
                device: d,
                from: None
            })
        );
    }

    #[test]
    fn probe_is_kebab_case_with_its_device() {
        let v = serde_json::to_value(Action::Probe {
            device: addr("0000:00:01.0"),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action": "probe", "device": "0000:00:01.0"})
        );
        assert_eq!(
            Action::Probe {
                device: addr("0000:00:01.0")
            }
            .kind(),
            "probe"
        );
    }

    #[test]
    fn mode_is_octal_text() {
        let o = Ownership {
            uid: 1000,
            gid: 36,
            mode: Mode(0o660),
        };
        let v = serde_json::to_value(o).unwrap();
        assert_eq!(v["mode"], "0660");
        let back: Ownership = serde_json::from_value(v).unwrap();
        assert_eq!(back, o);
    }
}
