//! `vfioctl status`: observes the host (live, or `--host FILE`) and prints the status view,
//! or with `--json` the snapshot itself. An observation: exits 0 even when groups are not
//! viable or the IOMMU is off.

use super::{args, Exit, HostSource, Options};
use crate::host;

pub fn run(opts: &Options, args: &args::StatusArgs) -> Exit {
    if args.format == Some(args::StatusFormat::Openmetrics) {
        return openmetrics(opts, args);
    }
    let json = args.json || args.format == Some(args::StatusFormat::Json);
    // The text view shows no accounts: a live scan skips reading them (the JSON is the whole
    // snapshot).
    let observed = match (&opts.host, json) {
        (HostSource::Live, false) => {
            crate::host::scan::scan_without_accounts(&opts.roots).map_err(Into::into)
        }
        _ => opts.observe(),
    };
    let (snap, held) = match with_held(opts, observed) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    // Who holds what, from the fd broker of the same `watch`.
    let broker = match held {
        Some(_) => crate::broker::ledger::read_live(&opts.run_dir, &opts.roots.proc),
        None => None,
    };
    if json {
        let text = match held {
            Some(p) => crate::domain::status::with_domains_json(&snap, &p.domains),
            None => host::snapshot_json(&snap),
        };
        match broker {
            Some(l) => out!("{}", with_broker_json(&text, &l)),
            None => out!("{text}"),
        }
    } else {
        out!("{}", host::status::render(&snap));
        if let Some(p) = held {
            out!("\n{}", crate::domain::status::render_text(&p.domains));
        }
        if let Some(l) = broker {
            out!("{}", crate::broker::ledger::render_text(&l));
        }
    }
    Exit::Done
}

/// Adds a `broker` key (the live hand-overs) to the status JSON.
/// The observed host, or exit 1 saying why; with the domains a running `watch` publishes
/// (live host only: held domains live in that process).
fn with_held<E: std::fmt::Display>(
    opts: &Options,
    observed: Result<host::Snapshot, E>,
) -> Result<(host::Snapshot, Option<crate::domain::published::Published>), Exit> {
    let snap = observed.map_err(|e| {
        eprintln!("vfioctl status: {e}");
        Exit::Failed
    })?;
    let held = match opts.is_live() {
        true => crate::domain::published::read(&opts.run_dir, &opts.roots.proc).ok(),
        false => None,
    };
    Ok((snap, held))
}

fn with_broker_json(text: &str, ledger: &crate::broker::ledger::Ledger) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    if let serde_json::Value::Object(map) = &mut v {
        map.insert(
            "broker".into(),
            serde_json::to_value(ledger).unwrap_or_default(),
        );
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// `status --format openmetrics`: the host (and, with `--config`, the drift) as Prometheus text.
fn openmetrics(opts: &Options, args: &args::StatusArgs) -> Exit {
    let config = match &args.config {
        Some(path) => match crate::config::load(path) {
            Ok(c) => Some(c),
            Err(crate::config::LoadError::Invalid(d)) => {
                eprint!("{}", d.render(crate::config::Style::Plain));
                return Exit::Failed;
            }
            Err(e) => {
                eprintln!("vfioctl status: {e}");
                return Exit::Failed;
            }
        },
        None => None,
    };
    let (snap, held) = match with_held(opts, opts.observe()) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let pending = config.as_ref().map(|c| {
        let ctx = crate::plan::Context {
            accounts: crate::host::accounts::resolve(&crate::plan::ownership::account_names(c)),
            ..Default::default()
        };
        crate::plan::plan_with(c, &snap, &ctx)
    });
    out!(
        "{}",
        crate::metrics::render(&crate::metrics::Sample {
            host: &snap,
            config: config.as_ref(),
            pending: pending.as_ref(),
            domains: held.as_ref().map(|p| p.domains.as_slice()),
            watch: None,
        })
    );
    Exit::Done
}
