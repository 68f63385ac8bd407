//! `vfioctl snapshot`: observes the host and writes the snapshot JSON to standard output or
//! `-o FILE`, for later use with `--host FILE`.

use super::{args, Exit, Options};
use crate::host;

pub fn run(opts: &Options, args: &args::SnapshotArgs) -> Exit {
    let snap = match opts.observe() {
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
            out!("{json}");
            Exit::Done
        }
        // The user's file (possibly `/dev/stdout` or a pipe), not a state file: written as is.
        Some(path) => match std::fs::write(path, json) {
            Ok(()) => Exit::Done,
            Err(e) => {
                eprintln!("vfioctl snapshot: cannot write {}: {e}", path.display());
                Exit::Failed
            }
        },
    }
}
