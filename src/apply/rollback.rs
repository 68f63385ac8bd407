//! Putting things back: restoring recorded objects to what the journal says they were.
//!
//! Undo is by state, not by replaying inverse actions: each object is brought from whatever
//! it is now to its recorded state, so the same code serves an undo after a failed step (even
//! one that half-happened), recovery after a crash (where the last step may or may not have
//! taken effect) and `vfioctl rollback` (every taken object back to its original). Objects are
//! restored in reverse order of first change. A function that had a driver is only counted as
//! restored when the `driver` link names that driver again.

use std::path::Path;
use std::time::{Duration, Instant};

use super::commit;
use super::early_claim::records::{self, Records};
use super::journal::{
    Abandoned, Entry, InFlight, Journal, JournalError, LoadedModule, Object, Recorded,
};
use super::lock::{self, LockError};
use crate::host::is_vfio_driver;
use crate::kernel::{DeviceState, Host, KernelError};
use crate::plan::claims::KernelPick;

/// How long to wait for a node to appear when restoring its owner (it should exist already).
const NODE_WAIT: Duration = Duration::from_millis(200);

/// The outcome of restoring one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub object: Object,
    pub to: Recorded,
    /// `Ok(true)`: changed back; `Ok(false)`: already so (or gone with its PF); `Err`: failed.
    pub result: Result<bool, KernelError>,
}

/// What became of a module vfioctl loaded, when everything else was put back.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleOutcome {
    Unloaded,
    /// Already gone (someone unloaded it).
    AlreadyGone,
    /// Kept: these functions are on its driver (anyone's; unloading would unbind them).
    InUse(Vec<crate::pci::PciAddress>),
    Failed(KernelError),
}

/// One module's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleRestore {
    pub module: LoadedModule,
    pub outcome: ModuleOutcome,
}

/// What an undo, a recovery or a rollback did, object by object, then module by module.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UndoReport {
    pub restored: Vec<Restored>,
    /// Modules vfioctl had loaded (tried only once every object is back).
    pub modules: Vec<ModuleRestore>,
}

impl UndoReport {
    /// Every object is back.
    pub fn complete(&self) -> bool {
        self.restored.iter().all(|r| r.result.is_ok())
    }

    /// Objects that could not be put back, with why.
    pub fn failures(&self) -> Vec<(Object, Recorded, KernelError)> {
        self.restored
            .iter()
            .filter_map(|r| match &r.result {
                Err(e) => Some((r.object, r.to.clone(), e.clone())),
                Ok(_) => None,
            })
            .collect()
    }

    /// Human lines, one per object, then one per module.
    pub fn lines(&self) -> Vec<String> {
        let objects = self.restored.iter().map(|r| match &r.result {
            Ok(true) => format!("restored {} to {}", r.object, r.to),
            Ok(false) => format!("{} was already {}", r.object, r.to),
            Err(e) => format!("could NOT restore {} to {}: {e}", r.object, r.to),
        });
        let modules = self.modules.iter().map(|m| {
            let name = &m.module.module;
            match &m.outcome {
                ModuleOutcome::Unloaded => format!("unloaded module {name} (vfioctl loaded it)"),
                ModuleOutcome::AlreadyGone => format!("module {name} was already unloaded"),
                ModuleOutcome::InUse(devices) => format!(
                    "kept module {name}: {} still on {}",
                    devices
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    m.module.driver
                ),
                ModuleOutcome::Failed(e) => format!("could not unload module {name}: {e}"),
            }
        });
        objects.chain(modules).collect()
    }
}

/// Unloads the modules vfioctl loaded, newest first, each only when no function is on the
/// driver it registers: removing a driver's module unbinds every function on it, vfioctl's or
/// not. Call it once every object is back.
pub fn unload_modules(host: &dyn Host, modules: &[LoadedModule]) -> Vec<ModuleRestore> {
    modules
        .iter()
        .rev()
        .map(|m| {
            let outcome = match host.module_loaded(&m.module) {
                Ok(false) => ModuleOutcome::AlreadyGone,
                Err(e) => ModuleOutcome::Failed(e),
                Ok(true) => match host.driver_devices(&m.driver) {
                    Ok(d) if !d.is_empty() => ModuleOutcome::InUse(d),
                    Ok(_) => match host.unload_module(&m.module) {
                        Ok(()) => ModuleOutcome::Unloaded,
                        Err(e) => ModuleOutcome::Failed(e),
                    },
                    Err(e) => ModuleOutcome::Failed(e),
                },
            };
            tracing::info!(action = "unload-module", module = %m.module, outcome = ?outcome);
            ModuleRestore {
                module: m.clone(),
                outcome,
            }
        })
        .collect()
}

/// Brings `object` back to `to`. Returns whether anything was written.
pub fn restore(host: &dyn Host, object: &Object, to: &Recorded) -> Result<bool, KernelError> {
    match (object, to) {
        (Object::Device { device }, Recorded::Device(want)) => {
            let now = match host.device_state(*device) {
                Ok(s) => s,
                // A VF removed with its PF's count: nothing left to restore.
                Err(KernelError::NoSuchDevice(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            restore_device(host, *device, &now, want)
        }
        (Object::Device { device }, Recorded::Unprobed { driver_override }) => {
            let now = match host.device_state(*device) {
                Ok(s) => s,
                Err(KernelError::NoSuchDevice(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            restore_to_kernel_pick(host, *device, &now, driver_override.as_deref())
        }
        (Object::Sriov { pf }, Recorded::Sriov { num_vfs }) => {
            let now = match host.num_vfs(*pf) {
                Ok(n) => n,
                // A PF removed from the host (hot-unplug) takes its VFs with it.
                Err(KernelError::NoSuchDevice(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            if now == *num_vfs {
                return Ok(false);
            }
            if now != 0 && *num_vfs != 0 {
                host.set_num_vfs(*pf, 0)?;
            }
            host.set_num_vfs(*pf, *num_vfs)?;
            Ok(true)
        }
        (Object::Node { device }, Recorded::Node { owner }) => {
            let Some(want) = owner else {
                // There was no node: it goes away with its last vfio member.
                return Ok(false);
            };
            let group = match host.iommu_group(*device) {
                Ok(Some(g)) => g,
                Ok(None) | Err(KernelError::NoSuchDevice(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            match host.node_owner(group)? {
                Some(now) if now != *want => {
                    host.set_node_owner(group, *want, NODE_WAIT)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        (o, r) => Err(KernelError::NotConverged {
            what: format!("journal entry for {o}"),
            expected: "a record of the same kind".to_string(),
            found: r.to_string(),
        }),
    }
}

fn restore_device(
    host: &dyn Host,
    dev: crate::pci::PciAddress,
    now: &DeviceState,
    want: &DeviceState,
) -> Result<bool, KernelError> {
    if now == want {
        return Ok(false);
    }
    if now.driver != want.driver {
        host.unbind(dev)?;
        if let Some(drv) = &want.driver {
            // The override names the one driver the next probe may bind.
            host.set_driver_override(dev, Some(drv))?;
            let bound = host.probe(dev)?;
            if bound.as_deref() != Some(drv.as_str()) {
                return Err(KernelError::NotConverged {
                    what: format!("rebinding {dev} to {drv}"),
                    expected: drv.clone(),
                    found: bound.unwrap_or_else(|| "no driver".to_string()),
                });
            }
        }
    }
    if host.device_state(dev)?.driver_override != want.driver_override {
        host.set_driver_override(dev, want.driver_override.as_deref())?;
    }
    Ok(true)
}

/// Gives `dev` back to its original override and whatever driver the kernel picks then
/// (see [`KernelPick`]): override, unbind, plain probe.
fn restore_to_kernel_pick(
    host: &dyn Host,
    dev: crate::pci::PciAddress,
    now: &DeviceState,
    original: Option<&str>,
) -> Result<bool, KernelError> {
    let pick = KernelPick::needed(
        now.driver.as_deref(),
        now.driver_override.as_deref(),
        original,
    );
    if pick.set_override {
        host.set_driver_override(dev, original)?;
    }
    if pick.unbind {
        host.unbind(dev)?;
    }
    if pick.probe {
        let bound = host.probe(dev)?;
        if let Some(d) = bound.as_deref().filter(|d| is_vfio_driver(d)) {
            return Err(KernelError::NotConverged {
                what: format!("probe of {dev}"),
                expected: "a driver that is not a vfio driver (the kernel's pick)".to_string(),
                found: d.to_string(),
            });
        }
    }
    Ok(!pick.is_back())
}

/// Restores `entries` in reverse order, continuing past failures so as much as possible is
/// put back; every result is reported.
pub fn restore_all(host: &dyn Host, entries: &[Entry]) -> UndoReport {
    let mut report = UndoReport::default();
    for e in entries.iter().rev() {
        let t0 = Instant::now();
        let result = restore(host, &e.object, &e.was);
        match &result {
            Ok(changed) => tracing::info!(
                action = "restore",
                object = %e.object,
                to = %e.was,
                result = if *changed { "ok" } else { "unchanged" },
                ms = t0.elapsed().as_millis() as u64,
            ),
            Err(err) => tracing::error!(
                action = "restore",
                object = %e.object,
                to = %e.was,
                result = %err,
                ms = t0.elapsed().as_millis() as u64,
            ),
        }
        report.restored.push(Restored {
            object: e.object,
            to: e.was.clone(),
            result,
        });
    }
    report
}

/// Drops journal entries whose object is back at its original state (or gone).
pub fn forget_restored(host: &dyn Host, journal: &mut Journal) -> Result<bool, KernelError> {
    let mut keep = Vec::new();
    let mut changed = false;
    for e in std::mem::take(&mut journal.entries) {
        if is_at(host, &e.object, &e.was)? {
            changed = true;
        } else {
            keep.push(e);
        }
    }
    journal.entries = keep;
    Ok(forget_unloaded(host, journal)? || changed)
}

/// Drops the modules vfioctl loaded that are no longer loaded.
fn forget_unloaded(host: &dyn Host, journal: &mut Journal) -> Result<bool, KernelError> {
    let before = journal.modules.len();
    let mut keep = Vec::new();
    for m in std::mem::take(&mut journal.modules) {
        if host.module_loaded(&m.module)? {
            keep.push(m);
        }
    }
    journal.modules = keep;
    Ok(journal.modules.len() != before)
}

/// Like [`forget_restored`], judged from a snapshot just read instead of asking the host
/// object by object. A partial snapshot judges only the functions it covers; the host is asked
/// about the rest (a VF the pass removed is in no snapshot of what is there).
pub fn forget_restored_in(
    host: &dyn Host,
    snap: &crate::host::Snapshot,
    journal: &mut Journal,
) -> bool {
    let n = journal.entries.len();
    journal.entries.retain(|e| {
        let back = if snap.covered(e.object.function()) {
            is_at_in(snap, &e.object, &e.was)
        } else {
            is_at(host, &e.object, &e.was).unwrap_or(false)
        };
        !back
    });
    n != journal.entries.len()
}

/// Whether a function with this driver and override is back at `was`: exactly as recorded, or
/// for one claimed before any driver probed it, at its override and off vfio (the kernel's
/// pick).
fn device_back(driver: Option<&str>, driver_override: Option<&str>, was: &Recorded) -> bool {
    match was {
        Recorded::Device(s) => {
            driver == s.driver.as_deref() && driver_override == s.driver_override.as_deref()
        }
        Recorded::Unprobed {
            driver_override: original,
        } => KernelPick::needed(driver, driver_override, original.as_deref()).is_back(),
        _ => false,
    }
}

/// Whether `object` is in state `was` in `snap`.
pub fn is_at_in(snap: &crate::host::Snapshot, object: &Object, was: &Recorded) -> bool {
    match (object, was) {
        (Object::Device { device }, Recorded::Device(_) | Recorded::Unprobed { .. }) => {
            snap.device(*device).map_or(true, |d| {
                device_back(d.driver.as_deref(), d.driver_override.as_deref(), was)
            })
        }
        (Object::Sriov { pf }, Recorded::Sriov { num_vfs }) => snap.device(*pf).map_or(true, |d| {
            d.sriov.as_ref().map_or(0, |x| x.num_vfs) == *num_vfs
        }),
        (Object::Node { device }, Recorded::Node { owner }) => match owner {
            None => true,
            Some(o) => snap
                .device(*device)
                .and_then(|d| d.iommu_group)
                .and_then(|g| snap.group(g))
                .and_then(|g| g.node.as_ref())
                .map_or(true, |n| {
                    n.uid == o.uid && n.gid == o.gid && n.mode & 0o7777 == o.mode
                }),
        },
        _ => false,
    }
}

/// Whether `object` is in state `was` now (a vanished VF counts as given back).
pub fn is_at(host: &dyn Host, object: &Object, was: &Recorded) -> Result<bool, KernelError> {
    Ok(match (object, was) {
        (Object::Device { device }, Recorded::Device(_) | Recorded::Unprobed { .. }) => {
            match host.device_state(*device) {
                Ok(now) => device_back(now.driver.as_deref(), now.driver_override.as_deref(), was),
                Err(KernelError::NoSuchDevice(_)) => true,
                Err(e) => return Err(e),
            }
        }
        (Object::Sriov { pf }, Recorded::Sriov { num_vfs }) => match host.num_vfs(*pf) {
            Ok(n) => n == *num_vfs,
            Err(KernelError::NoSuchDevice(_)) => true,
            Err(e) => return Err(e),
        },
        (Object::Node { device }, Recorded::Node { owner }) => match owner {
            None => true,
            Some(o) => match host.iommu_group(*device) {
                Ok(Some(g)) => host.node_owner(g)?.map_or(true, |now| now == *o),
                Ok(None) | Err(KernelError::NoSuchDevice(_)) => true,
                Err(e) => return Err(e),
            },
        },
        _ => false,
    })
}

/// Why recovery or rollback could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{}: still blocked in the kernel; whatever holds the device (a VM, a user-space driver) must let it go first; nothing was changed", .0.iter().map(|a| format!("an earlier {} (writer pid {})", a.what, a.writer)).collect::<Vec<_>>().join(", "))]
    Blocked(Vec<Abandoned>),
}

/// Recovers from a pass that was interrupted (its in-flight record is still in `run_dir`):
/// restores what it touched to its pass-start state, then removes the record if everything is
/// back. Call with the pass lock held. `None` when there was nothing to recover.
pub fn recover(
    host: &dyn Host,
    state_dir: &Path,
    run_dir: &Path,
) -> Result<Option<(u32, UndoReport)>, RollbackError> {
    let Some(inflight) = InFlight::load(run_dir)? else {
        return Ok(None);
    };
    if let Some(forget) = &inflight.commit {
        // The pass was ending: the host is as it left it. Finish, never undo.
        tracing::warn!(
            pid = inflight.pid,
            "finishing the commit of an interrupted pass"
        );
        commit::finish(state_dir, run_dir, forget)?;
        return Ok(Some((inflight.pid, UndoReport::default())));
    }
    // Touching a function whose write is still blocked would block us too.
    let blocked: Vec<Abandoned> = inflight
        .abandoned
        .iter()
        .filter(|a| host.writer_blocked(a.writer))
        .cloned()
        .collect();
    if !blocked.is_empty() {
        return Err(RollbackError::Blocked(blocked));
    }
    tracing::warn!(
        pid = inflight.pid,
        objects = inflight.entries.len(),
        "recovering from an interrupted pass"
    );
    let mut report = restore_all(host, &inflight.entries);
    if report.complete() {
        report.modules = unload_modules(host, &inflight.modules);
        let journal = Journal::load(state_dir)?;
        let mut after = journal.clone();
        forget_restored(host, &mut after)?;
        commit::commit(state_dir, run_dir, Some(&inflight), &journal, &after, None)?;
    }
    Ok(Some((inflight.pid, report)))
}

/// What `vfioctl rollback` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollbackOutcome {
    /// An interrupted pass that was recovered first: its pid and report.
    pub recovered: Option<(u32, UndoReport)>,
    pub report: UndoReport,
    /// The modules the journal says vfioctl loaded (what a dry run would unload).
    pub modules: Vec<LoadedModule>,
}

/// `vfioctl rollback`: returns every object in the journal (with the early claims folded in:
/// [`records::fold`]) to its recorded original state, newest first, and forgets the ones
/// that are back, with their early-claim records. With `dry_run`, only lists them.
pub fn rollback(
    host: &dyn Host,
    state_dir: &Path,
    run_dir: &Path,
    lock_timeout: Duration,
    dry_run: bool,
) -> Result<(RollbackOutcome, Vec<Entry>), RollbackError> {
    let _lock = lock::acquire(run_dir, lock_timeout)?;
    let early = Records::load(run_dir)?;
    let mut journal = Journal::load(state_dir)?;
    records::fold(&mut journal, &early, &records::state_on(host));
    if dry_run {
        let outcome = RollbackOutcome {
            modules: journal.modules,
            ..RollbackOutcome::default()
        };
        return Ok((outcome, journal.entries));
    }
    let recovered = recover(host, state_dir, run_dir)?;
    let mut journal = Journal::load(state_dir)?;
    let folded = records::fold(&mut journal, &early, &records::state_on(host));
    if folded.changed {
        // The early claims become journal entries before anything is given back.
        journal.save(state_dir)?;
    }
    let entries = journal.entries.clone();
    let mut report = restore_all(host, &entries);
    if report.complete() {
        report.modules = unload_modules(host, &journal.modules);
    }
    let mut after = journal.clone();
    forget_restored(host, &mut after)?;
    commit::commit(state_dir, run_dir, None, &journal, &after, Some(&folded))?;
    let modules = report.modules.iter().map(|m| m.module.clone()).collect();
    Ok((
        RollbackOutcome {
            recovered,
            report,
            modules,
        },
        entries,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::simulated::{fixtures::vm_layout, Fault, SimKernel};
    use crate::kernel::NodeOwner;
    use crate::pci::PciAddress;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn take(k: &SimKernel, dev: &str) {
        k.set_driver_override(a(dev), Some("vfio-pci")).unwrap();
        k.unbind(a(dev)).unwrap();
        k.probe(a(dev)).unwrap();
    }

    fn dev_entry(k: &SimKernel, dev: &str) -> Entry {
        Entry {
            object: Object::Device { device: a(dev) },
            was: Recorded::Device(k.device_state(a(dev)).unwrap()),
        }
    }

    #[test]
    fn restore_brings_a_taken_device_back_to_its_driver() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let before = k.snapshot().unwrap();
        let e = dev_entry(&k, "0000:01:00.0");
        let n = Entry {
            object: Object::Node {
                device: a("0000:01:00.0"),
            },
            was: Recorded::Node { owner: None },
        };
        take(&k, "0000:01:00.0");
        k.set_node_owner(
            8,
            NodeOwner {
                uid: 1000,
                gid: 1000,
                mode: 0o600,
            },
            NODE_WAIT,
        )
        .unwrap();
        let r = restore_all(&k, &[e.clone(), n]);
        assert!(r.complete(), "{:?}", r.lines());
        assert_eq!(k.snapshot().unwrap(), before);
        // Restoring again writes nothing.
        let calls = k.call_count();
        assert!(restore_all(&k, &[e]).complete());
        assert_eq!(k.call_count(), calls);
    }

    #[test]
    fn restore_after_a_half_done_step() {
        // The unbind happened, the probe did not: the device is driverless.
        let k = SimKernel::from_snapshot(&vm_layout());
        let before = k.snapshot().unwrap();
        let e = dev_entry(&k, "0000:02:01.0");
        k.set_driver_override(a("0000:02:01.0"), Some("vfio-pci"))
            .unwrap();
        k.unbind(a("0000:02:01.0")).unwrap();
        assert!(restore_all(&k, &[e]).complete());
        assert_eq!(k.snapshot().unwrap(), before);
    }

    #[test]
    fn sriov_goes_back_through_zero() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let pf = a("0000:03:00.0");
        k.set_num_vfs(pf, 2).unwrap();
        let e = Entry {
            object: Object::Sriov { pf },
            was: Recorded::Sriov { num_vfs: 2 },
        };
        k.set_num_vfs(pf, 0).unwrap();
        k.set_num_vfs(pf, 4).unwrap();
        assert!(restore_all(&k, &[e]).complete());
        assert_eq!(k.num_vfs(pf).unwrap(), 2);
    }

    #[test]
    fn a_failed_restore_is_reported_and_the_rest_still_runs() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let e1 = dev_entry(&k, "0000:01:00.0");
        let e2 = dev_entry(&k, "0000:00:01.0");
        take(&k, "0000:01:00.0");
        take(&k, "0000:00:01.0");
        // Restores run newest first: e2's unbind is the next call.
        k.inject(k.call_count(), Fault::Fail);
        let r = restore_all(&k, &[e1, e2]);
        assert!(!r.complete());
        assert_eq!(r.failures().len(), 1);
        assert_eq!(
            k.device_state(a("0000:01:00.0")).unwrap().driver.as_deref(),
            Some("nvme")
        );
        assert!(r.lines()[0].contains("could NOT restore 0000:00:01.0"));
    }

    #[test]
    fn rollback_restores_every_journal_entry_and_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        let k = SimKernel::from_snapshot(&vm_layout());
        let before = k.snapshot().unwrap();
        let mut j = Journal::default();
        for d in ["0000:02:01.0", "0000:02:02.0"] {
            let e = dev_entry(&k, d);
            j.record(e.object, e.was);
        }
        j.save(&state).unwrap();
        take(&k, "0000:02:01.0");
        take(&k, "0000:02:02.0");
        let (dry, listed) = rollback(&k, &state, &run, Duration::ZERO, true).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(dry.report.restored.is_empty());
        let (out, _) = rollback(&k, &state, &run, Duration::ZERO, false).unwrap();
        assert!(out.report.complete());
        assert_eq!(k.snapshot().unwrap(), before);
        assert!(Journal::load(&state).unwrap().entries.is_empty());
    }

    #[test]
    fn recovery_restores_an_interrupted_pass_and_clears_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        let k = SimKernel::from_snapshot(&vm_layout());
        let before = k.snapshot().unwrap();
        let mut f = InFlight::new();
        let e = dev_entry(&k, "0000:01:00.0");
        f.record(e.object, e.was);
        f.save(&run).unwrap();
        k.set_driver_override(a("0000:01:00.0"), Some("vfio-pci"))
            .unwrap();
        k.unbind(a("0000:01:00.0")).unwrap();
        let (pid, r) = recover(&k, &state, &run).unwrap().unwrap();
        assert_eq!(pid, std::process::id());
        assert!(r.complete());
        assert_eq!(k.snapshot().unwrap(), before);
        assert_eq!(InFlight::load(&run).unwrap(), None);
        assert_eq!(recover(&k, &state, &run).unwrap(), None);
    }
}
