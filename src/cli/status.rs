//! `vfioctl status`: observes the host (live, or `--host FILE`) and prints the status view,
//! or with `--json` the snapshot itself. An observation: exits 0 even when groups are not
//! viable or the IOMMU is off.

use super::{args, Exit, HostSource, Options};
use crate::host;

pub fn run(opts: &Options, args: &args::StatusArgs) -> Exit {
    // The text view shows no accounts: a live scan skips reading them (the JSON is the whole
    // snapshot).
    let observed = match (&opts.host, args.json) {
        (HostSource::Live, false) => {
            crate::host::scan::scan_without_accounts(&opts.roots).map_err(Into::into)
        }
        _ => opts.observe(),
    };
    let snap = match observed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfioctl status: {e}");
            return Exit::Failed;
        }
    };
    // Held domains live in the running `watch`; shown when one publishes them (live host only).
    let held = match opts.is_live() {
        true => crate::domain::published::read(&opts.run_dir, &opts.roots.proc).ok(),
        false => None,
    };
    // Who holds what, from the fd broker of the same `watch`.
    let broker = match held {
        Some(_) => crate::broker::ledger::read_live(&opts.run_dir, &opts.roots.proc),
        None => None,
    };
    if args.json {
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
