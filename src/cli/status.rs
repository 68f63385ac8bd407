//! `vfioctl status`: wires host status (issue 4) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::StatusArgs) -> Exit {
    eprintln!("vfioctl status: not available in this build yet");
    Exit::Failed
}
