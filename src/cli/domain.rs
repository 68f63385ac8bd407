//! `vfioctl domain`: wires domain hand-over (issue 10) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::DomainCommand) -> Exit {
    eprintln!("vfioctl domain: not available in this build yet");
    Exit::Failed
}
