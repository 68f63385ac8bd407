//! `vfioctl cdi`: prints (or writes with `-o`) the CDI spec of what the config hands out,
//! computed from the plan against the host (live, or `--host FILE` as in the dry run). Also
//! the hooks that keep `--cdi-dir`'s `vfioctl.json` after `reconcile` and `rollback`.

use std::time::Duration;

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

/// After a `reconcile` pass (`exit` is its status): refreshes `--cdi-dir/vfioctl.json` from
/// the host as it is now, under the reconcile lock (so passes and their specs take turns).
/// A usage error ran no pass and refreshes nothing. A spec that cannot be kept turns success
/// into failure: the host converged, but runtimes would not see it.
pub(super) fn after_reconcile(
    opts: &Options,
    config: &Config,
    lock_timeout: u64,
    exit: Exit,
) -> Exit {
    // Kept after a successful pass only (the rule, and a safety one): a failed pass
    // was undone, so the spec of the last good pass still holds; and a pass that abandoned a
    // write blocked in the kernel leaves a device whose sysfs attributes block on its device
    // lock, which a full read of the host here would hang on.
    if !matches!(exit, Exit::Done | Exit::NoWatch) || !opts.is_live() {
        return exit;
    }
    let lock = match crate::apply::lock::acquire(&opts.run_dir, Duration::from_secs(lock_timeout)) {
        Ok(l) => l,
        // The pass itself failed (for this very reason, or another): it said why already.
        Err(_) if exit != Exit::Done => return exit,
        Err(e) => {
            eprintln!("vfioctl reconcile: the CDI spec could not be kept: {e}");
            return Exit::Failed;
        }
    };
    let refreshed = refresh(opts, config);
    drop(lock);
    match refreshed {
        Ok(r) => {
            for n in &r.notes {
                tracing::info!("cdi: {n}");
            }
            tracing::debug!(kept = ?r.kept, devices = r.devices, "cdi spec");
            exit
        }
        Err(e) => {
            eprintln!(
                "vfioctl reconcile: the CDI spec in {} could not be kept: {e}",
                opts.cdi_dir.display()
            );
            Exit::Failed
        }
    }
}

/// Reads the whole host and keeps the spec of what `config` hands out on it.
fn refresh(opts: &Options, config: &Config) -> Result<export::Refreshed, String> {
    let snap = crate::host::observe(&opts.roots, None).map_err(|e| e.to_string())?;
    export::refresh_cdi(
        &opts.cdi_dir,
        config,
        &snap,
        &accounts::resolve(&crate::plan::ownership::account_names(config)),
    )
    .map_err(|e| e.to_string())
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
