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
    if args.json {
        print!("{}", host::snapshot_json(&snap));
    } else {
        print!("{}", host::status::render(&snap));
    }
    Exit::Done
}
