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
    let body = serde_json::json!({
        "pass": pass,
        "pid": std::process::id(),
        "domains": domains.status(),
        "report": report,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{body:#}\n"))?;
    std::fs::rename(&tmp, path)
}
