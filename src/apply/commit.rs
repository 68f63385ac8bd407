//! Ending a pass durably: one [`commit`] for every way a pass ends (applied and verified,
//! undone, recovered, rolled back, or nothing to do). It owns the order of the state-file
//! writes that end a pass, so that a crash between any two of them recovers correctly.
//!
//! Ending a pass touches up to three kinds of file: the journal of originals forgets the
//! objects that are back (released devices among them), the early-claim records of functions
//! no longer taken go, and the pass record (`inflight.json`) is cleared. Done one after the
//! other, a crash in between would leave a pass record whose undo puts a released function back
//! on vfio-pci while the journal has already forgotten its original. So the decision is written
//! first, in one atomic write: the pass record gains a [`Commit`] naming what is forgotten. From
//! then on the pass counts as done: a run that finds the record finishes the commit
//! ([`finish`]: forget, remove, clear; each step idempotent) instead of undoing the pass. A
//! crash before that write leaves the record as it was (the pass is undone, the journal still
//! holds every original); a crash after it is finished forward. Every intermediate state on disk
//! thus ends in the old host or the new one, with a journal that matches it.

use std::collections::BTreeSet;
use std::path::Path;

use super::early_claim::records::{self, Folded};
use super::journal::{self, Commit, InFlight, Journal, JournalError, Object};

/// Ends a pass. `pass` is the pass record to carry the commit (`None`: a fresh record, as
/// for a pass that changed nothing or a rollback; the pass's own entries are not needed once it
/// commits); `before` is the journal as on disk, `after` as it should be
/// (objects that are back forgotten); `folded` names the early-claim records the pass accounted
/// for, of which those whose function `after` no longer holds are removed.
///
/// With nothing to forget this is the removal of the pass record alone; otherwise the
/// decision is recorded first (see the module comment), then carried out by [`finish`].
pub fn commit(
    state_dir: &Path,
    run_dir: &Path,
    pass: Option<&InFlight>,
    before: &Journal,
    after: &Journal,
    folded: Option<&Folded>,
) -> Result<(), JournalError> {
    let forget = decide(before, after, folded);
    if forget.is_empty() {
        // Absent is fine (a pass that changed nothing): no write then.
        return InFlight::clear(run_dir);
    }
    let mut record = pass.cloned().unwrap_or_else(InFlight::new);
    record.commit = Some(forget.clone());
    record.save(run_dir)?;
    finish(state_dir, run_dir, &forget)
}

/// What ending the pass forgets: the difference between the two journals, and the accounted
/// early-claim records of functions `after` does not hold.
fn decide(before: &Journal, after: &Journal, folded: Option<&Folded>) -> Commit {
    let kept: BTreeSet<&Object> = after.entries.iter().map(|e| &e.object).collect();
    let objects = before
        .entries
        .iter()
        .map(|e| e.object)
        .filter(|o| !kept.contains(o))
        .collect();
    let modules = before
        .modules
        .iter()
        .filter(|m| !after.modules.contains(m))
        .cloned()
        .collect();
    let early_claims = folded
        .map(|f| {
            f.accounted
                .iter()
                .filter(|a| after.original(&Object::Device { device: **a }).is_none())
                .copied()
                .collect()
        })
        .unwrap_or_default();
    Commit {
        objects,
        modules,
        early_claims,
    }
}

/// Carries out a recorded commit: forgets its objects and modules in the journal, removes its
/// early-claim records, clears the pass record. Each step is idempotent, so a commit that was
/// interrupted anywhere is finished by running this again.
pub fn finish(state_dir: &Path, run_dir: &Path, forget: &Commit) -> Result<(), JournalError> {
    let mut journal = Journal::load(state_dir)?;
    let mut changed = false;
    for o in &forget.objects {
        changed |= journal.forget(o);
    }
    let n = journal.modules.len();
    journal.modules.retain(|m| !forget.modules.contains(m));
    changed |= journal.modules.len() != n;
    if changed {
        journal.save(state_dir)?;
    }
    let dir = records::record_dir(run_dir);
    for address in &forget.early_claims {
        journal::remove_state_file(&dir, &address.to_string())?;
    }
    InFlight::clear(run_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::journal::{file_faults, Recorded};
    use crate::kernel::DeviceState;
    use crate::pci::PciAddress;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn device(s: &str) -> Object {
        Object::Device { device: a(s) }
    }

    fn on(driver: &str) -> Recorded {
        Recorded::Device(DeviceState {
            driver: Some(driver.to_string()),
            driver_override: None,
        })
    }

    // A pass that released 01:00.0 (claimed early) and keeps 02:00.0: crash at every step of
    // every file operation of the commit, then let the next run look at the record.
    #[test]
    fn a_crash_anywhere_in_a_commit_leaves_undo_or_finish_never_a_mix() {
        let mut points = Vec::new();
        {
            // Count the operations of a commit without faults.
            let (dir, before, pass, folded) = setup();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let s = seen.clone();
            let _g = file_faults::arm(dir.path(), move |_, op| {
                s.lock().unwrap().push(op.clone());
                Ok(())
            });
            let after = released(&before);
            let (state, run) = (dir.path().join("state"), dir.path().join("run"));
            commit(&state, &run, Some(&pass), &before, &after, Some(&folded)).unwrap();
            points.extend(seen.lock().unwrap().iter().cloned());
        }
        // The pass record, the journal, one early-claim record, the pass record's removal.
        assert_eq!(
            points
                .iter()
                .filter(|p| !matches!(p, file_faults::FileOp::Write { .. }))
                .count(),
            2,
            "{points:?}"
        );
        for point in &points {
            let (dir, before, pass, folded) = setup();
            let (state, run) = (dir.path().join("state"), dir.path().join("run"));
            let after = released(&before);
            {
                let target = point.clone();
                let mut dead = false;
                let _g = file_faults::arm(dir.path(), move |_, op| {
                    if dead || *op == target {
                        dead = true;
                        return Err(file_faults::FileFault::Crash);
                    }
                    Ok(())
                });
                assert!(commit(&state, &run, Some(&pass), &before, &after, Some(&folded)).is_err());
            }
            // The next run: a record that carries the commit is finished, one that does not is
            // the pass to undo, with the journal and the early record untouched.
            match InFlight::load(&run).unwrap() {
                Some(InFlight {
                    commit: Some(c), ..
                }) => {
                    finish(&state, &run, &c).unwrap();
                    assert_eq!(InFlight::load(&run).unwrap(), None);
                    assert_eq!(Journal::load(&state).unwrap(), after, "{point:?}");
                    assert!(records::Records::load(&run).unwrap().is_empty());
                }
                Some(r) => {
                    assert_eq!(r, pass, "{point:?}");
                    assert_eq!(Journal::load(&state).unwrap(), before, "{point:?}");
                    assert!(!records::Records::load(&run).unwrap().is_empty());
                }
                None => {
                    // Only once everything else is done.
                    assert_eq!(Journal::load(&state).unwrap(), after, "{point:?}");
                    assert!(records::Records::load(&run).unwrap().is_empty());
                }
            }
        }
    }

    fn setup() -> (tempfile::TempDir, Journal, InFlight, Folded) {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        let mut j = Journal::default();
        j.record(device("0000:01:00.0"), on("nvme"));
        j.record(device("0000:02:00.0"), on("e1000e"));
        j.save(&state).unwrap();
        let mut pass = InFlight::new();
        pass.record(device("0000:01:00.0"), on("vfio-pci"));
        pass.save(&run).unwrap();
        records::remember(&run, &a("0000:01:00.0"), None).unwrap();
        let folded = Folded {
            changed: false,
            accounted: [a("0000:01:00.0")].into_iter().collect(),
        };
        (dir, j, pass, folded)
    }

    fn released(before: &Journal) -> Journal {
        let mut after = before.clone();
        after.forget(&device("0000:01:00.0"));
        after
    }

    #[test]
    fn nothing_to_forget_only_clears_the_pass_record() {
        let (dir, before, pass, _) = setup();
        let (state, run) = (dir.path().join("state"), dir.path().join("run"));
        let ops = std::sync::Arc::new(std::sync::Mutex::new(0));
        let n = ops.clone();
        let _g = file_faults::arm(dir.path(), move |_, _| {
            *n.lock().unwrap() += 1;
            Ok(())
        });
        commit(&state, &run, Some(&pass), &before, &before, None).unwrap();
        assert_eq!(*ops.lock().unwrap(), 1);
        assert_eq!(InFlight::load(&run).unwrap(), None);
        assert_eq!(Journal::load(&state).unwrap(), before);
    }
}
