//! `vfioctl reconcile`: wires planning and applying (issues 6, 7) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::ReconcileArgs) -> Exit {
    eprintln!("vfioctl reconcile: not available in this build yet");
    Exit::Failed
}
