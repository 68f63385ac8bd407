//! `vfioctl domain`: wires held domains to the command line. `open` receives a domain from
//! the running `watch`'s fd broker and runs a command with its fds inherited; the hidden `hold`
//! starts the foreground hold loop (`domain::hold`). `vfioctl iommufd open` receives a fresh
//! iommufd from the same broker (for a VMM that binds its own devices) and runs a command
//! with it.

use nix::sys::signal::Signal;

use super::{args, Exit};
use crate::domain::linux::LinuxIommu;
use crate::domain::Domains;
use crate::host;

pub fn run(global: &super::Options, args: &args::DomainCommand) -> Exit {
    match args {
        args::DomainCommand::Open(a) => open(global, a),
        args::DomainCommand::Hold(a) => hold(global, a),
    }
}

/// What `open` tells the command, in its environment.
pub const ENV_CONTAINER_FD: &str = "VFIOCTL_CONTAINER_FD";
pub const ENV_CONTAINER_FDS: &str = "VFIOCTL_CONTAINER_FDS";
pub const ENV_GROUP_FDS: &str = "VFIOCTL_GROUP_FDS";
pub const ENV_WINDOW_FDS: &str = "VFIOCTL_WINDOW_FDS";
pub const ENV_DOMAIN_JSON: &str = "VFIOCTL_DOMAIN_JSON";
/// The iommufd of a domain on the iommufd backend (empty on legacy).
pub const ENV_IOMMUFD_FD: &str = "VFIOCTL_IOMMUFD_FD";
/// Its (first) IOAS id, decimal; with `per-group` placement the JSON has every IOAS.
pub const ENV_IOAS_ID: &str = "VFIOCTL_IOAS_ID";
/// `ADDRESS=FD,...`: each member's cdev fd, bound and attached (iommufd; empty on legacy).
pub const ENV_DEVICE_FDS: &str = "VFIOCTL_DEVICE_FDS";

/// The environment `open` gives the command: fd numbers instead of the description's
/// indices. `VFIOCTL_GROUP_FDS` is `GROUP=FD,...`; `VFIOCTL_WINDOW_FDS` is
/// `FD:IOVA:SIZE,...` (hex IOVA and size, in the description's order); the JSON is the
/// description with every `fd` index replaced by the fd number. On the iommufd backend
/// `VFIOCTL_IOMMUFD_FD`, `VFIOCTL_IOAS_ID` and `VFIOCTL_DEVICE_FDS` (`ADDRESS=FD,...`) are set
/// too (empty on legacy, where the container and group variables are).
pub fn open_env(
    desc: &crate::broker::protocol::Description,
    fd_of: &[i32],
) -> Result<Vec<(&'static str, String)>, String> {
    let fd = |i: usize| {
        fd_of
            .get(i)
            .copied()
            .ok_or_else(|| format!("the description names fd {i} but {} arrived", fd_of.len()))
    };
    let mut d = desc.clone();
    let containers: Vec<i32> = d
        .containers
        .iter()
        .map(|&i| fd(i))
        .collect::<Result<_, _>>()?;
    let mut groups = Vec::new();
    for g in &mut d.groups {
        groups.push(format!("{}={}", g.group, fd(g.fd)?));
        g.fd = fd(g.fd)? as usize;
    }
    let mut windows = Vec::new();
    for w in &mut d.windows {
        windows.push(format!("{}:{:#x}:{:#x}", fd(w.fd)?, w.iova, w.size));
        w.fd = fd(w.fd)? as usize;
    }
    let iommufd = d.iommufd.is_some();
    let mut devices = Vec::new();
    for dev in &mut d.devices {
        dev.fd = fd(dev.fd)? as usize;
        if iommufd {
            devices.push(format!("{}={}", dev.address, dev.fd));
        }
    }
    let (iommufd_fd, ioas) = match &mut d.iommufd {
        Some(i) => {
            i.fd = fd(i.fd)? as usize;
            (
                i.fd.to_string(),
                i.ioas.first().map(|a| a.id.to_string()).unwrap_or_default(),
            )
        }
        None => (String::new(), String::new()),
    };
    d.containers = containers.iter().map(|&c| c as usize).collect();
    let json = serde_json::to_string(&d).map_err(|e| e.to_string())?;
    let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    Ok(vec![
        (
            ENV_CONTAINER_FD,
            containers.first().map(i32::to_string).unwrap_or_default(),
        ),
        (ENV_CONTAINER_FDS, list(&containers)),
        (ENV_GROUP_FDS, groups.join(",")),
        (ENV_WINDOW_FDS, windows.join(",")),
        (ENV_DOMAIN_JSON, json),
        (ENV_IOMMUFD_FD, iommufd_fd),
        (ENV_IOAS_ID, ioas),
        (ENV_DEVICE_FDS, devices.join(",")),
    ])
}

fn open(global: &super::Options, a: &args::DomainOpenArgs) -> Exit {
    use crate::broker::client::{self, ClientError};
    use std::os::fd::AsRawFd;
    let grant = match client::open(&global.run_dir, &a.name) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("vfioctl domain open: {e}");
            match e {
                ClientError::NoBroker { .. } => eprintln!(
                    "hint: if watch was restarted while a program still held this domain's fds, \
                     the groups stay busy and watch cannot rebuild the domain: close that program, \
                     restart watch, then run vfioctl domain open again"
                ),
                ClientError::Refused(_) => eprintln!(
                    "hint: the broker hands a domain to the users whose [[user]] entries list all \
                     of its devices (by uid or group); `vfioctl status` shows what watch holds"
                ),
                _ => {}
            }
            // No broker to ask: the domain needs a running `watch` (exit 4, as `iommufd open`
            // and a one-shot `reconcile` with domains).
            return match e {
                ClientError::NoBroker { .. } => Exit::NoWatch,
                _ => Exit::Failed,
            };
        }
    };
    let raw: Vec<i32> = grant.fds.iter().map(|f| f.as_raw_fd()).collect();
    let env = match open_env(&grant.description, &raw) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("vfioctl domain open: the broker's answer: {e}");
            return Exit::Failed;
        }
    };
    let Some((program, rest)) = a.command.split_first() else {
        eprintln!("vfioctl domain open: no command given after --");
        return Exit::Usage;
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest).envs(env);
    exec_inheriting("vfioctl domain open", grant.fds, cmd)
}

/// Runs `cmd` in place of this process with `fds` inherited (close-on-exec cleared); returns
/// only when that fails (exit 1, saying why).
fn exec_inheriting(
    who: &str,
    fds: Vec<std::os::fd::OwnedFd>,
    mut cmd: std::process::Command,
) -> Exit {
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::process::CommandExt;
    for fd in &fds {
        let cleared = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
        if let Err(e) = cleared {
            eprintln!("{who}: cannot pass fd {} on: {e}", fd.as_raw_fd());
            return Exit::Failed;
        }
    }
    // From here the fds belong to the command.
    for fd in fds {
        let _ = fd.into_raw_fd();
    }
    let err = cmd.exec();
    eprintln!(
        "{who}: cannot run {}: {err}",
        cmd.get_program().to_string_lossy()
    );
    Exit::Failed
}

/// The variables a held domain's hand-over sets; `iommufd open` clears them, so a command run
/// inside `domain open` cannot mistake the domain's for its fresh iommufd.
const DOMAIN_VARS: [&str; 8] = [
    ENV_CONTAINER_FD,
    ENV_CONTAINER_FDS,
    ENV_GROUP_FDS,
    ENV_WINDOW_FDS,
    ENV_DOMAIN_JSON,
    ENV_IOMMUFD_FD,
    ENV_IOAS_ID,
    ENV_DEVICE_FDS,
];

/// The environment `iommufd open` gives the command: `VFIOCTL_IOMMUFD_FD` set to the fd,
/// every other hand-over variable removed (`None`).
pub fn iommufd_env(fd: i32) -> Vec<(&'static str, Option<String>)> {
    DOMAIN_VARS
        .iter()
        .map(|&k| (k, (k == ENV_IOMMUFD_FD).then(|| fd.to_string())))
        .collect()
}

/// `vfioctl iommufd open [--] COMMAND...`: exit 4 when no `watch` serves the broker, 1 when
/// refused (with the reason); otherwise COMMAND replaces this process.
pub fn iommufd_open(global: &super::Options, a: &args::IommufdOpenArgs) -> Exit {
    use crate::broker::client::{self, ClientError};
    use std::os::fd::AsRawFd;
    let Some((program, rest)) = a.command.split_first() else {
        eprintln!("vfioctl iommufd open: no command given");
        return Exit::Usage;
    };
    let fd = match client::open_iommufd(&global.run_dir) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("vfioctl iommufd open: {e}");
            return match e {
                ClientError::NoBroker { .. } => Exit::NoWatch,
                ClientError::Refused(_) => {
                    eprintln!(
                        "hint: the broker hands an iommufd to root and to the users a [[user]] entry \
                         names (by uid or group); the devices to bind are the cdevs that entry gives"
                    );
                    Exit::Failed
                }
                _ => Exit::Failed,
            };
        }
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (k, v) in iommufd_env(fd.as_raw_fd()) {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    exec_inheriting("vfioctl iommufd open", vec![fd], cmd)
}

fn hold(global: &super::Options, a: &args::DomainHoldArgs) -> Exit {
    let path = a.config.config.clone();
    // The one config loader, re-run on every SIGHUP.
    let access = global
        .config
        .as_ref()
        .map_or(crate::config::Access::Refuse, |c| c.access);
    let mut load = || crate::config::load_with(&path, access).map_err(|e| e.to_string());
    let roots = global.roots.clone();
    let mut observe = || host::observe(&roots, global.host_file()).map_err(|e| e.to_string());
    let mut domains = Domains::new(LinuxIommu::new(global.roots.clone()));
    let mut sources = crate::domain::hold::Sources {
        load: &mut load,
        observe: &mut observe,
    };
    let held = crate::domain::hold::hold(
        &mut domains,
        &mut sources,
        a.status_file.as_deref(),
        &mut std::io::stdout(),
    );
    match held {
        Ok(()) => Exit::Done,
        Err(e) => {
            eprintln!("vfioctl domain hold: {e}");
            Exit::Failed
        }
    }
}

/// After a one-shot `reconcile` converged: a process that exits cannot hold a domain, so ask
/// the running `watch` (found through its published state) to run a pass, which applies the
/// domain layer. Exit 0 when asked (or nothing to hold), 4 when no `watch` runs. `after` is
/// the host the pass left (read again when the pass did not read it whole).
pub(super) fn after_reconcile(
    global: &super::Options,
    cfg: &crate::config::Config,
    after: Option<&crate::host::Snapshot>,
) -> Exit {
    if cfg.domains.is_empty() {
        return Exit::Done;
    }
    // Now that the members are bound, their cdevs are known: an explicit iommufd the host
    // cannot give is an error (watch does not hold that domain either, but applies the others).
    let unrealisable = refuse_unrealisable(global, cfg, after);
    let exit = signal_watch(global, cfg);
    if unrealisable {
        Exit::Failed
    } else {
        exit
    }
}

/// Asks the running `watch` for a pass (SIGHUP); exit 4 when none runs.
fn signal_watch(global: &super::Options, cfg: &crate::config::Config) -> Exit {
    match crate::domain::published::read(&global.run_dir, &global.roots.proc) {
        Ok(p) => {
            let pid = nix::unistd::Pid::from_raw(p.pid as i32);
            match nix::sys::signal::kill(pid, Signal::SIGHUP) {
                Ok(()) => {
                    outln!(
                        "domains: asked the running vfioctl watch (pid {}) to apply the domain layer; `vfioctl status` shows the held domains",
                        p.pid
                    );
                    Exit::Done
                }
                Err(e) => {
                    eprintln!(
                        "domains: cannot signal vfioctl watch (pid {}): {e}; the domains were not applied",
                        p.pid
                    );
                    Exit::Failed
                }
            }
        }
        Err(e) => {
            eprintln!(
                "domains: {e}; the config's {} [[domain]] entr{} are held only by `vfioctl watch` (start it: systemctl start vfioctl)",
                cfg.domains.len(),
                if cfg.domains.len() == 1 { "y" } else { "ies" }
            );
            Exit::NoWatch
        }
    }
}

/// The domain changes `reconcile --dry-run` shows: what the running `watch` would change (or,
/// with none running or with `--host`, what a new one would build), and whose view that is.
pub(super) fn preview(
    global: &super::Options,
    config: &crate::config::Config,
    snap: &crate::host::Snapshot,
) -> (Vec<crate::domain::report::Event>, String) {
    if config.domains.is_empty() {
        return (Vec::new(), String::new());
    }
    let (held, whose) = match (
        global.host_file(),
        crate::domain::published::read(&global.run_dir, &global.roots.proc),
    ) {
        (None, Ok(p)) => (p.domains, format!("held by vfioctl watch (pid {})", p.pid)),
        (None, Err(e)) => (
            Vec::new(),
            format!("{e}: shown as a new watch would build them"),
        ),
        (Some(_), _) => (
            Vec::new(),
            "shown as a new watch would build them".to_string(),
        ),
    };
    (crate::domain::preview::preview(config, snap, &held), whose)
}

/// The domain section of the text dry run: each domain's backend and why, then the changes.
pub(super) fn print_preview(
    config: &crate::config::Config,
    backends: &[(String, crate::plan::backend::Resolved)],
    events: &[crate::domain::report::Event],
    whose: &str,
) {
    if config.domains.is_empty() {
        return;
    }
    outln!("\ndomains ({whose}):");
    for (name, b) in backends {
        outln!("  {}", b.line(name));
    }
    if events.is_empty() {
        outln!("  nothing to do");
    }
    for e in events {
        outln!("  {e}");
    }
}

/// Domains whose explicit `backend = "iommufd"` this host cannot give, printed as errors
/// (what is missing, how to fix). `true` when there are any: reconcile then exits 1. Reads the
/// host only when the config asks for iommufd explicitly.
pub(super) fn refuse_unrealisable(
    global: &super::Options,
    config: &crate::config::Config,
    host: Option<&crate::host::Snapshot>,
) -> bool {
    use crate::config::model::BackendChoice;
    if !config
        .domains
        .iter()
        .any(|d| d.backend == BackendChoice::Iommufd)
    {
        return false;
    }
    let observed;
    let host = match host {
        Some(h) => h,
        None => match global.observe() {
            Ok(s) => {
                observed = s;
                &observed
            }
            Err(e) => {
                eprintln!("vfioctl reconcile: {e}");
                return true;
            }
        },
    };
    let bad = crate::plan::backend::unrealisable(config, host);
    for e in &bad {
        eprintln!("error: {e}");
    }
    !bad.is_empty()
}

#[cfg(test)]
mod open_env_tests {
    use super::*;
    use crate::broker::protocol::{Description, DeviceDesc, GroupDesc, WindowDesc, VERSION};

    fn desc() -> Description {
        Description {
            version: VERSION,
            domain: "dma".into(),
            containers: vec![0, 2],
            groups: vec![
                GroupDesc {
                    group: 5,
                    fd: 1,
                    container: 0,
                },
                GroupDesc {
                    group: 9,
                    fd: 3,
                    container: 1,
                },
            ],
            windows: vec![WindowDesc {
                name: "buf".into(),
                iova: 0x10_0000,
                size: 0x20_0000,
                fd: 4,
            }],
            devices: vec![DeviceDesc {
                address: "0000:00:05.0".into(),
                group: 5,
                fd: 1,
                ioas: None,
            }],
            iommufd: None,
        }
    }

    #[test]
    fn a_legacy_domain_leaves_the_iommufd_variables_empty() {
        let env: std::collections::BTreeMap<_, _> = open_env(&desc(), &[10, 11, 12, 13, 14])
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env[ENV_IOMMUFD_FD], "");
        assert_eq!(env[ENV_IOAS_ID], "");
        assert_eq!(env[ENV_DEVICE_FDS], "");
    }

    /// A per-group iommufd domain: the iommufd, two devices (one per IOAS), a window.
    #[test]
    fn an_iommufd_domain_exports_its_iommufd_ioas_and_device_fds() {
        use crate::broker::protocol::{IoasDesc, IommufdDesc};
        let d = Description {
            version: VERSION,
            domain: "dma".into(),
            containers: vec![],
            groups: vec![],
            windows: vec![WindowDesc {
                name: "buf".into(),
                iova: 0x10_0000,
                size: 0x20_0000,
                fd: 3,
            }],
            devices: vec![
                DeviceDesc {
                    address: "0000:00:05.0".into(),
                    group: 5,
                    fd: 1,
                    ioas: Some(2),
                },
                DeviceDesc {
                    address: "0000:00:06.0".into(),
                    group: 6,
                    fd: 2,
                    ioas: Some(3),
                },
            ],
            iommufd: Some(IommufdDesc {
                fd: 0,
                ioas: vec![
                    IoasDesc {
                        id: 2,
                        groups: vec![5],
                    },
                    IoasDesc {
                        id: 3,
                        groups: vec![6],
                    },
                ],
            }),
        };
        let env: std::collections::BTreeMap<_, _> = open_env(&d, &[20, 21, 22, 23])
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env[ENV_IOMMUFD_FD], "20");
        assert_eq!(env[ENV_IOAS_ID], "2");
        assert_eq!(env[ENV_DEVICE_FDS], "0000:00:05.0=21,0000:00:06.0=22");
        assert_eq!(env[ENV_WINDOW_FDS], "23:0x100000:0x200000");
        assert_eq!(env[ENV_CONTAINER_FD], "");
        assert_eq!(env[ENV_GROUP_FDS], "");
        let json: serde_json::Value = serde_json::from_str(&env[ENV_DOMAIN_JSON]).unwrap();
        assert_eq!(json["iommufd"]["fd"], 20);
        assert_eq!(json["iommufd"]["ioas"][1]["id"], 3);
        assert_eq!(json["devices"][1]["fd"], 22);
        assert_eq!(json["devices"][1]["ioas"], 3);
        assert!(open_env(&d, &[20]).is_err(), "a missing fd is an error");
    }

    #[test]
    fn indices_become_fd_numbers() {
        let env: std::collections::BTreeMap<_, _> = open_env(&desc(), &[10, 11, 12, 13, 14])
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env[ENV_CONTAINER_FD], "10");
        assert_eq!(env[ENV_CONTAINER_FDS], "10,12");
        assert_eq!(env[ENV_GROUP_FDS], "5=11,9=13");
        assert_eq!(env[ENV_WINDOW_FDS], "14:0x100000:0x200000");
        let json: serde_json::Value = serde_json::from_str(&env[ENV_DOMAIN_JSON]).unwrap();
        assert_eq!(json["containers"], serde_json::json!([10, 12]));
        assert_eq!(json["groups"][1]["fd"], 13);
        assert_eq!(json["windows"][0]["fd"], 14);
        assert_eq!(json["devices"][0]["fd"], 11);
    }

    #[test]
    fn iommufd_open_sets_the_iommufd_and_clears_the_domain_variables() {
        let env: std::collections::BTreeMap<_, _> = iommufd_env(7).into_iter().collect();
        assert_eq!(env[ENV_IOMMUFD_FD], Some("7".to_string()));
        for k in [
            ENV_CONTAINER_FD,
            ENV_CONTAINER_FDS,
            ENV_GROUP_FDS,
            ENV_WINDOW_FDS,
            ENV_DOMAIN_JSON,
            ENV_IOAS_ID,
            ENV_DEVICE_FDS,
        ] {
            assert_eq!(env[k], None, "{k} is cleared");
        }
        // The same name a domain hand-over uses for its iommufd.
        assert_eq!(ENV_IOMMUFD_FD, "VFIOCTL_IOMMUFD_FD");
    }

    #[test]
    fn a_missing_fd_is_an_error() {
        let err = open_env(&desc(), &[10, 11]).unwrap_err();
        assert!(err.contains("names fd 2 but 2 arrived"), "{err}");
    }
}
