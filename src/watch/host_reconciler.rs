//! The [`Reconciler`] `watch` runs in production: one [`apply::reconcile`] pass on the real
//! host (lock, recover, read, plan, apply, verify), scoped to one function when the loop asks.
//!
//! The lock is taken inside the pass and held for that pass only, so `reconcile --device` runs
//! from the udev rule and `watch` take turns; `watch` waits for it only briefly and retries
//! (the loop's `Busy`), so signals are never held up for long. Accounts named in the config are
//! resolved afresh for every pass (a user created after start is picked up).

use std::time::Duration;

use crate::apply::{self, lock::LockError, ApplyError};
use crate::config::Config;
use crate::kernel::Host;
use crate::plan::{Accounts, ProblemKind};

use super::hotplug_claim::ClaimConfig;
use super::run_loop::{Outcome, Reconciler, Scope};

/// How long a `watch` pass waits for the reconcile lock before reporting `Busy`.
pub const WATCH_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Runs apply passes on a host.
pub struct ApplyReconciler<H> {
    host: H,
    opts: apply::Options,
    accounts: fn(&Config) -> Accounts,
    /// The hot-plug claimer's config, kept at the one each pass runs with.
    claims: Option<ClaimConfig>,
    /// Where the CDI spec is kept after each pass (`--cdi-dir`); `None`: not kept.
    cdi_dir: Option<std::path::PathBuf>,
}

impl<H: Host> ApplyReconciler<H> {
    /// `accounts` resolves the user and group names a config mentions (called per pass).
    pub fn new(host: H, mut opts: apply::Options, accounts: fn(&Config) -> Accounts) -> Self {
        opts.lock_timeout = WATCH_LOCK_WAIT;
        ApplyReconciler {
            host,
            opts,
            accounts,
            claims: None,
            cdi_dir: None,
        }
    }

    /// Keeps the CDI spec of what the config hands out in `dir` after each successful pass.
    pub fn with_cdi_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.cdi_dir = Some(dir);
        self
    }

    /// Refreshes the CDI spec from a full read of the host, under the pass lock (a scoped pass
    /// read only its closure). Busy: the pass holding the lock refreshes it after itself.
    fn keep_cdi(&self, config: &Config, accounts: &Accounts) {
        let Some(dir) = &self.cdi_dir else { return };
        let kept = apply::lock::acquire(&self.opts.run_dir, WATCH_LOCK_WAIT)
            .map_err(|e| e.to_string())
            .and_then(|_lock| {
                let snap = self.host.snapshot().map_err(|e| e.to_string())?;
                crate::export::refresh_cdi(dir, config, &snap, accounts).map_err(|e| e.to_string())
            });
        match kept {
            Ok(r) => {
                for n in &r.notes {
                    tracing::debug!("cdi: {n}");
                }
                tracing::debug!(kept = ?r.kept, devices = r.devices, "cdi spec");
            }
            Err(e) => tracing::warn!("cdi: the spec in {} could not be kept: {e}", dir.display()),
        }
    }

    /// Keeps `claims` at the config of the latest pass (a reload always leads to a pass).
    pub fn with_claim_config(mut self, claims: ClaimConfig) -> Self {
        self.claims = Some(claims);
        self
    }
}

impl<H: Host> Reconciler for ApplyReconciler<H> {
    fn reconcile(&mut self, config: &Config, scope: Scope) -> Outcome {
        if let Some(claims) = &self.claims {
            claims.set(config);
        }
        let mut opts = self.opts.clone();
        opts.scope = match scope {
            Scope::All => None,
            Scope::Device(a) => Some(a),
        };
        opts.accounts = (self.accounts)(config);
        match apply::reconcile(&self.host, config, &opts) {
            Ok(outcome) => {
                self.keep_cdi(config, &opts.accounts);
                if let Some((pid, report)) = &outcome.recovered {
                    tracing::warn!(pid, "recovered an interrupted pass: {:?}", report.lines());
                }
                let mut waiting = 0;
                let mut problems = 0;
                for p in &outcome.plan.problems {
                    if p.kind == ProblemKind::Missing {
                        waiting += 1;
                        tracing::info!("waiting: {}", p.message);
                    } else {
                        problems += 1;
                        tracing::warn!("not realisable: {}", p.message);
                    }
                }
                Outcome::Converged {
                    changed: outcome.executed.len(),
                    waiting,
                    problems,
                }
            }
            Err(ApplyError::Lock(LockError::Busy { .. })) => Outcome::Busy,
            Err(e) => Outcome::Failed(e.lines().join("\n")),
        }
    }
}
