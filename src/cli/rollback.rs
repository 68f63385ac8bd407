//! `vfioctl rollback`: returns every object vfioctl took to the state the journal recorded
//! before the first change (issue 7).

use std::time::Duration;

use super::{args, Exit, Options};
use crate::apply::rollback;
use crate::kernel::linux::{LinuxHost, Timeouts};

/// `--host FILE` was refused while resolving the options (a usage error).
pub fn run(opts: &Options, args: &args::RollbackArgs) -> Exit {
    let host = LinuxHost::new(opts.roots.clone(), Timeouts::default());
    let result = rollback::rollback(
        &host,
        &opts.state_dir,
        &opts.run_dir,
        Duration::from_secs(args.lock_timeout),
        args.dry_run,
    );
    let (out, entries) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vfioctl rollback: {e}");
            return Exit::Failed;
        }
    };
    if entries.is_empty() && out.modules.is_empty() && out.recovered.is_none() {
        outln!("nothing to roll back: vfioctl has taken nothing on this host");
        return Exit::Done;
    }
    if args.dry_run {
        for e in entries.iter().rev() {
            outln!("would restore {} to {}", e.object, e.was);
        }
        for m in out.modules.iter().rev() {
            outln!(
                "would unload module {} (vfioctl loaded it), unless a function is still on {}",
                m.module,
                m.driver
            );
        }
        return Exit::Done;
    }
    if let Some((pid, report)) = &out.recovered {
        outln!("recovered an interrupted pass (pid {pid}):");
        for l in report.lines() {
            outln!("  {l}");
        }
    }
    for l in out.report.lines() {
        outln!("{l}");
    }
    if out.report.complete() {
        Exit::Done
    } else {
        eprintln!(
            "vfioctl rollback: not everything could be restored; the journal keeps those entries, fix the cause and run it again"
        );
        Exit::Failed
    }
}
