//! `vfioctl domain hold`: the domain layer alone in the foreground, without binding or the fd
//! broker, to prove and debug the real ioctl path (the VM suite's `domains` scenarios drive
//! it). This module owns that loop: a pass at start and on every SIGHUP (load the config,
//! read the host, reconcile the domains), everything released on SIGTERM or SIGINT, and the
//! optional status file (the held domains, their fd numbers, the last report), written
//! atomically after every pass and removed at the end.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use nix::sys::signal::{SigSet, Signal};

use super::iommu::Iommu;
use super::{Domains, Report};
use crate::config::Config;
use crate::host::Snapshot;

/// Where a pass gets the config and the host (the caller's one loader and observer).
pub struct Sources<'a> {
    pub load: &'a mut dyn FnMut() -> Result<Config, String>,
    pub observe: &'a mut dyn FnMut() -> Result<Snapshot, String>,
}

/// One pass: load, observe, reconcile. A config or host that cannot be read changes nothing.
pub fn pass<I: Iommu>(domains: &mut Domains<I>, sources: &mut Sources<'_>) -> Report {
    let mut report = Report::default();
    let config = match (sources.load)() {
        Ok(c) => c,
        Err(e) => {
            report.error(
                "*",
                format!("the config is not valid, nothing changed:\n{e}"),
            );
            return report;
        }
    };
    let host = match (sources.observe)() {
        Ok(h) => h,
        Err(e) => {
            report.error("*", format!("cannot read the host: {e}"));
            return report;
        }
    };
    report.merge(domains.reconcile(&config, &host));
    report
}

/// The status file's content: the pass, this pid, the held domains, their fd numbers (so a
/// test can see what the broker would hand over) and the pass's report.
pub fn status_json<I: Iommu>(
    pass: u64,
    domains: &Domains<I>,
    report: &Report,
) -> serde_json::Value {
    fn raw(fd: &BorrowedFd<'_>) -> serde_json::Value {
        serde_json::Value::from(fd.as_raw_fd())
    }
    let fds: serde_json::Map<String, serde_json::Value> = domains
        .held()
        .iter()
        .map(|(name, d)| {
            let f = d.fds();
            let containers: Vec<serde_json::Value> = f.containers.iter().map(raw).collect();
            let groups: serde_json::Map<_, _> = f
                .groups
                .iter()
                .map(|(g, fd, _)| (g.to_string(), raw(fd)))
                .collect();
            let windows: serde_json::Map<_, _> = f
                .windows
                .iter()
                .map(|(w, fd)| (w.name.clone(), raw(fd)))
                .collect();
            let mut v = serde_json::json!({
                "containers": containers,
                "groups": groups,
                "windows": windows,
            });
            if !f.devices.is_empty() {
                // iommufd: each member's cdev fd by address, and the IOAS ids.
                let devices: serde_json::Map<_, _> = f
                    .devices
                    .iter()
                    .map(|(_, a, fd, _)| (a.to_string(), raw(fd)))
                    .collect();
                v["devices"] = devices.into();
                v["ioas"] = f.ioas.clone().into();
            }
            (name.clone(), v)
        })
        .collect();
    serde_json::json!({
        "pass": pass,
        "pid": std::process::id(),
        "domains": domains.status(),
        "fds": fds,
        "report": report,
    })
}

/// Runs the loop until SIGTERM or SIGINT, printing each pass's report to `out`, then releases
/// every held domain. Fails only when the signals cannot be blocked (before any pass).
pub fn hold<I: Iommu>(
    domains: &mut Domains<I>,
    sources: &mut Sources<'_>,
    status_file: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    let mut n = 0u64;
    loop {
        n += 1;
        let report = pass(domains, sources);
        let _ = write!(out, "{report}");
        let _ = writeln!(
            out,
            "vfioctl domain hold: pass {n} done ({} domain(s), {} bytes pinned, {} error(s))",
            domains.held().len(),
            domains.pinned_bytes(),
            report.errors.len()
        );
        let _ = out.flush();
        if let Some(path) = status_file {
            let body = format!("{:#}\n", status_json(n, domains, &report));
            if let Err(e) = crate::files::write_atomic_path(path, body.as_bytes(), 0o644) {
                let _ = writeln!(out, "vfioctl domain hold: {e}");
            }
        }
        match signals.wait() {
            Ok(Signal::SIGHUP) => continue,
            Ok(_) | Err(_) => break,
        }
    }
    let _ = write!(out, "{}", domains.release_all());
    if let Some(path) = status_file {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        {
            let _ = crate::files::remove_durable(dir, name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::simulated::SimIommu;

    #[test]
    fn a_pass_that_cannot_load_or_observe_changes_nothing() {
        let mut domains = Domains::new(SimIommu::default());
        let mut load = || Err::<Config, _>("line 1: bad".to_string());
        let mut observe = || Ok(Snapshot::default());
        let report = pass(
            &mut domains,
            &mut Sources {
                load: &mut load,
                observe: &mut observe,
            },
        );
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(format!("{report}").contains("line 1: bad"), "{report}");
        assert!(domains.held().is_empty());
        let mut load = || Ok(Config::default());
        let mut observe = || Err::<Snapshot, _>("no sysfs".to_string());
        let report = pass(
            &mut domains,
            &mut Sources {
                load: &mut load,
                observe: &mut observe,
            },
        );
        assert!(
            format!("{report}").contains("cannot read the host: no sysfs"),
            "{report}"
        );
        let status = status_json(2, &domains, &report);
        assert_eq!(status["pass"], 2);
        assert_eq!(status["fds"], serde_json::json!({}));
    }
}
