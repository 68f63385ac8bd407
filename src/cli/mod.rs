//! The command line: argument definitions (`args`), and one module per subcommand that wires
//! options to the pipeline stages and prints results. No decisions are made here.

pub mod args;
pub mod cdi;
mod domain;
pub mod export;
mod reconcile;
mod rollback;
mod schema;
mod snapshot;
mod status;
mod udev_claim;
mod validate;
mod watch;

use std::process::ExitCode;

pub use args::{Cli, Command};

use crate::host::Roots;

/// Process exit statuses, as documented: 0 done, 1 failed or not realisable, 2 usage error,
/// 3 changes pending (`--check`), 4 converged but no `watch` runs to hold the config's domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Failed = 1,
    Usage = 2,
    Pending = 3,
    /// The binding converged, but the config has `[[domain]]`s and no `vfioctl watch` runs to
    /// hold them.
    NoWatch = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl args::GlobalArgs {
    /// The host filesystem roots these flags name.
    pub fn roots(&self) -> Roots {
        Roots {
            sysfs: self.sysfs_root.clone(),
            dev: self.dev_root.clone(),
            proc: self.proc_root.clone(),
        }
    }
}

/// Runs a parsed command line; prints results and diagnostics; returns the exit status.
pub fn run(cli: Cli) -> Exit {
    let g = &cli.global;
    match &cli.command {
        Command::Validate(a) => validate::run(g, a),
        Command::Schema => schema::run(g),
        Command::Status(a) => status::run(g, a),
        Command::Snapshot(a) => snapshot::run(g, a),
        Command::Reconcile(a) => reconcile::run(g, a),
        Command::Rollback(a) => rollback::run(g, a),
        Command::Watch(a) => watch::run(g, a),
        Command::Domain(a) => domain::run(g, a),
        Command::Cdi(a) => cdi::run(g, a),
        Command::Export(a) => export::run(g, a),
        Command::UdevClaim(a) => udev_claim::run(g, a),
    }
}
