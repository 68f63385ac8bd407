//! The early claim: when a function appears (the udev rule's `vfioctl udev-claim` at boot, the
//! `watch` hot-plug claimer on a kernel `add`), write the driver the config wants to its
//! `driver_override` before any driver probes it, so the module that loads next does not bind
//! it. Nothing else: binding, node ownership and everything the planner decides happen in the
//! pass that follows (the rule's `reconcile --device`, `watch`).
//!
//! Owns the decision and the write, over the [`Host`] seam (the write is
//! [`Host::set_driver_override`], checked by reading back):
//! 1. which driver the config wants ([`Config::wanted`], the planner's own answer);
//! 2. whether the function may be taken: the planner's safety rule
//!    ([`crate::plan::safety::in_use`]) on what can be known this early ([`Host::function`]:
//!    the boot VGA flag, the kernel command line's `root=`, what is mounted or up, and what
//!    cannot be read, which counts as "cannot tell"); refused unless the entry says
//!    `force = true`, and the refusal is written next to the records and logged;
//! 3. the record of the override it replaces ([`records`]), made before the write so a
//!    release gives back the real original, not our early write.
//!
//! Words: a *claim* is the planner's (a function the config wants on a driver,
//! `plan::claims`); an *early claim* is this write ahead of the pass; a *record* is what an
//! early claim leaves under the run directory.
//!
//! It must be fast (the hot-plug claimer races the kernel's probe, a few ms) and must never
//! make a boot worse: a function the config does not name costs no read at all when the event
//! carries its ids, and a named one costs one read of it and one write.

pub mod records;

use std::path::Path;

use serde::Serialize;

use crate::apply::journal::JournalError;
use crate::config::Config;
use crate::files;
use crate::kernel::{Host, KernelError};
use crate::pci::{FunctionIds, PciAddress};
use crate::plan::safety::{self, Verdict};

/// Why an early claim could not be made. Nothing was written when it fails (or, when the
/// write's read-back failed, the record keeps the original).
#[derive(Debug, thiserror::Error)]
pub enum EarlyClaimError {
    #[error("{0}")]
    Host(#[from] KernelError),
    #[error("recording the early claim failed: {0}")]
    Record(#[from] JournalError),
}

/// What [`early_claim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EarlyClaim {
    /// The config does not name the function.
    NotWanted,
    /// The override already names the wanted driver.
    AlreadySet { driver: String },
    /// The override was written; it replaced `previous` (`None`: unset). `forced` lists what
    /// the host uses the function for, taken anyway because of `force = true`.
    Written {
        driver: String,
        previous: Option<String>,
        forced: Vec<String>,
    },
    /// Not claimed: the host uses the function (or cannot tell) and its entry has no
    /// `force = true`. Written to [`refusal_path`] and logged.
    Refused {
        driver: String,
        entry: String,
        reasons: Vec<String>,
    },
}

/// Claims `address` for the driver `config` wants on it, if any. `ids` are the function's
/// ids when the caller has them (a uevent's `PCI_ID`...): then a function the config does not
/// name is answered without reading the host.
pub fn early_claim(
    host: &dyn Host,
    config: &Config,
    run_dir: &Path,
    address: PciAddress,
    ids: Option<&FunctionIds>,
) -> Result<EarlyClaim, EarlyClaimError> {
    if let Some(ids) = ids {
        if config.wanted(address, Some(ids)).is_none() {
            return Ok(EarlyClaim::NotWanted);
        }
    }
    let function = host.function(address)?;
    let Some(wanted) = config.wanted(address, Some(&function.ids())) else {
        return Ok(EarlyClaim::NotWanted);
    };
    let driver = wanted.driver();
    if function.driver_override.as_deref() == Some(driver) {
        return Ok(EarlyClaim::AlreadySet {
            driver: driver.to_string(),
        });
    }
    let forced = match safety::verdict(safety::in_use(&function, driver), wanted.spec.force) {
        Verdict::Free => Vec::new(),
        Verdict::Forced(reasons) => {
            tracing::warn!(
                device = %address,
                entry = %wanted.spec.name,
                "early claim takes a function the host may be using, because of force = true: {}",
                reasons.join("; ")
            );
            reasons
        }
        Verdict::Refused(reasons) => {
            tracing::warn!(
                device = %address,
                entry = %wanted.spec.name,
                "not claimed early: {}; set force = true in the entry to take it anyway",
                reasons.join("; ")
            );
            let refused = Refusal {
                device: address,
                entry: wanted.spec.name.clone(),
                driver: driver.to_string(),
                reasons: reasons.clone(),
            };
            if let Err(e) = write_refusal(run_dir, &refused) {
                tracing::warn!(device = %address, "the refusal could not be recorded: {e}");
            }
            return Ok(EarlyClaim::Refused {
                driver: driver.to_string(),
                entry: wanted.spec.name.clone(),
                reasons,
            });
        }
    };
    let previous = function.driver_override.clone();
    // The first early claim's record wins: a second `add` must not overwrite the original.
    let created = records::remember(run_dir, &address, previous.as_deref())?;
    if let Err(e) = host.set_driver_override(address, Some(driver)) {
        // A record we just made for a write that did not happen would make the function count
        // as taken: take it back when the override is surely unchanged (or the function gone).
        let unchanged = match host.device_state(address) {
            Ok(now) => now.driver_override == previous,
            Err(KernelError::NoSuchDevice(_)) => true,
            Err(_) => false,
        };
        if created && unchanged {
            let _ = files::remove_durable(&records::record_dir(run_dir), &address.to_string());
        }
        return Err(e.into());
    }
    let _ = files::remove_durable(&refusal_dir(run_dir), &address.to_string());
    Ok(EarlyClaim::Written {
        driver: driver.to_string(),
        previous,
        forced,
    })
}

/// Why an early claim was refused, as written to [`refusal_path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub device: PciAddress,
    pub entry: String,
    pub driver: String,
    pub reasons: Vec<String>,
}

/// `RUN_DIR/early-claims/refused`: one JSON file per function whose early claim was refused
/// (the latest refusal), removed when a later early claim of it is made.
pub fn refusal_dir(run_dir: &Path) -> std::path::PathBuf {
    records::record_dir(run_dir).join("refused")
}

/// Where the refusal of `address` is written.
pub fn refusal_path(run_dir: &Path, address: &PciAddress) -> std::path::PathBuf {
    refusal_dir(run_dir).join(address.to_string())
}

fn write_refusal(run_dir: &Path, refusal: &Refusal) -> Result<(), files::FileError> {
    let mut bytes = serde_json::to_vec_pretty(refusal).unwrap_or_default();
    bytes.push(b'\n');
    files::write_atomic_simple(
        &refusal_dir(run_dir),
        &refusal.device.to_string(),
        &bytes,
        0o644,
    )
}

#[cfg(test)]
mod tests;
