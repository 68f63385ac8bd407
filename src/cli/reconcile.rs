//! `vfioctl reconcile`: wires planning and applying (issues 6, 7) to the command line.
//! `--dry-run`/`--check` show the plan ([`dry_run`]); without them the plan is applied
//! ([`apply`]).

use std::time::Duration;

use super::{args, Exit};
use crate::apply::{self, ApplyError, Options};
use crate::host::accounts;
use crate::kernel::linux::{LinuxHost, Timeouts};

pub fn run(global: &args::GlobalArgs, args: &args::ReconcileArgs) -> Exit {
    if args.dry_run || args.check {
        return dry_run(global, args);
    }
    // Usage first: nothing is read for a command that cannot run.
    if global.host.is_some() {
        eprintln!(
            "vfioctl reconcile: --host FILE describes a host that cannot be changed; use it with --dry-run, or drop it to apply to this machine"
        );
        return Exit::Usage;
    }
    if let Err(exit) = device_scope(args) {
        return exit;
    }
    let Some(config) = load_config(&args.config.config, "changed") else {
        return Exit::Failed;
    };
    let exit = super::cdi::after_reconcile(
        global,
        &config,
        args.lock_timeout,
        apply(global, args, &config),
    );
    match exit {
        // Domains are held by `watch`, not by this process: hand the domain layer to it.
        Exit::Done => super::domain::after_reconcile(global, &config),
        other => other,
    }
}

/// The function `--device` names, if any; a malformed address is a usage error.
fn device_scope(args: &args::ReconcileArgs) -> Result<Option<crate::pci::PciAddress>, Exit> {
    match args
        .device
        .as_deref()
        .map(str::parse::<crate::pci::PciAddress>)
    {
        None => Ok(None),
        Some(Ok(a)) => Ok(Some(a)),
        Some(Err(e)) => {
            eprintln!(
                "vfioctl reconcile: --device {}: {e}",
                args.device.as_deref().unwrap_or_default()
            );
            Err(Exit::Usage)
        }
    }
}

/// Loads and checks the config; on failure prints every diagnostic and says that nothing was
/// `done` (planned or changed).
fn load_config(path: &std::path::Path, done: &str) -> Option<crate::config::Config> {
    match crate::config::load(path) {
        Ok(c) => Some(c),
        Err(crate::config::LoadError::Invalid(d)) => {
            eprint!("{}", d.render(crate::config::Style::Plain));
            eprintln!(
                "vfioctl reconcile: {} is not a valid config; nothing was {done}",
                path.display()
            );
            None
        }
        Err(e) => {
            eprintln!("vfioctl reconcile: {e}");
            None
        }
    }
}

// ---- showing the plan (issue 6) -------------------------------------------------------------

/// Shows the plan and changes nothing: the config, the host (live scan or `--host FILE`), the
/// journal's taken devices (live host only: a snapshot file is some other moment or machine)
/// and the accounts the config names. Exit 0 computed, 1 not realisable (every reason printed),
/// 2 usage, 3 with `--check` when changes are pending.
fn dry_run(global: &args::GlobalArgs, args: &args::ReconcileArgs) -> Exit {
    let scope = match device_scope(args) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let Some(config) = load_config(&args.config.config, "planned") else {
        return Exit::Failed;
    };
    let snap = match crate::host::observe(&global.roots(), global.host.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfioctl reconcile: {e}");
            return Exit::Failed;
        }
    };
    let (taken, taken_vfs) = if global.host.is_some() {
        Default::default()
    } else {
        match apply::load_context(&global.state_dir, &global.run_dir, &snap) {
            Ok(t) => t,
            Err(e) => {
                eprintln!(
                    "vfioctl reconcile: note: cannot read the journal ({e}); releases of \
                     devices taken earlier are not shown"
                );
                Default::default()
            }
        }
    };
    let accounts = if global.host.is_some() {
        accounts::from_snapshot(&crate::plan::ownership::account_names(&config), &snap)
    } else {
        accounts::with_memlock_limits(
            accounts::resolve(&crate::plan::ownership::account_names(&config)),
            &global.proc_root,
        )
    };
    let ctx = crate::plan::Context {
        taken,
        accounts,
        scope,
        taken_vfs,
    };
    let plan = match scope {
        Some(d) => crate::plan::plan_scoped(&config, &snap, &ctx, d),
        None => crate::plan::plan_with(&config, &snap, &ctx),
    };
    // The domain layer is planned by the running `watch`, after binding: preview it against the
    // host as the plan leaves it. A scoped (udev) run leaves it alone.
    let (domain_events, whose) = match scope {
        Some(_) => (Vec::new(), String::new()),
        None => super::domain::preview(global, &config, &crate::plan::simulate(&snap, &plan)),
    };
    if args.json {
        println!("{}", with_domain_actions(&plan, &domain_events));
    } else {
        print!("{}", crate::plan::render::text(&plan));
        if scope.is_none() {
            super::domain::print_preview(&config, &domain_events, &whose);
        }
    }
    dry_run_exit(&plan, !domain_events.is_empty(), args.check)
}

/// The plan's JSON with the domain layer's changes under `domain_actions` (each with `action`,
/// `domain` and `detail`), so machines see the whole dry run as people do.
fn with_domain_actions(
    plan: &crate::plan::Plan,
    events: &[crate::domain::report::Event],
) -> String {
    let text = crate::plan::render::json(plan);
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text;
    };
    if let Some(obj) = doc.as_object_mut() {
        let list = events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "action": e.action.to_string(),
                    "domain": e.domain,
                    "detail": e.detail,
                })
            })
            .collect();
        obj.insert("domain_actions".to_string(), serde_json::Value::Array(list));
    }
    serde_json::to_string_pretty(&doc).unwrap_or(text)
}

/// 1 when not realisable (even with `--check`), 3 with `--check` when changes are pending
/// (device actions or domain changes).
fn dry_run_exit(plan: &crate::plan::Plan, domain_changes: bool, check: bool) -> Exit {
    if !plan.is_realisable() {
        Exit::Failed
    } else if check && (!plan.is_empty() || domain_changes) {
        Exit::Pending
    } else {
        Exit::Done
    }
}

// ---- applying the plan (issue 7) ------------------------------------------------------------

/// Applies the plan to the live host: lock, recover, plan, apply with journal and undo,
/// verify. Prints one line per change and every problem; exit 0 when converged, 1 otherwise.
fn apply(
    global: &args::GlobalArgs,
    args: &args::ReconcileArgs,
    config: &crate::config::Config,
) -> Exit {
    let scope = match device_scope(args) {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let host = LinuxHost::new(global.roots(), Timeouts::default());
    let mut opts = Options::new(global.state_dir.clone(), global.run_dir.clone());
    opts.lock_timeout = Duration::from_secs(args.lock_timeout);
    opts.accounts = accounts::with_memlock_limits(
        accounts::resolve(&crate::plan::ownership::account_names(config)),
        &global.proc_root,
    );
    opts.scope = scope;

    let result = apply::reconcile(&host, config, &opts);
    if args.json {
        return print_json(&result);
    }
    match result {
        Ok(out) => {
            if let Some((pid, report)) = &out.recovered {
                println!("recovered an interrupted pass (pid {pid}):");
                for l in report.lines() {
                    println!("  {l}");
                }
            }
            for r in &out.executed {
                println!(
                    "ok    {} ({:.0} ms)",
                    apply::executor::describe(&r.step.action),
                    r.duration.as_secs_f64() * 1e3
                );
            }
            if let Some(v) = &out.verification {
                for g in &v.groups {
                    println!("{}", g.line());
                }
            }
            for n in &out.plan.notes {
                println!("note: {n}");
            }
            for p in &out.plan.problems {
                eprintln!("error: {}", p.message);
            }
            if out.executed.is_empty() && out.plan.problems.is_empty() {
                println!("nothing to do");
            } else if out.plan.problems.is_empty() {
                println!("converged: {} change(s) applied", out.executed.len());
            }
            if out.plan.problems.is_empty() {
                Exit::Done
            } else {
                Exit::Failed
            }
        }
        Err(e) => {
            report_error(&e);
            Exit::Failed
        }
    }
}

fn report_error(e: &ApplyError) {
    if let ApplyError::Failed { executed, .. } = e {
        for r in executed {
            let status = if r.result.is_ok() { "ok" } else { "FAILED" };
            eprintln!(
                "{status:<6}{} ({:.0} ms)",
                apply::executor::describe(&r.step.action),
                r.duration.as_secs_f64() * 1e3
            );
        }
    }
    for l in e.lines() {
        eprintln!("vfioctl reconcile: {l}");
    }
}

/// `--json` without `--dry-run`: what was done, as one JSON document on stdout:
/// `{"converged", "actions": [step + "result" + "ms"], "groups": [...], "problems", "error",
/// "undo"}`. The exit status is the same as for the text output.
fn print_json(result: &Result<apply::Outcome, ApplyError>) -> Exit {
    use serde_json::{json, Value};
    let step = |r: &apply::StepRecord| {
        let mut v = serde_json::to_value(&r.step).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert(
                "result".into(),
                match &r.result {
                    Ok(()) => json!("ok"),
                    Err(e) => json!(e.to_string()),
                },
            );
            m.insert("ms".into(), json!(r.duration.as_secs_f64() * 1e3));
        }
        v
    };
    let (doc, exit) = match result {
        Ok(out) => {
            let groups: Vec<Value> = out
                .verification
                .iter()
                .flat_map(|v| &v.groups)
                .map(|g| json!({"group": g.group, "ok": g.ok(), "verdict": g.line()}))
                .collect();
            let exit = if out.plan.problems.is_empty() {
                Exit::Done
            } else {
                Exit::Failed
            };
            (
                json!({
                    "converged": out.plan.problems.is_empty(),
                    "actions": out.executed.iter().map(step).collect::<Vec<_>>(),
                    "groups": groups,
                    "problems": out.plan.problems,
                    "recovered": out.recovered.as_ref().map(|(_, r)| r.lines()),
                }),
                exit,
            )
        }
        Err(e) => {
            let actions: Vec<Value> = match e {
                ApplyError::Failed { executed, .. } => executed.iter().map(step).collect(),
                _ => Vec::new(),
            };
            (
                json!({
                    "converged": false,
                    "actions": actions,
                    "error": e.lines(),
                    "undo": e.undo().map(|u| u.lines()),
                }),
                Exit::Failed,
            )
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
    exit
}
