//! `vfioctl validate`: wires config validation (issue 3) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::ValidateArgs) -> Exit {
    eprintln!("vfioctl validate: not available in this build yet");
    Exit::Failed
}
