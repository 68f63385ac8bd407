//! The claim table: for every function the plan may touch, the driver and override it should
//! end with and the config entry (or journal record) that asks for it. Owns declared claims,
//! driver conflicts between entries, and releases of functions vfioctl took earlier.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::host::{is_vfio_driver, PciDevice, Snapshot};
use crate::pci::PciAddress;

use super::problem::{Problem, ProblemKind};
use super::resolve::Resolution;
use super::Taken;

/// Why a function is claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Selected by the entry itself.
    Declared,
    /// Listed in the entry's `companions`.
    Companion,
}

/// A function the config wants on a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub driver: String,
    /// Index of the `[[device]]` entry in the config.
    pub entry: usize,
    pub role: Role,
    /// The function does not exist yet (a VF an SR-IOV change creates).
    pub pending: bool,
}

/// A function to give back to the driver vfioctl found it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub driver: Option<String>,
    pub driver_override: Option<String>,
    /// The original driver is unknown (claimed before any driver probed it): `driver` is
    /// `None` and the kernel picks one.
    pub driver_unknown: bool,
}

/// How a driver the kernel will pick reads where a driver name goes.
pub const KERNEL_PICK: &str = "(whatever the kernel picks)";

impl Release {
    /// The driver `dev` is on after its release: its original driver; for a function whose
    /// original is the kernel's pick, the driver it stays on when nothing needs probing, else
    /// [`KERNEL_PICK`] (not known here; counted as a driver that does DMA).
    pub fn final_driver<'a>(&'a self, dev: &'a PciDevice) -> Option<&'a str> {
        if !self.driver_unknown {
            return self.driver.as_deref();
        }
        let pick = KernelPick::needed(
            dev.driver.as_deref(),
            dev.driver_override.as_deref(),
            self.driver_override.as_deref(),
        );
        if pick.probe {
            Some(KERNEL_PICK)
        } else {
            dev.driver.as_deref()
        }
    }
}

/// What giving a function back to "whatever driver the kernel picks" takes, from its driver
/// and override now and its original override: the override put back; an unbind when it is on
/// a vfio driver, or on the driver the override being replaced named (it is there because of
/// us); a probe after either, so the kernel picks with the original override. It is back when
/// none is needed: its override is the original and it is not on a vfio driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelPick {
    pub set_override: bool,
    pub unbind: bool,
    pub probe: bool,
}

impl KernelPick {
    pub fn needed(driver: Option<&str>, over: Option<&str>, original: Option<&str>) -> Self {
        let set_override = over != original;
        let unbind = driver.is_some_and(|d| is_vfio_driver(d) || (set_override && over == Some(d)));
        KernelPick {
            set_override,
            unbind,
            probe: unbind || (set_override && driver.is_none()),
        }
    }

    /// Nothing to do: the function is back.
    pub fn is_back(&self) -> bool {
        *self == KernelPick::default()
    }
}

/// Every claim and release, and the entries that cannot be realised.
#[derive(Debug, Default)]
pub struct Claims {
    pub claims: BTreeMap<PciAddress, Claim>,
    pub releases: BTreeMap<PciAddress, Release>,
    /// Entries with a problem: none of their functions is planned.
    pub failed_entries: BTreeSet<usize>,
    pub problems: Vec<Problem>,
}

impl Claims {
    /// The functions of entry `i` (declared and companions).
    pub fn of_entry(&self, i: usize) -> impl Iterator<Item = (PciAddress, &Claim)> + '_ {
        self.claims
            .iter()
            .filter(move |(_, c)| c.entry == i)
            .map(|(a, c)| (*a, c))
    }

    pub fn fail_entry(&mut self, i: usize) {
        self.failed_entries.insert(i);
    }
}

/// Builds declared claims from the resolution; companions are added by `closure`.
pub fn declared(config: &Config, snap: &Snapshot, res: &Resolution) -> Claims {
    let mut out = Claims::default();
    for (i, (spec, found)) in config.devices.iter().zip(&res.entries).enumerate() {
        for a in found {
            if let Some(d) = snap.device(*a).filter(|d| d.bridge || d.class.is_bridge()) {
                out.problems.push(
                    Problem::new(
                        ProblemKind::Bridge,
                        format!(
                            "[[device]] `{}` selects {a}, a {} ({}:{}): vfio-pci does not take \
                             bridges, and a bridge on pcieport or on no driver does not stop \
                             VFIO from using the devices behind it; remove it from the entry",
                            spec.name,
                            d.class.name(),
                            d.vendor,
                            d.device
                        ),
                    )
                    .entry(&spec.name)
                    .device(*a),
                );
                out.fail_entry(i);
                continue;
            }
            let claim = Claim {
                driver: spec.driver.clone(),
                entry: i,
                role: Role::Declared,
                pending: res.pending.contains_key(a),
            };
            match out.claims.get(a) {
                None => {
                    out.claims.insert(*a, claim);
                }
                Some(prev) if prev.driver == claim.driver => {}
                Some(prev) => {
                    let other = &config.devices[prev.entry];
                    out.problems.push(
                        Problem::new(
                            ProblemKind::DriverConflict,
                            format!(
                                "{a} is claimed by [[device]] `{}` for {} and by [[device]] \
                                 `{}` for {}; make both entries name the same driver or \
                                 narrow one selector",
                                other.name, prev.driver, spec.name, spec.driver
                            ),
                        )
                        .entry(&spec.name)
                        .device(*a),
                    );
                    let prev_entry = prev.entry;
                    out.fail_entry(prev_entry);
                    out.fail_entry(i);
                }
            }
        }
    }
    out
}

/// Plans releases: functions vfioctl took (`taken`) that no entry names any more and that
/// still exist after the SR-IOV changes (a destroyed VF has nothing to give back).
pub fn releases(claims: &mut Claims, taken: &[Taken], snap: &Snapshot, res: &Resolution) {
    for t in taken {
        if claims.claims.contains_key(&t.address) || !res.survives(snap, t.address) {
            continue;
        }
        claims.releases.insert(
            t.address,
            Release {
                driver: t.original_driver.clone(),
                driver_override: t.original_override.clone(),
                driver_unknown: t.driver_unknown,
            },
        );
    }
}
