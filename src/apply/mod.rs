//! Running a plan through the [`crate::kernel::Host`] seam: in order, journaled before each
//! change, verified after, undone on failure, one pass at a time.
//!
//! [`reconcile`] is the whole story in one function: lock → recover an interrupted pass →
//! read the host → plan (with the journal's record of what was taken, early claims folded in)
//! → apply inside a transaction (journal before each change; on failure undo in reverse) →
//! verify (read again, plan again, ask the kernel) → commit (forget what was given back, with
//! its early-claim record; clear the pass record).

pub mod commit;
pub mod early_claim;
pub mod executor;
pub mod journal;
pub mod lock;
pub mod rollback;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::kernel::{Host, KernelError};
use crate::pci::PciAddress;
use crate::plan::{self, Accounts, Context, Plan, Taken};

use early_claim::records::{self, Records};
pub use executor::{ExecOptions, StepFailure, StepRecord};
use journal::{InFlight, Journal, JournalError};
use lock::LockError;
use rollback::{RollbackError, UndoReport};
pub use verify::Verification;

/// Everything a reconcile pass needs besides the host and the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub lock_timeout: Duration,
    pub exec: ExecOptions,
    pub accounts: Accounts,
    /// Reconcile only this function and its group closure.
    pub scope: Option<PciAddress>,
}

impl Options {
    pub fn new(state_dir: PathBuf, run_dir: PathBuf) -> Self {
        Options {
            state_dir,
            run_dir,
            lock_timeout: Duration::from_secs(10),
            exec: ExecOptions::default(),
            accounts: Accounts::default(),
            scope: None,
        }
    }
}

/// What a successful pass did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// An interrupted earlier pass that was restored first: its pid and what was put back.
    pub recovered: Option<(u32, UndoReport)>,
    /// The plan that was applied, with the problems that kept parts of the config out.
    pub plan: Plan,
    pub executed: Vec<StepRecord>,
    /// `None` when there was nothing to do.
    pub verification: Option<Verification>,
    /// The host as the pass leaves it: what the pass read before changing it, with what
    /// verification re-read over the functions it changed ([`crate::host::partial::overlay`]).
    /// Partial (`covers`) for a scoped pass. What follows a pass (the CDI spec) reads this
    /// instead of the host again.
    pub after: crate::host::Snapshot,
}

/// Why a pass did not complete. The failures that happen after changes began carry the undo
/// report: both the failure and what was put back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("reading the host failed: {0}")]
    Read(KernelError),
    #[error(
        "an interrupted pass (pid {pid}) could not be fully restored; nothing new was applied"
    )]
    RecoveryIncomplete { pid: u32, report: UndoReport },
    #[error("applying failed: {failure}")]
    Failed {
        failure: Box<StepFailure>,
        executed: Vec<StepRecord>,
        undo: UndoReport,
    },
    #[error("the host did not converge after applying")]
    NotConverged {
        verification: Box<Verification>,
        undo: UndoReport,
    },
    #[error("verification could not read the host: {error}")]
    VerifyRead {
        error: Box<KernelError>,
        undo: UndoReport,
    },
    #[error(transparent)]
    Blocked(RollbackError),
}

impl From<RollbackError> for ApplyError {
    fn from(e: RollbackError) -> Self {
        match e {
            RollbackError::Lock(e) => ApplyError::Lock(e),
            RollbackError::Journal(e) => ApplyError::Journal(e),
            RollbackError::Kernel(e) => ApplyError::Read(e),
            e @ RollbackError::Blocked(_) => ApplyError::Blocked(e),
        }
    }
}

impl ApplyError {
    /// The undo that followed, when changes had begun.
    pub fn undo(&self) -> Option<&UndoReport> {
        match self {
            ApplyError::Failed { undo, .. }
            | ApplyError::NotConverged { undo, .. }
            | ApplyError::VerifyRead { undo, .. } => Some(undo),
            ApplyError::RecoveryIncomplete { report, .. } => Some(report),
            _ => None,
        }
    }

    /// Every line a person needs: the failure, what did not converge, and the undo.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![self.to_string()];
        if let ApplyError::NotConverged { verification, .. } = self {
            out.extend(
                verification
                    .problems()
                    .into_iter()
                    .map(|l| format!("  {l}")),
            );
        }
        if let Some(u) = self.undo() {
            if u.restored.is_empty() {
                out.push("undo: nothing had changed".to_string());
            } else if u.complete() {
                out.push("undo: every change was put back:".to_string());
            } else {
                out.push(
                    "undo: NOT everything could be put back (run `vfioctl rollback` once the cause is fixed):"
                        .to_string(),
                );
            }
            out.extend(u.lines().into_iter().map(|l| format!("  {l}")));
        }
        out
    }
}

/// The planner's view of what vfioctl took earlier, from the journal (with the early claims
/// folded in: [`records::fold`]).
pub fn taken(journal: &Journal) -> Vec<Taken> {
    journal
        .taken_devices()
        .filter_map(|(address, was)| match was {
            journal::Recorded::Device(s) => Some(Taken {
                address,
                original_driver: s.driver.clone(),
                original_override: s.driver_override.clone(),
                driver_unknown: false,
            }),
            journal::Recorded::Unprobed { driver_override } => Some(Taken {
                address,
                original_driver: None,
                original_override: driver_override.clone(),
                driver_unknown: true,
            }),
            _ => None,
        })
        .collect()
}

/// The PFs whose VF count vfioctl changed, with the count they had, from the journal.
pub fn taken_vfs(journal: &Journal) -> Vec<plan::TakenVfs> {
    journal
        .entries
        .iter()
        .filter_map(|e| match (&e.object, &e.was) {
            (journal::Object::Sriov { pf }, journal::Recorded::Sriov { num_vfs }) => {
                Some(plan::TakenVfs {
                    pf: *pf,
                    original_num_vfs: *num_vfs,
                })
            }
            _ => None,
        })
        .collect()
}

/// What vfioctl took ([`taken`]) and the VF counts it changed ([`taken_vfs`]), as a pass on
/// `observed` would see them, without changing anything: the journal with the early-claim
/// records folded in. For showing a plan.
pub fn load_context(
    state_dir: &std::path::Path,
    run_dir: &std::path::Path,
    observed: &crate::host::Snapshot,
) -> Result<(Vec<Taken>, Vec<plan::TakenVfs>), JournalError> {
    let mut journal = Journal::load(state_dir)?;
    let early = Records::load(run_dir)?;
    records::fold(&mut journal, &early, &records::state_in(observed));
    Ok((taken(&journal), taken_vfs(&journal)))
}

/// Whether a pass changes the host or only shows what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lock, recover an interrupted pass, fold early claims into the journal (saved).
    Apply,
    /// Change nothing, no lock: the journal and early claims are read as a pass would see
    /// them. For `reconcile --dry-run`.
    Preview,
}

/// What a pass starts from: the front half of the story, shared by the real run and the dry
/// run ([`prepare`]).
#[derive(Debug)]
pub struct Prepared {
    /// Held until the pass ends (`Mode::Apply` only).
    _lock: Option<lock::PassLock>,
    /// An interrupted earlier pass that was restored first.
    pub recovered: Option<(u32, UndoReport)>,
    /// The host as it is (the scope's closure only, for a scoped pass).
    pub observed: crate::host::Snapshot,
    journal: Journal,
    folded: records::Folded,
    /// What the planner was told: the journal's taken devices, accounts, scope.
    pub context: Context,
    pub plan: Plan,
}

/// lock → recover an interrupted pass → read the host (the scope's closure only, for a
/// scoped pass) → load the journal with the early claims folded in → plan. With
/// [`Mode::Preview`], no lock is taken and nothing is written.
pub fn prepare(
    host: &dyn Host,
    config: &Config,
    opts: &Options,
    mode: Mode,
) -> Result<Prepared, ApplyError> {
    let (lock, recovered) = match mode {
        Mode::Apply => {
            let lock = lock::acquire(&opts.run_dir, opts.lock_timeout)?;
            let recovered = rollback::recover(host, &opts.state_dir, &opts.run_dir)?;
            if let Some((pid, report)) = &recovered {
                if !report.complete() {
                    return Err(ApplyError::RecoveryIncomplete {
                        pid: *pid,
                        report: report.clone(),
                    });
                }
            }
            (Some(lock), recovered)
        }
        Mode::Preview => (None, None),
    };
    let early = Records::load(&opts.run_dir)?;
    let mut journal = Journal::load(&opts.state_dir)?;
    let observed = match opts.scope {
        Some(d) => host.snapshot_of(&[d]),
        None => host.snapshot(),
    }
    .map_err(ApplyError::Read)?;
    let folded = records::fold(&mut journal, &early, &records::state_in(&observed));
    if folded.changed && mode == Mode::Apply {
        journal.save(&opts.state_dir)?;
    }
    let context = Context {
        taken: taken(&journal),
        accounts: opts.accounts.clone(),
        scope: opts.scope,
        taken_vfs: taken_vfs(&journal),
    };
    let plan = plan::plan_with(config, &observed, &context);
    Ok(Prepared {
        _lock: lock,
        recovered,
        observed,
        journal,
        folded,
        context,
        plan,
    })
}

/// Makes the host match `config`: the whole apply story. Applies the realisable part of the
/// plan (the planner keeps a group whole or out); the plan's problems come back in the
/// outcome for the caller to report. A converged host costs reads only, no writes.
pub fn reconcile(host: &dyn Host, config: &Config, opts: &Options) -> Result<Outcome, ApplyError> {
    reconcile_then(host, config, opts, |_| {})
}

/// [`reconcile`], then `then` on the outcome of a pass that completed, while the pass still
/// holds the lock (so what `then` writes from the outcome, the CDI spec, takes turns with
/// other passes as the passes do). Not called when the pass failed.
pub fn reconcile_then(
    host: &dyn Host,
    config: &Config,
    opts: &Options,
    then: impl FnOnce(&Outcome),
) -> Result<Outcome, ApplyError> {
    let mut clock = Phases::start();
    let Prepared {
        _lock,
        recovered,
        journal,
        folded,
        mut context,
        plan,
        observed,
    } = prepare(host, config, opts, Mode::Apply)?;
    clock.lap("prepare");
    let mut outcome = Outcome {
        recovered,
        plan,
        executed: Vec::new(),
        verification: None,
        after: observed,
    };
    if outcome.plan.is_empty() {
        // Nothing to change, but what vfioctl took may have left on its own (a hot-unplugged
        // device, a VF removed with its PF): forget it, so the journal holds only the present.
        commit(host, opts, journal, &folded, None)?;
        clock.lap("commit");
        then(&outcome);
        clock.lap("after the pass");
        return Ok(outcome);
    }
    let plan = &outcome.plan;
    let (executed, verification) = transaction(host, opts, journal, &folded, |rec| {
        let (executed, failure) = executor::execute(host, rec, plan, &opts.exec);
        clock.lap("execute");
        if let Some(failure) = failure {
            return Err(Abort::Failed {
                failure: Box::new(failure),
                executed,
            });
        }
        context.taken = taken(&rec.journal());
        let verified = verify::verify(host, config, &context, plan);
        clock.lap("verify");
        match verified {
            Ok(v) if v.converged() => Ok((executed, v)),
            Ok(v) => Err(Abort::NotConverged(Box::new(v))),
            Err(e) => Err(Abort::VerifyRead(Box::new(e))),
        }
    })?;
    clock.lap("commit");
    outcome.after = crate::host::partial::overlay(&outcome.after, &verification.observed);
    outcome.executed = executed;
    outcome.verification = Some(verification);
    then(&outcome);
    clock.lap("after the pass");
    Ok(outcome)
}

/// Why a transaction's work stopped; [`transaction`] undoes the pass and turns it into an
/// [`ApplyError`] with the undo report.
enum Abort {
    Failed {
        failure: Box<StepFailure>,
        executed: Vec<StepRecord>,
    },
    NotConverged(Box<Verification>),
    VerifyRead(Box<KernelError>),
}

/// Runs one pass's changes as a transaction (nmstate's checkpoint): `work` changes the host
/// through the recorder (which journals each object before its first change) and verifies.
/// On success the pass is committed ([`commit`], with the host as verification read it); on
/// an abort every change is undone, newest first, and the error carries the undo report.
fn transaction(
    host: &dyn Host,
    opts: &Options,
    journal: Journal,
    folded: &records::Folded,
    work: impl FnOnce(&executor::Recorder) -> Result<(Vec<StepRecord>, Verification), Abort>,
) -> Result<(Vec<StepRecord>, Verification), ApplyError> {
    let rec = executor::Recorder::new(opts.state_dir.clone(), opts.run_dir.clone(), journal);
    let result = work(&rec);
    let (journal, inflight) = rec.into_parts();
    match result {
        Ok((executed, verification)) => {
            commit(host, opts, journal, folded, Some(&verification.observed))?;
            Ok((executed, verification))
        }
        Err(abort) => {
            let mut errors: Vec<KernelError> = match &abort {
                Abort::Failed { executed, .. } => executed
                    .iter()
                    .filter_map(|r| match &r.result {
                        Err(executor::StepError::Kernel(e)) => Some(e.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let undo = undo_pass(host, opts, &inflight)?;
            errors.extend(undo.failures().into_iter().map(|(_, _, e)| e));
            remember_abandoned(opts, inflight, &undo, &errors)?;
            Err(match abort {
                Abort::Failed { failure, executed } => ApplyError::Failed {
                    failure,
                    executed,
                    undo,
                },
                Abort::NotConverged(verification) => {
                    ApplyError::NotConverged { verification, undo }
                }
                Abort::VerifyRead(error) => ApplyError::VerifyRead { error, undo },
            })
        }
    }
}

/// Puts every object the pass touched back to its pass-start state, newest first. When all
/// are back, forgets journal entries that are at their original again and clears the pass
/// record; otherwise the record stays, and the next run retries.
fn undo_pass(
    host: &dyn Host,
    opts: &Options,
    inflight: &InFlight,
) -> Result<UndoReport, ApplyError> {
    let mut report = rollback::restore_all(host, &inflight.entries);
    if report.complete() {
        report.modules = rollback::unload_modules(host, &inflight.modules);
        let journal = Journal::load(&opts.state_dir)?;
        commit(host, opts, journal, &records::Folded::default(), None)?;
    }
    Ok(report)
}

/// After an incomplete undo, keeps the writers left blocked in the kernel in the pass record,
/// so the next run waits for them instead of blocking on the same functions.
fn remember_abandoned(
    opts: &Options,
    mut inflight: InFlight,
    undo: &UndoReport,
    errors: &[KernelError],
) -> Result<(), ApplyError> {
    if undo.complete() {
        return Ok(());
    }
    for e in errors {
        if let KernelError::Timeout {
            what,
            writer: Some(pid),
            ..
        } = e
        {
            inflight.abandoned.push(journal::Abandoned {
                what: what.clone(),
                writer: *pid,
            });
        }
    }
    if !inflight.abandoned.is_empty() {
        inflight.save(&opts.run_dir)?;
    }
    Ok(())
}

/// Ends a pass: forgets what is back at its original (as `observed` shows it, or as read now)
/// and the early-claim records the journal no longer needs, saves the journal if that changed
/// it, clears the in-flight record ([`commit::commit`]). The one commit of a pass, whatever its
/// outcome.
fn commit(
    host: &dyn Host,
    opts: &Options,
    mut journal: Journal,
    folded: &records::Folded,
    observed: Option<&crate::host::Snapshot>,
) -> Result<(), ApplyError> {
    let before = journal.clone();
    match observed {
        Some(o) => {
            rollback::forget_restored_in(host, o, &mut journal);
        }
        None => {
            rollback::forget_restored(host, &mut journal).map_err(ApplyError::Read)?;
        }
    }
    // Crash-safe across the journal, the early-claim records and the pass record (see
    // `commit`): what is forgotten is recorded in the pass record first.
    commit::commit(
        &opts.state_dir,
        &opts.run_dir,
        None,
        &before,
        &journal,
        Some(folded),
    )?;
    Ok(())
}

/// Debug-level timing of a pass's phases, for finding where the time goes (`-vv`).
struct Phases {
    last: std::time::Instant,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        tracing::debug!(
            phase,
            ms = (now - self.last).as_secs_f64() * 1e3,
            "phase done"
        );
        self.last = now;
    }
}
