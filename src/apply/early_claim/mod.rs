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
//!    ([`crate::plan::safety::in_use`]) on what can be known this early: the identity first
//!    (the ids the `add` uevent carries with the driver link and override, [`Host::device_state`];
//!    without whole ids or for a display controller, [`Host::function_identity`]: ids, driver,
//!    override, the boot VGA flag), and only when
//!    more can matter ([`needs_usage_read`]: a driver is bound, or a storage controller may
//!    hold the root device) the full read ([`Host::function`]: the kernel command line's
//!    `root=`, what is mounted or up, and what cannot be read, which counts as "cannot
//!    tell"). An unbound function has no interfaces, disks or mounts, so on hot-plug the
//!    decision costs a few small reads. Refused unless the entry says
//!    `force = true`, and the refusal is written next to the records and logged;
//! 3. the record of the override it replaces ([`records`]), made before the write so a
//!    release gives back the real original, not our early write (one `link(2)` for an unset
//!    override; synced after the write; why this order, in [`records`]).
//!
//! Words: a *claim* is the planner's (a function the config wants on a driver,
//! `plan::claims`); an *early claim* is this write ahead of the pass; a *record* is what an
//! early claim leaves under the run directory.
//!
//! It must be fast (the hot-plug claimer races the kernel's probe, a few ms) and must never
//! make a boot worse: a function the config does not name costs no read at all when the event
//! carries its ids, and a named one costs a read of its identity (plus its usage when it has a
//! driver or is a storage controller) and one write.

pub mod records;

use std::path::Path;

use serde::Serialize;

use crate::apply::journal::JournalError;
use crate::config::Config;
use crate::files;
use crate::host::scan::usage::needs_usage_read;
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
    early_claim_timed(host, config, run_dir, address, ids).0
}

/// How long an early claim took: deciding (reads and the safety rule) and writing (the
/// record and the override), in microseconds; `write_us` is 0 when nothing was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimTimes {
    pub decide_us: u64,
    pub write_us: u64,
}

/// [`early_claim`], with how long its decision and its write took (the hot-plug claimer logs
/// them: the write must land before the kernel's probe).
pub fn early_claim_timed(
    host: &dyn Host,
    config: &Config,
    run_dir: &Path,
    address: PciAddress,
    ids: Option<&FunctionIds>,
) -> (Result<EarlyClaim, EarlyClaimError>, ClaimTimes) {
    let start = std::time::Instant::now();
    let mut times = ClaimTimes::default();
    let r = claim(host, config, run_dir, address, ids, start, &mut times);
    if times.decide_us == 0 {
        times.decide_us = start.elapsed().as_micros() as u64;
    }
    (r, times)
}

fn claim(
    host: &dyn Host,
    config: &Config,
    run_dir: &Path,
    address: PciAddress,
    ids: Option<&FunctionIds>,
    start: std::time::Instant,
    times: &mut ClaimTimes,
) -> Result<EarlyClaim, EarlyClaimError> {
    if let Some(ids) = ids {
        if config.wanted(address, Some(ids)).is_none() {
            return Ok(EarlyClaim::NotWanted);
        }
    }
    // The identity first: the config's answer and the override need nothing more, and
    // neither does safety for an unbound function that cannot hold the root device. Otherwise
    // the full read, with everything the host uses the function for.
    let identity = identity(host, address, ids)?;
    let Some(wanted) = config.wanted(address, Some(&identity.ids())) else {
        return Ok(EarlyClaim::NotWanted);
    };
    let driver = wanted.driver();
    if identity.driver_override.as_deref() == Some(driver) {
        return Ok(EarlyClaim::AlreadySet {
            driver: driver.to_string(),
        });
    }
    let function = if needs_usage_read(&identity) {
        let full = host.function(address)?;
        // Decided by what the full read saw: the config's answer and the override again.
        if config
            .wanted(address, Some(&full.ids()))
            .map(|w| w.driver())
            != Some(driver)
        {
            return Ok(EarlyClaim::NotWanted);
        }
        if full.driver_override.as_deref() == Some(driver) {
            return Ok(EarlyClaim::AlreadySet {
                driver: driver.to_string(),
            });
        }
        full
    } else {
        identity
    };
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
    let decided = std::time::Instant::now();
    times.decide_us = decided.duration_since(start).as_micros() as u64;
    let r = write(host, run_dir, address, driver, previous, forced);
    times.write_us = decided.elapsed().as_micros() as u64;
    r
}

/// The function's identity for the decision: from the ids the caller has (the kernel's `add`
/// uevent carries all of them) and its driver and override ([`Host::device_state`]: a link and
/// one small file), or, without whole ids or for a display controller (whose `boot_vga` counts),
/// from its own files ([`Host::function_identity`]).
fn identity(
    host: &dyn Host,
    address: PciAddress,
    ids: Option<&FunctionIds>,
) -> Result<crate::host::PciDevice, KernelError> {
    let whole = ids.filter(|i| {
        i.subsystem_vendor.is_some()
            && i.subsystem_device.is_some()
            && i.class.is_some_and(|c| !c.is_vga())
    });
    let Some(ids) = whole else {
        return host.function_identity(address);
    };
    let state = host.device_state(address)?;
    match crate::host::scan::pci::identity_of(
        address,
        ids,
        state.driver,
        state.driver_override,
        None,
    ) {
        Some(d) => Ok(d),
        None => host.function_identity(address),
    }
}

/// The record, then the override (checked by reading back), then the record made durable
/// ([`records::settle`], after the write: the write races the kernel's probe).
fn write(
    host: &dyn Host,
    run_dir: &Path,
    address: PciAddress,
    driver: &str,
    previous: Option<String>,
    forced: Vec<String>,
) -> Result<EarlyClaim, EarlyClaimError> {
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
    if let Err(e) = records::settle(run_dir) {
        tracing::warn!(device = %address, "the early-claim record could not be synced: {e}");
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
