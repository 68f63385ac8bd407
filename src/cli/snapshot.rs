//! `vfioctl snapshot`: observes the host and writes the snapshot JSON to standard output or
//! `-o FILE`, for later use with `--host FILE`.

use super::{args, Exit};
use crate::host;

pub fn run(global: &args::GlobalArgs, args: &args::SnapshotArgs) -> Exit {
    let snap = match host::observe(&global.roots(), global.host.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfioctl snapshot: {e}");
            return Exit::Failed;
        }
    };
    for w in &snap.warnings {
        eprintln!("vfioctl snapshot: warning: {}: {}", w.path, w.message);
    }
    let json = host::snapshot_json(&snap);
    match &args.output {
        None => {
            print!("{json}");
            Exit::Done
        }
        Some(path) => match std::fs::write(path, json) {
            Ok(()) => Exit::Done,
            Err(e) => {
                eprintln!("vfioctl snapshot: cannot write {}: {e}", path.display());
                Exit::Failed
            }
        },
    }
}
