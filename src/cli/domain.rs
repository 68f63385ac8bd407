//! `vfioctl domain`: wires held domains to the command line. `open` receives a domain from
//! the running `watch`'s fd broker and runs a command with its fds inherited; the hidden `hold` runs the domain layer alone in the foreground, to prove
//! and debug the real ioctl path (the VM suite's `domains` scenarios drive it).

use std::path::Path;

use nix::sys::signal::{SigSet, Signal};

use super::{args, Exit};
use crate::domain::linux::LinuxIommu;
use crate::domain::{Domains, Report};
use crate::host;

pub fn run(global: &super::Options, args: &args::DomainCommand) -> Exit {
    match args {
        args::DomainCommand::Open(a) => open(global, a),
        args::DomainCommand::Hold(a) => hold(global, a),
        args::DomainCommand::BenchMap(a) => bench_map(global, a),
        args::DomainCommand::BenchOpen(a) => bench_open(global, a),
    }
}

/// What `open` tells the command, in its environment.
pub const ENV_CONTAINER_FD: &str = "VFIOCTL_CONTAINER_FD";
pub const ENV_CONTAINER_FDS: &str = "VFIOCTL_CONTAINER_FDS";
pub const ENV_GROUP_FDS: &str = "VFIOCTL_GROUP_FDS";
pub const ENV_WINDOW_FDS: &str = "VFIOCTL_WINDOW_FDS";
pub const ENV_DOMAIN_JSON: &str = "VFIOCTL_DOMAIN_JSON";

/// The environment `open` gives the command: fd numbers instead of the description's
/// indices. `VFIOCTL_GROUP_FDS` is `GROUP=FD,...`; `VFIOCTL_WINDOW_FDS` is
/// `FD:IOVA:SIZE,...` (hex IOVA and size, in the description's order); the JSON is the
/// description with every `fd` index replaced by the fd number.
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
    for dev in &mut d.devices {
        dev.fd = fd(dev.fd)? as usize;
    }
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
    ])
}

fn open(global: &super::Options, a: &args::DomainOpenArgs) -> Exit {
    use crate::broker::client::{self, ClientError};
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::process::CommandExt;
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
            return Exit::Failed;
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
    for fd in &grant.fds {
        let cleared = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
        if let Err(e) = cleared {
            eprintln!(
                "vfioctl domain open: cannot pass fd {} on: {e}",
                fd.as_raw_fd()
            );
            return Exit::Failed;
        }
    }
    // From here the fds belong to the command.
    for fd in grant.fds {
        let _ = fd.into_raw_fd();
    }
    let Some((program, rest)) = a.command.split_first() else {
        eprintln!("vfioctl domain open: no command given after --");
        return Exit::Usage;
    };
    let err = std::process::Command::new(program)
        .args(rest)
        .envs(env)
        .exec();
    eprintln!("vfioctl domain open: cannot run {program}: {err}");
    Exit::Failed
}

fn bench_open(global: &super::Options, a: &args::DomainBenchOpenArgs) -> Exit {
    use crate::vfio::container::{Container, Group};
    use std::time::Instant;
    let dev = global.roots.clone().dev;
    let mut times = Vec::new();
    for _ in 0..a.rounds.max(1) {
        let start = Instant::now();
        let r: Result<(), String> = match a.direct {
            None => crate::broker::client::open(&global.run_dir, &a.name)
                .map(drop)
                .map_err(|e| e.to_string()),
            Some(g) => (|| {
                let c = Container::open(&dev.join("vfio/vfio")).map_err(|e| e.to_string())?;
                let grp =
                    Group::open(&dev.join(format!("vfio/{g}")), g).map_err(|e| e.to_string())?;
                grp.set_container(&c).map_err(|e| e.to_string())?;
                c.set_iommu_type1v2().map_err(|e| e.to_string())?;
                drop(grp);
                drop(c);
                Ok(())
            })(),
        };
        let took = start.elapsed();
        if let Err(e) = r {
            eprintln!("vfioctl domain bench-open: {e}");
            return Exit::Failed;
        }
        times.push(took);
    }
    times.sort_unstable();
    let what = match a.direct {
        None => format!("broker hand-over of \"{}\"", a.name),
        Some(g) => format!("direct open+attach of group {g}"),
    };
    outln!(
        "{what}: median {:?}, min {:?}, max {:?} over {} rounds",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
    Exit::Done
}

fn hold(global: &super::Options, a: &args::DomainHoldArgs) -> Exit {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("vfioctl domain hold: cannot block signals: {e}");
        return Exit::Failed;
    }
    let mut domains = Domains::new(LinuxIommu::new(global.roots.clone()));
    let mut pass = 0u64;
    loop {
        pass += 1;
        let report = hold_pass(global, &a.config.config, &mut domains);
        out!("{report}");
        outln!(
            "vfioctl domain hold: pass {pass} done ({} domain(s), {} bytes pinned, {} error(s))",
            domains.held().len(),
            domains.pinned_bytes(),
            report.errors.len()
        );
        if let Some(path) = &a.status_file {
            if let Err(e) = write_status(path, pass, &domains, &report) {
                eprintln!("vfioctl domain hold: {}: {e}", path.display());
            }
        }
        match signals.wait() {
            Ok(Signal::SIGHUP) => continue,
            Ok(_) | Err(_) => break,
        }
    }
    out!("{}", domains.release_all());
    if let Some(path) = &a.status_file {
        let _ = std::fs::remove_file(path);
    }
    Exit::Done
}

fn hold_pass(global: &super::Options, config: &Path, domains: &mut Domains<LinuxIommu>) -> Report {
    let mut report = Report::default();
    let access = global
        .config
        .as_ref()
        .map_or(crate::config::Access::Refuse, |c| c.access);
    let cfg = match crate::config::load_with(config, access) {
        Ok(c) => c,
        Err(crate::config::LoadError::Io(e)) => {
            report.error("*", format!("cannot read {e}"));
            return report;
        }
        Err(crate::config::LoadError::Invalid(d)) => {
            report.error(
                "*",
                format!("the config is not valid, nothing changed:\n{d}"),
            );
            return report;
        }
    };
    let snap = match host::observe(&global.roots.clone(), global.host_file()) {
        Ok(s) => s,
        Err(e) => {
            report.error("*", format!("cannot read the host: {e}"));
            return report;
        }
    };
    report.merge(domains.reconcile(&cfg, &snap));
    report
}

fn write_status(
    path: &Path,
    pass: u64,
    domains: &Domains<LinuxIommu>,
    report: &Report,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // The fd numbers, so a test can see what the broker would hand over.
    let fds: serde_json::Map<String, serde_json::Value> = domains
        .held()
        .iter()
        .map(|(name, d)| {
            let f = d.fds();
            let named = |pairs: Vec<(String, i32)>| {
                pairs
                    .into_iter()
                    .map(|(k, fd)| (k, serde_json::Value::from(fd)))
                    .collect::<serde_json::Map<_, _>>()
            };
            let groups = named(
                f.groups
                    .iter()
                    .map(|(g, fd)| (g.to_string(), fd.as_raw_fd()))
                    .collect(),
            );
            let windows = named(
                f.windows
                    .iter()
                    .map(|(w, fd)| (w.to_string(), fd.as_raw_fd()))
                    .collect(),
            );
            let containers: Vec<i32> = f.containers.iter().map(|c| c.as_raw_fd()).collect();
            let v = serde_json::json!({
                "containers": containers,
                "groups": groups,
                "windows": windows,
            });
            (name.clone(), v)
        })
        .collect();
    let body = serde_json::json!({
        "pass": pass,
        "pid": std::process::id(),
        "domains": domains.status(),
        "fds": fds,
        "report": report,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{body:#}\n"))?;
    std::fs::rename(&tmp, path)
}

/// `domain bench-map`: vfioctl's domain reconcile of one window against the minimal sequence
/// a hand-written program would run, on the same kind of memory (a fresh shared memfd each
/// round, so both pay the same page faults when the kernel pins it).
pub(super) fn bench_map(global: &super::Options, a: &args::DomainBenchArgs) -> Exit {
    use crate::config::model::WindowSpec;
    use crate::config::model::{Config, DeviceSpec, DomainSpec, Origin, Placement, Selector};

    let fail = |msg: String| {
        eprintln!("vfioctl domain bench-map: {msg}");
        Exit::Failed
    };
    let Ok(addr) = a.device.parse::<crate::pci::PciAddress>() else {
        return fail(format!("{}: not a PCI address", a.device));
    };
    let snap = match host::observe(&global.roots.clone(), global.host_file()) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot read the host: {e}")),
    };
    let Some(group) = snap.device(addr).and_then(|d| d.iommu_group) else {
        return fail(format!("{addr}: no such function or no IOMMU group"));
    };
    let size = a.mib << 20;
    let cfg = Config {
        version: 1,
        devices: vec![DeviceSpec {
            name: "dev".into(),
            selector: Selector::Address(addr),
            driver: "vfio-pci".into(),
            companions: vec![],
            force: false,
            origin: Origin::default(),
        }],
        domains: vec![DomainSpec {
            name: "bench".into(),
            devices: vec!["dev".into()],
            placement: Placement::Shared,
            windows: vec![WindowSpec {
                name: Some("w".into()),
                iova: 1 << 32,
                size,
                hugepages: false,
                origin: Origin::default(),
            }],
            origin: Origin::default(),
        }],
        ..Config::default()
    };
    let limit = crate::domain::memory::ensure_memlock(size);
    if limit.shortfall > 0 {
        return fail(format!("RLIMIT_MEMLOCK is {} bytes short", limit.shortfall));
    }
    // One untimed round first: the guest's first touch of that much memory costs about a
    // second more, whichever side pays it.
    if let Err(e) = minimal_map(&global.roots.clone(), group, size) {
        return fail(format!("warm-up: {e}"));
    }
    let mut ours = Vec::new();
    let mut minimal = Vec::new();
    for _ in 0..a.rounds {
        let mut domains = Domains::new(LinuxIommu::new(global.roots.clone()));
        let t = std::time::Instant::now();
        let report = domains.reconcile(&cfg, &snap);
        let took = t.elapsed();
        if !report.ok() || domains.pinned_bytes() != size {
            return fail(format!("vfioctl did not map the window:\n{report}"));
        }
        domains.release_all();
        ours.push(took);
        match minimal_map(&global.roots.clone(), group, size) {
            Ok(took) => minimal.push(took),
            Err(e) => return fail(format!("minimal sequence: {e}")),
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, m) = (median(&mut ours), median(&mut minimal));
    outln!(
        "bench-map: {} MiB window, group {group}, {} rounds: vfioctl median {:.1} ms, minimal MAP_DMA median {:.1} ms, ratio {:.3}",
        a.mib,
        a.rounds,
        o.as_secs_f64() * 1e3,
        m.as_secs_f64() * 1e3,
        o.as_secs_f64() / m.as_secs_f64()
    );
    outln!("bench-map: vfioctl runs (ms): {}", millis(&ours));
    outln!("bench-map: minimal runs (ms): {}", millis(&minimal));
    Exit::Done
}

fn millis(v: &[std::time::Duration]) -> String {
    v.iter()
        .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a minimal program does: open the container and group, attach, select type1v2, back
/// the window with a memfd and map it with one VFIO_IOMMU_MAP_DMA. Timed from the first open
/// to the map's return, like vfioctl's reconcile.
fn minimal_map(
    roots: &crate::host::Roots,
    group: u32,
    size: u64,
) -> Result<std::time::Duration, String> {
    use crate::vfio::container::{Container, Group};
    use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

    let len = std::num::NonZeroUsize::new(size as usize).ok_or("empty window")?;
    let t = std::time::Instant::now();
    let c = Container::open(&roots.dev_vfio().join("vfio")).map_err(|e| e.to_string())?;
    let g = Group::open(&roots.group_node(group), group).map_err(|e| e.to_string())?;
    g.set_container(&c).map_err(|e| e.to_string())?;
    c.set_iommu_type1v2().map_err(|e| e.to_string())?;
    let fd = nix::sys::memfd::memfd_create("bench", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| e.to_string())?;
    nix::unistd::ftruncate(&fd, size as i64).map_err(|e| e.to_string())?;
    // SAFETY: a fresh shared mapping of our own memfd of `len` bytes.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: the memory stays mapped until after the container is closed below.
    let mapped = unsafe { c.map_dma(1 << 32, size, ptr.as_ptr() as u64) };
    let took = t.elapsed();
    drop(g);
    drop(c);
    // SAFETY: the mapping made above; the container that pinned it is closed.
    let _ = unsafe { munmap(ptr, len.get()) };
    mapped.map_err(|e| e.to_string())?;
    Ok(took)
}

/// After a one-shot `reconcile` converged: a process that exits cannot hold a domain, so ask
/// the running `watch` (found through its published state) to run a pass, which applies the
/// domain layer. Exit 0 when asked (or nothing to hold), 4 when no `watch` runs.
pub(super) fn after_reconcile(global: &super::Options, cfg: &crate::config::Config) -> Exit {
    if cfg.domains.is_empty() {
        return Exit::Done;
    }
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

/// The domain section of the text dry run.
pub(super) fn print_preview(
    config: &crate::config::Config,
    events: &[crate::domain::report::Event],
    whose: &str,
) {
    if config.domains.is_empty() {
        return;
    }
    outln!("\ndomains ({whose}):");
    if events.is_empty() {
        outln!("  nothing to do");
    }
    for e in events {
        outln!("  {e}");
    }
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
            }],
        }
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
    fn a_missing_fd_is_an_error() {
        let err = open_env(&desc(), &[10, 11]).unwrap_err();
        assert!(err.contains("names fd 2 but 2 arrived"), "{err}");
    }
}
