//! `vfioctl rollback`: wires rollback (issue 7) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::RollbackArgs) -> Exit {
    eprintln!("vfioctl rollback: not available in this build yet");
    Exit::Failed
}
