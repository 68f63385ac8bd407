//! `vfioctl snapshot`: wires host snapshots (issue 4) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::SnapshotArgs) -> Exit {
    eprintln!("vfioctl snapshot: not available in this build yet");
    Exit::Failed
}
