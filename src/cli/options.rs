//! The command line resolved once (ripgrep's model): [`Options`] is everything a command needs
//! from its flags, built in [`super::run`] before the command runs: the host roots, the state
//! and run directories, where the host is read from (live or a `--host` snapshot), the
//! function a reconcile is scoped to, and the config, loaded once through the one loader
//! ([`crate::config::load_with`]). Usage errors (a flag the command cannot honour) are found
//! here, before anything is read.

use std::path::{Path, PathBuf};

use super::args::{self, CdiDirArg, Command, DirsArgs, HostFileArg, RootsArgs};
use crate::config::{Access, Config, LoadError};
use crate::host::{HostError, Roots, Snapshot};
use crate::pci::PciAddress;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/vfioctl";
pub const DEFAULT_RUN_DIR: &str = "/run/vfioctl";
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";

/// Where the observed host comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSource {
    /// This machine, read under [`Options::roots`].
    Live,
    /// A snapshot file written by `vfioctl snapshot` (`--host FILE`).
    File(PathBuf),
}

/// The config a command acts on, loaded once.
#[derive(Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    /// How a config others can change is treated (refused unless `--allow-insecure-config`,
    /// for the commands that change the host).
    pub access: Access,
    pub loaded: Result<Config, LoadError>,
}

/// Everything the commands need from the command line.
#[derive(Debug)]
pub struct Options {
    pub roots: Roots,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Where the CDI spec (`vfioctl.json`) is kept by `reconcile` and `watch` and removed by
    /// `rollback`.
    pub cdi_dir: PathBuf,
    pub host: HostSource,
    /// `reconcile --device ADDRESS`: the function a pass is scoped to.
    pub device: Option<PciAddress>,
    /// The config, for the commands that take `--config` (`validate` checks its own file).
    pub config: Option<LoadedConfig>,
}

/// A flag the command cannot honour: exit 2, nothing read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Options {
    /// Resolves the parsed command line: a command's own flags win over the root flags, then
    /// the defaults. Then loads the config, when the command has one.
    pub fn resolve(cli: &args::Cli) -> Result<Options, UsageError> {
        let mut opts = Self::resolve_flags(cli)?;
        if let Some((path, access)) = config_of(&cli.command) {
            opts.config = Some(LoadedConfig {
                loaded: crate::config::load_with(&path, access),
                path,
                access,
            });
        }
        Ok(opts)
    }

    /// [`resolve`](Self::resolve) without loading the config.
    pub fn resolve_flags(cli: &args::Cli) -> Result<Options, UsageError> {
        let g = &cli.global;
        let none_r = RootsArgs::default();
        let none_d = DirsArgs::default();
        let none_h = HostFileArg::default();
        let (roots, dirs, host) = flags_of(&cli.command);
        let roots = roots.unwrap_or(&none_r);
        let dirs = dirs.unwrap_or(&none_d);
        let pick = |own: &Option<PathBuf>, root: &Option<PathBuf>, default: &str| {
            own.clone()
                .or_else(|| root.clone())
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let none_c = CdiDirArg::default();
        let cdi = cdi_dir_of(&cli.command).unwrap_or(&none_c);
        let host_file = host.unwrap_or(&none_h).host.clone().or(g.host.host.clone());
        if let Some(file) = &host_file {
            if let Some(why) = refuses_host_file(&cli.command) {
                return Err(UsageError(format!(
                    "vfioctl {}: --host {}: {why}",
                    command_name(&cli.command),
                    file.display()
                )));
            }
        }
        let device = match &cli.command {
            Command::Reconcile(a) => match a.device.as_deref().map(str::parse::<PciAddress>) {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    return Err(UsageError(format!(
                        "vfioctl reconcile: --device {}: {e}",
                        a.device.as_deref().unwrap_or_default()
                    )))
                }
            },
            _ => None,
        };
        Ok(Options {
            roots: Roots {
                sysfs: pick(&roots.sysfs_root, &g.roots.sysfs_root, "/sys"),
                dev: pick(&roots.dev_root, &g.roots.dev_root, "/dev"),
                proc: pick(&roots.proc_root, &g.roots.proc_root, "/proc"),
            },
            state_dir: pick(&dirs.state_dir, &g.dirs.state_dir, DEFAULT_STATE_DIR),
            run_dir: pick(&dirs.run_dir, &g.dirs.run_dir, DEFAULT_RUN_DIR),
            cdi_dir: pick(&cdi.cdi_dir, &g.cdi.cdi_dir, DEFAULT_CDI_DIR),
            host: match host_file {
                Some(f) => HostSource::File(f),
                None => HostSource::Live,
            },
            device,
            config: None,
        })
    }

    /// The snapshot file, when the host is read from one.
    pub fn host_file(&self) -> Option<&Path> {
        match &self.host {
            HostSource::Live => None,
            HostSource::File(f) => Some(f),
        }
    }

    /// True when the host is this machine.
    pub fn is_live(&self) -> bool {
        self.host == HostSource::Live
    }

    /// The observed host: the snapshot file, or a scan of this machine.
    pub fn observe(&self) -> Result<Snapshot, HostError> {
        crate::host::observe(&self.roots, self.host_file())
    }
}

/// The command's own root, directory and `--host` flags, where it has them.
fn flags_of(c: &Command) -> (Option<&RootsArgs>, Option<&DirsArgs>, Option<&HostFileArg>) {
    use args::DomainCommand as D;
    match c {
        Command::Validate(_) | Command::Schema | Command::KubeletProbe(_) => (None, None, None),
        Command::Status(a) => (Some(&a.roots), Some(&a.dirs), Some(&a.host)),
        Command::Snapshot(a) => (Some(&a.roots), None, Some(&a.host)),
        Command::Reconcile(a) => (Some(&a.roots), Some(&a.dirs), Some(&a.host)),
        Command::Rollback(a) => (Some(&a.roots), Some(&a.dirs), None),
        Command::Watch(a) => (Some(&a.roots), Some(&a.dirs), None),
        Command::UdevClaim(a) => (Some(&a.roots), Some(&a.dirs), None),
        Command::Domain(D::Open(a)) => (None, Some(&a.dirs), None),
        Command::Iommufd(args::IommufdCommand::Open(a)) => (None, Some(&a.dirs), None),
        Command::Domain(D::Hold(a)) => (Some(&a.roots), Some(&a.dirs), Some(&a.host)),
        Command::Cdi(a) => (Some(&a.roots), Some(&a.dirs), Some(&a.host)),
        Command::Export(args::ExportCommand::Libvirt(a)) => {
            (Some(&a.roots), Some(&a.dirs), Some(&a.host))
        }
    }
}

/// The command's own `--cdi-dir`, where it keeps or removes the CDI spec.
fn cdi_dir_of(c: &Command) -> Option<&CdiDirArg> {
    match c {
        Command::Reconcile(a) => Some(&a.cdi),
        Command::Rollback(a) => Some(&a.cdi),
        Command::Watch(a) => Some(&a.cdi),
        _ => None,
    }
}

/// Why the command cannot take `--host FILE` (given before it), if it cannot.
fn refuses_host_file(c: &Command) -> Option<&'static str> {
    match c {
        Command::Reconcile(a) if !(a.dry_run || a.check) => Some(
            "describes a host that cannot be changed; use it with --dry-run, or drop it to apply to this machine",
        ),
        Command::Rollback(_) => {
            Some("describes a host that cannot be changed; rollback acts on this machine")
        }
        Command::Watch(_) => {
            Some("reads a snapshot file, which never changes; watch needs the live host")
        }
        Command::UdevClaim(_) => Some(
            "describes a host that cannot be changed; udev-claim writes this machine's driver_override",
        ),
        Command::Domain(args::DomainCommand::Open(_)) => {
            Some("domain open asks this machine's `vfioctl watch`")
        }
        Command::Iommufd(_) => Some("iommufd open asks this machine's `vfioctl watch`"),
        Command::Validate(_) | Command::Schema => {
            Some("this command reads no host; drop --host")
        }
        _ => None,
    }
}

/// The config a command acts on and how strictly its file permissions are held: refused when
/// others can change it, for the commands that change the host, unless
/// `--allow-insecure-config`; a warning for a dry run.
fn config_of(c: &Command) -> Option<(PathBuf, Access)> {
    let (arg, changes_host) = match c {
        Command::Reconcile(a) => (&a.config, !(a.dry_run || a.check)),
        Command::Watch(a) => (&a.config, true),
        Command::UdevClaim(a) => (&a.config, true),
        Command::Domain(args::DomainCommand::Hold(a)) => (&a.config, true),
        // They print what the config hands out and change nothing.
        Command::Cdi(a) => (&a.config, false),
        Command::Export(args::ExportCommand::Libvirt(a)) => (&a.config, false),
        _ => return None,
    };
    let access = if changes_host && !arg.allow_insecure_config {
        Access::Refuse
    } else {
        Access::Warn
    };
    Some((arg.config.clone(), access))
}

/// The command's name in messages (`vfioctl NAME: ...`).
pub fn command_name(c: &Command) -> &'static str {
    use args::DomainCommand as D;
    match c {
        Command::Validate(_) => "validate",
        Command::Schema => "schema",
        Command::Status(_) => "status",
        Command::Snapshot(_) => "snapshot",
        Command::Reconcile(_) => "reconcile",
        Command::Rollback(_) => "rollback",
        Command::Watch(_) => "watch",
        Command::UdevClaim(_) => "udev-claim",
        Command::KubeletProbe(_) => "kubelet-probe",
        Command::Domain(D::Open(_)) => "domain open",
        Command::Domain(D::Hold(_)) => "domain hold",
        Command::Iommufd(_) => "iommufd open",
        Command::Cdi(_) => "cdi",
        Command::Export(_) => "export",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn resolve(line: &[&str]) -> Result<Options, UsageError> {
        let cli = args::Cli::try_parse_from(line).expect("parses");
        Options::resolve_flags(&cli)
    }

    #[test]
    fn own_flags_win_over_root_flags_then_defaults() {
        let o = resolve(&[
            "vfioctl",
            "--sysfs-root",
            "/a",
            "status",
            "--sysfs-root",
            "/b",
        ])
        .unwrap();
        assert_eq!(o.roots.sysfs, PathBuf::from("/b"));
        assert_eq!(o.roots.dev, PathBuf::from("/dev"));
        let o = resolve(&["vfioctl", "--run-dir", "/r", "status"]).unwrap();
        assert_eq!(o.run_dir, PathBuf::from("/r"));
        assert_eq!(o.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(o.is_live());
    }

    #[test]
    fn host_file_is_a_usage_error_where_the_host_is_changed() {
        for line in [
            &["vfioctl", "--host", "h.json", "udev-claim", "0000:00:01.0"][..],
            &["vfioctl", "--host", "h.json", "watch"],
            &["vfioctl", "--host", "h.json", "rollback"],
            &["vfioctl", "--host", "h.json", "reconcile"],
            &["vfioctl", "reconcile", "--host", "h.json"],
        ] {
            assert!(resolve(line).is_err(), "{line:?}");
        }
        // Commands that do not take it at all reject it while parsing.
        for line in [
            &["vfioctl", "udev-claim", "--host", "h.json", "0000:00:01.0"][..],
            &["vfioctl", "validate", "--host", "h.json"],
            &["vfioctl", "schema", "--sysfs-root", "/x"],
        ] {
            let e = args::Cli::try_parse_from(line).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{line:?}");
        }
        let o = resolve(&["vfioctl", "reconcile", "--dry-run", "--host", "h.json"]).unwrap();
        assert_eq!(o.host_file(), Some(Path::new("h.json")));
    }

    #[test]
    fn cdi_dir_before_or_after_the_command_that_keeps_the_spec() {
        let o = resolve(&["vfioctl", "rollback"]).unwrap();
        assert_eq!(o.cdi_dir, PathBuf::from(DEFAULT_CDI_DIR));
        let o = resolve(&["vfioctl", "--cdi-dir", "/a", "watch"]).unwrap();
        assert_eq!(o.cdi_dir, PathBuf::from("/a"));
        let o = resolve(&["vfioctl", "--cdi-dir", "/a", "reconcile", "--cdi-dir", "/b"]).unwrap();
        assert_eq!(o.cdi_dir, PathBuf::from("/b"));
        // `cdi` prints the spec (or writes `-o FILE`); it keeps none in a directory.
        for line in [
            &["vfioctl", "cdi", "--cdi-dir", "/a"][..],
            &["vfioctl", "status", "--cdi-dir", "/a"],
        ] {
            let e = args::Cli::try_parse_from(line).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{line:?}");
        }
    }

    #[test]
    fn a_malformed_device_is_a_usage_error() {
        assert!(resolve(&["vfioctl", "reconcile", "--device", "zz"]).is_err());
        let o = resolve(&["vfioctl", "reconcile", "--device", "01:00.0"]).unwrap();
        assert!(o.device.is_some());
    }
}
