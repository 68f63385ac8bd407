//! `vfioctl schema`: wires the config JSON Schema (issue 3) to the command line.

use super::{args, Exit};

pub fn run(_global: &args::GlobalArgs) -> Exit {
    eprintln!("vfioctl schema: not available in this build yet");
    Exit::Failed
}
