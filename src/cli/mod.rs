//! The command line: argument definitions (`args`), resolved once into [`Options`]
//! (`options`), and one module per subcommand that wires options to the pipeline stages and
//! prints results through `output` (a failed write is an exit status, never a panic). No
//! decisions are made here.

// First: the `out!`/`outln!` macros it defines are used by the modules below.
#[macro_use]
pub mod output;

pub mod args;
pub mod cdi;
mod domain;
pub mod export;
pub mod options;
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
pub use options::{HostSource, Options};

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

/// Runs a parsed command line: resolves it once into [`Options`] (a usage error exits 2
/// before anything is read), runs the command, and folds a failed write to stdout into the
/// exit status.
pub fn run(cli: Cli) -> Exit {
    let name = options::command_name(&cli.command);
    let opts = match Options::resolve(&cli) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Usage;
        }
    };
    let exit = match &cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Schema => schema::run(),
        Command::Status(a) => status::run(&opts, a),
        Command::Snapshot(a) => snapshot::run(&opts, a),
        Command::Reconcile(a) => reconcile::run(&opts, a),
        Command::Rollback(a) => rollback::run(&opts, a),
        Command::Watch(a) => watch::run(&opts, a),
        Command::Domain(a) => domain::run(&opts, a),
        Command::Iommufd(args::IommufdCommand::Open(a)) => domain::iommufd_open(&opts, a),
        Command::Cdi(a) => cdi::run(&opts, a),
        Command::Export(a) => export::run(&opts, a),
        Command::UdevClaim(a) => udev_claim::run(&opts, a),
        Command::KubeletProbe(a) => {
            let timeout = std::time::Duration::from_secs(a.timeout);
            match crate::kubelet::probe::run(&a.dir, &a.resource, timeout) {
                Ok(p) => {
                    println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
                    Exit::Done
                }
                Err(e) => {
                    eprintln!("vfioctl kubelet-probe: {e}");
                    Exit::Failed
                }
            }
        }
    };
    output::finish(name, exit)
}
