//! `vfioctl status`: observes the host (live, or `--host FILE`) and prints the status view,
//! or with `--json` the snapshot itself. An observation: exits 0 even when groups are not
//! viable or the IOMMU is off.

use super::{args, Exit};
use crate::host;

pub fn run(global: &args::GlobalArgs, args: &args::StatusArgs) -> Exit {
    let snap = match host::observe(&global.roots(), global.host.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfioctl status: {e}");
            return Exit::Failed;
        }
    };
    // Held domains live in the running `watch`; shown when one publishes them (live host only).
    let held = match &global.host {
        None => crate::domain::published::read(&global.run_dir, &global.proc_root).ok(),
        Some(_) => None,
    };
    if args.json {
        match held {
            Some(p) => print!(
                "{}",
                crate::domain::status::with_domains_json(&snap, &p.domains)
            ),
            None => print!("{}", host::snapshot_json(&snap)),
        }
    } else {
        print!("{}", host::status::render(&snap));
        if let Some(p) = held {
            print!("\n{}", crate::domain::status::render_text(&p.domains));
        }
    }
    Exit::Done
}
