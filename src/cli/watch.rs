//! `vfioctl watch`: wires the watch loop (issue 8) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs, _args: &args::WatchArgs) -> Exit {
    eprintln!("vfioctl watch: not available in this build yet");
    Exit::Failed
}
