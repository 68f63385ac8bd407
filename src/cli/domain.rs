//! `vfioctl domain`: wires held domains to the command line. `open` (hand-over, issue 10) is
//! not built yet; the hidden `hold` runs the domain layer alone in the foreground, to prove
//! and debug the real ioctl path (the VM suite's `domains` scenarios drive it).

use std::path::Path;

use nix::sys::signal::{SigSet, Signal};

use super::{args, Exit};
use crate::domain::linux::LinuxIommu;
use crate::domain::{Domains, Report};
use crate::host;

pub fn run(global: &args::GlobalArgs, args: &args::DomainCommand) -> Exit {
    match args {
        args::DomainCommand::Open(_) => {
            eprintln!("vfioctl domain open: not available in this build yet");
            Exit::Failed
        }
        args::DomainCommand::Hold(a) => hold(global, a),
        args::DomainCommand::BenchMap(a) => bench_map(global, a),
    }
}

fn hold(global: &args::GlobalArgs, a: &args::DomainHoldArgs) -> Exit {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("vfioctl domain hold: cannot block signals: {e}");
        return Exit::Failed;
    }
    let mut domains = Domains::new(LinuxIommu::new(global.roots()));
    let mut pass = 0u64;
    loop {
        pass += 1;
        let report = hold_pass(global, &a.config.config, &mut domains);
        print!("{report}");
        println!(
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
    print!("{}", domains.release_all());
    if let Some(path) = &a.status_file {
        let _ = std::fs::remove_file(path);
    }
    Exit::Done
}

fn hold_pass(
    global: &args::GlobalArgs,
    config: &Path,
    domains: &mut Domains<LinuxIommu>,
) -> Report {
    let mut report = Report::default();
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => {
            report.error("*", format!("{}: {e}", config.display()));
            return report;
        }
    };
    let cfg = match crate::config::parse_str(&text, config) {
        Ok(c) => c,
        Err(d) => {
            report.error(
                "*",
                format!("the config is not valid, nothing changed:\n{d}"),
            );
            return report;
        }
    };
    let snap = match host::observe(&global.roots(), global.host.as_deref()) {
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
pub(super) fn bench_map(global: &args::GlobalArgs, a: &args::DomainBenchArgs) -> Exit {
    use crate::config::model::WindowSpec;
    use crate::config::model::{Config, DeviceSpec, DomainSpec, Origin, Placement, Selector};

    let fail = |msg: String| {
        eprintln!("vfioctl domain bench-map: {msg}");
        Exit::Failed
    };
    let Ok(addr) = a.device.parse::<crate::pci::PciAddress>() else {
        return fail(format!("{}: not a PCI address", a.device));
    };
    let snap = match host::observe(&global.roots(), global.host.as_deref()) {
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
    if let Err(e) = minimal_map(&global.roots(), group, size) {
        return fail(format!("warm-up: {e}"));
    }
    let mut ours = Vec::new();
    let mut minimal = Vec::new();
    for _ in 0..a.rounds {
        let mut domains = Domains::new(LinuxIommu::new(global.roots()));
        let t = std::time::Instant::now();
        let report = domains.reconcile(&cfg, &snap);
        let took = t.elapsed();
        if !report.ok() || domains.pinned_bytes() != size {
            return fail(format!("vfioctl did not map the window:\n{report}"));
        }
        domains.release_all();
        ours.push(took);
        match minimal_map(&global.roots(), group, size) {
            Ok(took) => minimal.push(took),
            Err(e) => return fail(format!("minimal sequence: {e}")),
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, m) = (median(&mut ours), median(&mut minimal));
    println!(
        "bench-map: {} MiB window, group {group}, {} rounds: vfioctl median {:.1} ms, minimal MAP_DMA median {:.1} ms, ratio {:.3}",
        a.mib,
        a.rounds,
        o.as_secs_f64() * 1e3,
        m.as_secs_f64() * 1e3,
        o.as_secs_f64() / m.as_secs_f64()
    );
    println!("bench-map: vfioctl runs (ms): {}", millis(&ours));
    println!("bench-map: minimal runs (ms): {}", millis(&minimal));
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
pub(super) fn after_reconcile(global: &args::GlobalArgs, config: &Path) -> Exit {
    let Ok(cfg) = crate::config::load(config) else {
        return Exit::Done; // `apply` loaded it a moment ago; nothing more to say here.
    };
    if cfg.domains.is_empty() {
        return Exit::Done;
    }
    match crate::domain::published::read(&global.run_dir, &global.proc_root) {
        Ok(p) => {
            let pid = nix::unistd::Pid::from_raw(p.pid as i32);
            match nix::sys::signal::kill(pid, Signal::SIGHUP) {
                Ok(()) => {
                    println!(
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
    global: &args::GlobalArgs,
    config: &crate::config::Config,
    snap: &crate::host::Snapshot,
) -> (Vec<crate::domain::report::Event>, String) {
    if config.domains.is_empty() {
        return (Vec::new(), String::new());
    }
    let (held, whose) = match (
        &global.host,
        crate::domain::published::read(&global.run_dir, &global.proc_root),
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
    println!("\ndomains ({whose}):");
    if events.is_empty() {
        println!("  nothing to do");
    }
    for e in events {
        println!("  {e}");
    }
}
