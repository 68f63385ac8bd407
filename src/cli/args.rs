//! The command-line definition (clap). Parsed once into plain data; [`super::options`]
//! resolves it into what the commands need. The man page and shell completions are generated
//! from this. Each command lists only the flags it uses: the host roots, state directories and
//! `--host` are flags of the commands that read them (and root flags for all of them), as is
//! `--cdi-dir` for the commands that keep the CDI spec.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Declarative VFIO configuration and reconciliation for Linux hosts.
#[derive(Debug, Parser)]
#[command(name = "vfioctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The root flags, given before the subcommand (`vfioctl --sysfs-root DIR status`). Each is
/// also a flag of the commands that use it, and only of those (`validate` takes none of
/// them); a flag after the subcommand wins over the same flag before it.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// More log output (repeat for more); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub cdi: CdiDirArg,
}

/// Where the host's filesystems are (for tests and containers).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Host roots")]
pub struct RootsArgs {
    /// Root of sysfs [default: /sys].
    #[arg(long, value_name = "DIR")]
    pub sysfs_root: Option<PathBuf>,
    /// Root of /dev [default: /dev].
    #[arg(long, value_name = "DIR")]
    pub dev_root: Option<PathBuf>,
    /// Root of /proc [default: /proc].
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
}

/// Where vfioctl keeps its own state.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "State")]
pub struct DirsArgs {
    /// Where vfioctl keeps its journal (persistent) [default: /var/lib/vfioctl].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where vfioctl keeps its lock, socket and in-flight records (cleared at boot)
    /// [default: /run/vfioctl].
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// A captured host instead of this machine, for the commands that only read it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Host roots")]
pub struct HostFileArg {
    /// Read the host from a snapshot file (`vfioctl snapshot`) instead of the live system.
    #[arg(long, value_name = "FILE")]
    pub host: Option<PathBuf>,
}

/// Where the CDI spec of what the config hands out is kept, for the commands that keep it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "State")]
pub struct CdiDirArg {
    /// Where `reconcile` and `watch` keep the CDI spec (`vfioctl.json`) of what the config
    /// hands out; `rollback` removes it [default: /var/run/cdi].
    #[arg(long, value_name = "DIR")]
    pub cdi_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file alone, without reading any host.
    Validate(ValidateArgs),
    /// Print the JSON Schema of the config file.
    Schema,
    /// Show the host: IOMMU groups, their members, drivers, and viability.
    Status(StatusArgs),
    /// Print a snapshot of the host as JSON (use it later with `--host`).
    Snapshot(SnapshotArgs),
    /// Make the host match the config (or, with `--dry-run`, show the plan).
    Reconcile(ReconcileArgs),
    /// Return every device vfioctl took to its recorded original state.
    Rollback(RollbackArgs),
    /// Keep the host converged: re-apply on hotplug, config edits and SIGHUP; hold domains.
    ///
    /// A hot-plugged function the config names is claimed straight from the kernel's `add`
    /// uevent: its driver_override is written before the kernel probes drivers, so a loaded host
    /// driver never binds it. Then a pass scoped to the function binds it, gives its node to
    /// its user and journals it. Every other event (bind, unbind, remove, /dev/vfio nodes, an
    /// edit in the config's directory, SIGHUP, the resync timer) only says "look again": bursts
    /// coalesce into one pass. An invalid config on reload is logged and ignored. Run it under
    /// systemd with contrib/systemd/vfioctl-watch.service (Type=notify).
    Watch(WatchArgs),
    /// Print the CDI spec (Container Device Interface) of what the config hands out.
    Cdi(CdiArgs),
    /// Print what the config hands out in another tool's format.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Use a domain held by `vfioctl watch`.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Get a fresh iommufd (/dev/iommu) from `vfioctl watch`, for a VMM that binds its own
    /// devices.
    #[command(subcommand)]
    Iommufd(IommufdCommand),
    /// For the udev rule: on `add`, write the configured driver to a function's
    /// `driver_override` before any module driver loads.
    #[command(hide = true)]
    UdevClaim(UdevClaimArgs),
    /// For the VM suite: play kubelet once on a device plugin directory (serve Registration,
    /// list, prefer, allocate the first Healthy unit) and print what the plugin answered.
    #[command(hide = true)]
    KubeletProbe(KubeletProbeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KubeletProbeArgs {
    /// The plugin directory (kubelet.sock goes here).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The resource to wait for (`vfioctl.io/NAME`).
    #[arg(long, value_name = "NAME")]
    pub resource: String,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}

/// Where the config comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "/etc/vfio.toml"
    )]
    pub config: PathBuf,
    /// Use a config that someone besides root (or you) can change: its group or every user
    /// can write it or a directory on its path, or another user owns it. Without this flag
    /// such a config is refused (as sshd's StrictModes refuses such files), since whoever can
    /// edit it decides what vfioctl does to the host as root.
    #[arg(long)]
    pub allow_insecure_config: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The config file (default /etc/vfio.toml).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    pub file: Option<PathBuf>,
    /// The config file (same as FILE).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print diagnostics as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the snapshot as JSON.
    #[arg(long)]
    pub json: bool,
    /// Output format (`--json` is `--format json`).
    #[arg(long, value_enum, conflicts_with = "json")]
    pub format: Option<StatusFormat>,
    /// With `--format openmetrics`: count functions against this config and report the drift.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    /// Prometheus text (0.0.4), as `watch --metrics-dir` writes it.
    Openmetrics,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub roots: RootsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Show the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 3 when changes are pending (implies --dry-run).
    #[arg(long)]
    pub check: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Reconcile only this function and its IOMMU group closure (for udev rules).
    #[arg(long, value_name = "ADDRESS")]
    pub device: Option<String>,
    /// Apply the bindings only: leave the config's [[domain]]s to `vfioctl watch` without
    /// asking it, and do not exit 4 when none runs (for the udev rule, which runs at boot before
    /// the service; the service's own pass holds the domains).
    #[arg(long)]
    pub no_domains: bool,
    /// How long to wait for the reconcile lock, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub lock_timeout: u64,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
    #[command(flatten)]
    pub cdi: CdiDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// Show what would be undone; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for the reconcile lock, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub lock_timeout: u64,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
    #[command(flatten)]
    pub cdi: CdiDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Periodic full resync, in seconds (0 disables).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub resync: u64,
    /// Quiet period that coalesces bursts of events, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce_ms: u64,
    /// After each pass, write metrics to DIR/vfioctl.prom (node_exporter's textfile collector).
    #[arg(long, value_name = "DIR")]
    pub metrics_dir: Option<PathBuf>,
    /// Serve a kubelet device plugin in DIR (kubelet's: /var/lib/kubelet/device-plugins): one
    /// resource vfioctl.io/NAME per [[device]], one unit per IOMMU group.
    #[arg(long, value_name = "DIR")]
    pub kubelet_dir: Option<PathBuf>,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
    #[command(flatten)]
    pub cdi: CdiDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct UdevClaimArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The function's PCI address (udev's `%k`).
    #[arg(value_name = "ADDRESS")]
    pub address: String,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Receive a held domain's fds and run COMMAND with them inherited.
    Open(DomainOpenArgs),
    /// Debugging: hold the config's domains in the foreground until SIGTERM; SIGHUP re-reads
    /// the config and reconciles again (what `watch` does for the domain layer).
    #[command(hide = true)]
    Hold(DomainHoldArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DomainHoldArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// After each pass, write the held domains and the pass's report here as JSON.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

#[derive(Debug, Subcommand)]
pub enum IommufdCommand {
    /// Receive a freshly opened /dev/iommu from `vfioctl watch` and run COMMAND with it
    /// inherited, its number in VFIOCTL_IOMMUFD_FD.
    ///
    /// For a VMM that binds the devices it was given itself (QEMU 9.0+:
    /// `-object iommufd,id=i0,fd=$VFIOCTL_IOMMUFD_FD -device vfio-pci,host=ADDRESS,iommufd=i0`):
    /// the caller must be root or named by a [[user]] entry, whose devices' cdevs
    /// (/dev/vfio/devices/vfioN) it owns. The iommufd gives no device access of its own, and
    /// what the command pins is charged to its own RLIMIT_MEMLOCK. Exit 4 when no `vfioctl
    /// watch` runs, 1 when refused (the reason is printed).
    Open(IommufdOpenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct IommufdOpenArgs {
    /// The command to run and its arguments (`--` before it is accepted, and needed when
    /// COMMAND itself starts with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DomainOpenArgs {
    /// The domain's name in the config.
    pub name: String,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CdiArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Write the spec to FILE (atomically) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Print libvirt `<hostdev mode='subsystem' type='pci' managed='no'>` elements for a
    /// `[[device]]` (every one without NAME), for `virsh attach-device`.
    Libvirt(LibvirtArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LibvirtArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The `[[device]]` name.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub host: HostFileArg,
    #[command(flatten)]
    pub roots: RootsArgs,
    #[command(flatten)]
    pub dirs: DirsArgs,
}
