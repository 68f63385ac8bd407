//! `vfioctl cdi`: prints (or writes with `-o`) the CDI spec of what the config hands out,
//! computed from the plan against the host (live, or `--host FILE` as in the dry run). Also
//! the hooks that keep `--cdi-dir`'s `vfioctl.json` after `reconcile` and `rollback`.

use super::options::LoadedConfig;
use super::{args, Exit, Options};
use crate::config::Config;
use crate::export;
use crate::host::accounts;
use crate::host::Snapshot;
use crate::plan::Plan;

pub fn run(opts: &Options, args: &args::CdiArgs) -> Exit {
    let (config, snap, plan) = match planned(opts, "cdi") {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let out = export::cdi::planned(config, &snap, &plan);
    for n in &out.notes {
        eprintln!("vfioctl cdi: note: {n}");
    }
    let json = out.spec.to_json();
    match &args.output {
        None => {
            out!("{json}");
            Exit::Done
        }
        Some(path) => match crate::files::write_atomic_path(path, json.as_bytes(), 0o644) {
            Ok(()) => Exit::Done,
            Err(e) => {
                eprintln!("vfioctl cdi: cannot write the spec: {e}");
                Exit::Failed
            }
        },
    }
}

/// The config (loaded once by [`Options::resolve`]), the host (live or `--host FILE`) and the
/// plan against it, as the dry run makes them (the journal's releases on a live host; the
/// snapshot's accounts for a file). Prints every reason it cannot and returns the exit status.
pub(super) fn planned<'a>(
    opts: &'a Options,
    cmd: &str,
) -> Result<(&'a Config, Snapshot, Plan), Exit> {
    let Some(LoadedConfig { path, loaded, .. }) = &opts.config else {
        return Err(Exit::Failed);
    };
    let config = match loaded {
        Ok(c) => c,
        Err(crate::config::LoadError::Invalid(d)) => {
            eprint!("{}", d.render(crate::config::Style::Plain));
            eprintln!("vfioctl {cmd}: {} is not a valid config", path.display());
            return Err(Exit::Failed);
        }
        Err(e) => {
            eprintln!("vfioctl {cmd}: {e}");
            return Err(Exit::Failed);
        }
    };
    let snap = opts.observe().map_err(|e| {
        eprintln!("vfioctl {cmd}: {e}");
        Exit::Failed
    })?;
    let (taken, taken_vfs) = match opts.host_file() {
        Some(_) => Default::default(),
        None => {
            crate::apply::load_context(&opts.state_dir, &opts.run_dir, &snap).unwrap_or_else(|e| {
                eprintln!(
                    "vfioctl {cmd}: note: cannot read the journal ({e}); devices taken \
                     earlier and no longer configured are shown as they are now"
                );
                Default::default()
            })
        }
    };
    let accounts = match opts.host_file() {
        Some(_) => accounts::from_snapshot(&crate::plan::ownership::account_names(config), &snap),
        None => accounts::resolve(&crate::plan::ownership::account_names(config)),
    };
    let ctx = crate::plan::Context {
        taken,
        accounts,
        scope: None,
        taken_vfs,
    };
    let plan = crate::plan::plan_with(config, &snap, &ctx);
    Ok((config, snap, plan))
}

/// What keeping the spec after a pass came to ([`keep_after_pass`]).
pub(super) type KeptAfterPass = Result<export::Refreshed, String>;

/// Keeps `--cdi-dir/vfioctl.json` after a pass that completed, from the host as the pass left
/// it (`out.after`: what it read, with what verification re-read) and the accounts it
/// resolved: no host read of its own. Called by [`crate::apply::reconcile_then`] while the pass
/// still holds the lock, so passes and their specs take turns. `None`: nothing to keep (the
/// config is not fully realised: a pass with problems keeps the spec of the last good one).
/// A scoped pass (`reconcile --device`, the udev rule's) read only its function's closure: the
/// rest of the host is read here, as before.
pub(super) fn keep_after_pass(
    opts: &Options,
    config: &Config,
    accounts: &crate::plan::Accounts,
    out: &crate::apply::Outcome,
) -> Option<KeptAfterPass> {
    if !out.plan.problems.is_empty() || !opts.is_live() {
        return None;
    }
    let whole;
    let after = if out.after.covers.is_some() {
        whole = crate::host::scan::scan_without_accounts(&opts.roots).map_err(|e| e.to_string());
        match &whole {
            Ok(s) => s,
            Err(e) => return Some(Err(e.clone())),
        }
    } else {
        &out.after
    };
    Some(export::refresh_cdi(&opts.cdi_dir, config, after, accounts).map_err(|e| e.to_string()))
}

/// After a `reconcile` pass (`exit` is its status; `kept` what [`keep_after_pass`] did in it):
/// logs what was kept. A spec that cannot be kept turns success into failure: the host
/// converged, but runtimes would not see it. A failed pass kept nothing (it was undone, so the
/// spec of the last good pass still holds; and a pass that abandoned a write blocked in the
/// kernel leaves a device whose sysfs attributes block on its device lock, which a full read
/// of the host would hang on).
pub(super) fn after_reconcile(opts: &Options, kept: Option<KeptAfterPass>, exit: Exit) -> Exit {
    if !matches!(exit, Exit::Done | Exit::NoWatch) {
        return exit;
    }
    match kept {
        None => exit,
        Some(Ok(r)) => {
            for n in &r.notes {
                tracing::info!("cdi: {n}");
            }
            tracing::debug!(kept = ?r.kept, devices = r.devices, "cdi spec");
            exit
        }
        Some(Err(e)) => {
            eprintln!(
                "vfioctl reconcile: the CDI spec in {} could not be kept: {e}",
                opts.cdi_dir.display()
            );
            Exit::Failed
        }
    }
}

/// After a completed `rollback`: nothing is handed out any more, so the spec goes. A rollback
/// that did not complete (or did not run) leaves it to the next pass.
pub(super) fn after_rollback(opts: &Options, dry_run: bool, exit: Exit) -> Exit {
    if exit != Exit::Done {
        return exit;
    }
    let path = opts.cdi_dir.join(export::cdi_dir::FILE_NAME);
    if dry_run {
        if path.exists() {
            outln!("would remove the CDI spec {}", path.display());
        }
        return exit;
    }
    match export::cdi_dir::remove(&opts.cdi_dir) {
        Ok(true) => {
            outln!("removed the CDI spec {}", path.display());
            exit
        }
        Ok(false) => exit,
        Err(e) => {
            eprintln!("vfioctl rollback: cannot remove the CDI spec: {e}");
            Exit::Failed
        }
    }
}
