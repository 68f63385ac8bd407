//! The [`Reconciler`] `watch` runs in production: one [`apply::reconcile`] pass on the real
//! host (lock, recover, read, plan, apply, verify), scoped to one function when the loop asks.
//!
//! The lock is taken inside the pass and held for that pass only, so `reconcile --device` runs
//! from the udev rule and `watch` take turns; `watch` waits for it only briefly and retries
//! (the loop's `Busy`), so signals are never held up for long. Accounts named in the config are
//! resolved afresh for every pass (a user created after start is picked up). The CDI spec is
//! kept from what each pass read, under its lock, with no read of its own.

use std::time::Duration;

use crate::apply::{self, lock::LockError, ApplyError};
use std::path::Path;

use crate::config::Config;
use crate::host::{partial, Snapshot};
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
    /// The whole host as the latest pass left it, kept for the CDI spec only (with a
    /// `cdi_dir`): a scoped pass read its function's closure, and the spec is this with that
    /// closure laid over it.
    last_host: Option<Snapshot>,
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
            last_host: None,
        }
    }

    /// Keeps the CDI spec of what the config hands out in `dir` after each successful pass.
    pub fn with_cdi_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.cdi_dir = Some(dir);
        self
    }

    /// Keeps the CDI spec after a pass, from the host as the pass left it (`out.after`), under
    /// the pass's lock (called from [`apply::reconcile_then`]). A whole pass's host is complete;
    /// a scoped pass's closure is laid over the latest whole one ([`partial::overlay`]; its
    /// function absent from the closure: gone), so no pass reads the host again for the spec,
    /// except a scoped one before any whole pass (the first pass of `watch` is whole).
    fn keep_cdi(
        host: &H,
        dir: &Path,
        last_host: &mut Option<Snapshot>,
        config: &Config,
        accounts: &Accounts,
        out: &apply::Outcome,
        scope: Option<crate::pci::PciAddress>,
    ) {
        let after = match (&out.after.covers, last_host.as_ref()) {
            (None, _) => Ok(out.after.clone()),
            (Some(_), Some(last)) => {
                let mut part = out.after.clone();
                if let (Some(seed), Some(c)) = (scope, part.covers.as_mut()) {
                    c.insert(seed);
                }
                Ok(partial::overlay(last, &part))
            }
            (Some(_), None) => host.snapshot().map_err(|e| e.to_string()),
        };
        let kept = after.and_then(|after| {
            let r = crate::export::refresh_cdi(dir, config, &after, accounts)
                .map_err(|e| e.to_string());
            *last_host = Some(after);
            r
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

    /// The host the passes run on.
    pub fn host(&self) -> &H {
        &self.host
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
        let (host, cdi_dir, last_host) = (&self.host, &self.cdi_dir, &mut self.last_host);
        let result = apply::reconcile_then(host, config, &opts, |out| {
            if let Some(dir) = cdi_dir {
                Self::keep_cdi(
                    host,
                    dir,
                    last_host,
                    config,
                    &opts.accounts,
                    out,
                    opts.scope,
                );
            }
        });
        match result {
            Ok(outcome) => {
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
