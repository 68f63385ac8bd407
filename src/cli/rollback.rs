//! `vfioctl rollback`: returns every object vfioctl took to the state the journal recorded
//! before the first change (issue 7).

use std::time::Duration;

use super::{args, Exit};
use crate::apply::rollback;
use crate::kernel::linux::{LinuxHost, Timeouts};

pub fn run(global: &args::GlobalArgs, args: &args::RollbackArgs) -> Exit {
    let exit = run_rollback(global, args);
    super::cdi::after_rollback(global, args.dry_run, exit)
}

fn run_rollback(global: &args::GlobalArgs, args: &args::RollbackArgs) -> Exit {
    if global.host.is_some() {
        eprintln!("vfioctl rollback: --host FILE describes a host that cannot be changed; rollback acts on this machine");
        return Exit::Usage;
    }
    let host = LinuxHost::new(global.roots(), Timeouts::default());
    let result = rollback::rollback(
        &host,
        &global.state_dir,
        &global.run_dir,
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
        println!("nothing to roll back: vfioctl has taken nothing on this host");
        return Exit::Done;
    }
    if args.dry_run {
        for e in entries.iter().rev() {
            println!("would restore {} to {}", e.object, e.was);
        }
        for m in out.modules.iter().rev() {
            println!(
                "would unload module {} (vfioctl loaded it), unless a function is still on {}",
                m.module, m.driver
            );
        }
        return Exit::Done;
    }
    if let Some((pid, report)) = &out.recovered {
        println!("recovered an interrupted pass (pid {pid}):");
        for l in report.lines() {
            println!("  {l}");
        }
    }
    for l in out.report.lines() {
        println!("{l}");
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
