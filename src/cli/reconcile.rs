//! `vfioctl reconcile`: wires planning and applying (issues 6, 7) to the command line.
//! `--dry-run`/`--check` show the plan ([`dry_run`]); without them the plan is applied
//! ([`apply`]). Both start from [`apply::prepare`]: the same host read, journal and plan.

use std::time::Duration;

use super::options::LoadedConfig;
use super::{args, Exit, Options};
use crate::apply::journal::JournalError;
use crate::apply::{self, ApplyError, Mode};
use crate::config::{Config, LoadError, Style};
use crate::host::accounts;
use crate::kernel::linux::{LinuxHost, Timeouts};
use crate::plan::Plan;

pub fn run(opts: &Options, args: &args::ReconcileArgs) -> Exit {
    let Some(loaded) = &opts.config else {
        return Exit::Failed;
    };
    if args.dry_run || args.check {
        return dry_run(opts, args, loaded);
    }
    let Some(config) = config_or_report(loaded, "changed") else {
        return Exit::Failed;
    };
    if !args.no_domains && super::domain::refuse_unrealisable(opts, config, None) {
        eprintln!("vfioctl reconcile: nothing was changed");
        return Exit::Failed;
    }
    let (exit, kept, after) = apply(opts, args, config);
    let exit = super::cdi::after_reconcile(opts, kept, exit);
    match exit {
        // Domains are held by `watch`, not by this process: hand the domain layer to it.
        Exit::Done if !args.no_domains => {
            super::domain::after_reconcile(opts, config, after.as_ref())
        }
        other => other,
    }
}

/// The loaded config; when it could not be loaded, prints every diagnostic and says that
/// nothing was `done` (planned or changed).
fn config_or_report<'a>(loaded: &'a LoadedConfig, done: &str) -> Option<&'a Config> {
    match &loaded.loaded {
        Ok(c) => Some(c),
        Err(e) => {
            for l in config_error_lines(loaded, e, done) {
                eprintln!("{l}");
            }
            None
        }
    }
}

fn config_error_lines(loaded: &LoadedConfig, e: &LoadError, done: &str) -> Vec<String> {
    match e {
        LoadError::Invalid(d) => vec![
            d.render(Style::Plain).trim_end().to_string(),
            format!(
                "vfioctl reconcile: {} is not a valid config; nothing was {done}",
                loaded.path.display()
            ),
        ],
        e => vec![format!("vfioctl reconcile: {e}; nothing was {done}")],
    }
}

/// The accounts the config names: as the captured host had them (`--host FILE`), or from this
/// machine's account database with the memlock limits its login would get.
fn accounts_for(
    opts: &Options,
    config: &Config,
    snap: Option<&crate::host::Snapshot>,
) -> crate::plan::Accounts {
    let names = crate::plan::ownership::account_names(config);
    match snap {
        Some(s) => accounts::from_snapshot(&names, s),
        None => accounts::with_memlock_limits(accounts::resolve(&names), &opts.roots.proc),
    }
}

fn apply_options(opts: &Options, args: &args::ReconcileArgs, config: &Config) -> apply::Options {
    let mut o = apply::Options::new(opts.state_dir.clone(), opts.run_dir.clone());
    o.lock_timeout = Duration::from_secs(args.lock_timeout);
    o.accounts = accounts_for(opts, config, None);
    o.scope = opts.device;
    o
}

// ---- showing the plan (issue 6) -------------------------------------------------------------

/// Shows the plan and changes nothing: the config, the host (live scan or `--host FILE`), the
/// journal's taken devices (live host only: a snapshot file is some other moment or machine)
/// and the accounts the config names. Exit 0 computed, 1 not realisable or not computable
/// (every reason printed; a journal a real run could not read counts), 2 usage, 3 with
/// `--check` when changes are pending. With `--json`, stdout has exactly one JSON document
/// whatever happens.
fn dry_run(opts: &Options, args: &args::ReconcileArgs, loaded: &LoadedConfig) -> Exit {
    let config = match &loaded.loaded {
        Ok(c) => c,
        Err(e) => return dry_run_failed(args, config_error_lines(loaded, e, "planned")),
    };
    let (plan, observed) = match preview_plan(opts, args, config) {
        Ok(p) => p,
        Err(line) => return dry_run_failed(args, vec![line]),
    };
    // The domain layer is planned by the running `watch`, after binding: preview it against the
    // host as the plan leaves it. A scoped (udev) run leaves it alone.
    let outcome = crate::plan::simulate(&observed, &plan);
    let (domain_events, whose) = match opts.device {
        Some(_) => (Vec::new(), String::new()),
        None => super::domain::preview(opts, config, &outcome),
    };
    let backends = match opts.device {
        Some(_) => Vec::new(),
        None => crate::domain::preview::backends(config, &outcome),
    };
    if args.json {
        outln!("{}", with_domain_actions(&plan, &domain_events, &backends));
    } else {
        out!("{}", crate::plan::render::text(&plan));
        if opts.device.is_none() {
            super::domain::print_preview(config, &backends, &domain_events, &whose);
        }
    }
    if opts.device.is_none() && super::domain::refuse_unrealisable(opts, config, Some(&outcome)) {
        return Exit::Failed;
    }
    dry_run_exit(&plan, !domain_events.is_empty(), args.check)
}

/// The plan a pass would make now, and the host it was made against: on the live host
/// [`apply::prepare`] in preview mode (the same front half as a real pass, without the lock
/// and without writing); on a snapshot file, the planner alone (the journal is this machine's).
fn preview_plan(
    opts: &Options,
    args: &args::ReconcileArgs,
    config: &Config,
) -> Result<(Plan, crate::host::Snapshot), String> {
    if opts.host_file().is_some() {
        let snap = opts
            .observe()
            .map_err(|e| format!("vfioctl reconcile: {e}"))?;
        let mut ctx = crate::plan::Context {
            accounts: accounts_for(opts, config, Some(&snap)),
            ..Default::default()
        };
        ctx.scope = opts.device;
        return Ok((crate::plan::plan_with(config, &snap, &ctx), snap));
    }
    let host = LinuxHost::new(opts.roots.clone(), Timeouts::default());
    let apply_opts = apply_options(opts, args, config);
    match apply::prepare(&host, config, &apply_opts, Mode::Preview) {
        Ok(prepared) => Ok((prepared.plan, prepared.observed)),
        // A user who may not read root's journal can still see the plan; a real run is
        // root's, and reads it.
        Err(ApplyError::Journal(JournalError::Io { message, .. }))
            if message == "permission denied" && !nix::unistd::geteuid().is_root() =>
        {
            eprintln!(
                "vfioctl reconcile: note: the journal is root's to read; releases of devices \
                 taken earlier are not shown"
            );
            let snap = opts
                .observe()
                .map_err(|e| format!("vfioctl reconcile: {e}"))?;
            let ctx = crate::plan::Context {
                accounts: apply_opts.accounts,
                scope: opts.device,
                ..Default::default()
            };
            Ok((crate::plan::plan_with(config, &snap, &ctx), snap))
        }
        // A journal a pass could not read stops the pass: the dry run says so and fails too.
        Err(ApplyError::Journal(e)) => Err(format!(
            "vfioctl reconcile: cannot read the journal ({e}); a pass would stop here too"
        )),
        Err(e) => Err(format!("vfioctl reconcile: {e}")),
    }
}

/// A dry run that could not compute a plan: the reasons on stderr, and with `--json` one JSON
/// document on stdout (`realisable: false`, no actions, the reasons under `errors`). Exit 1.
fn dry_run_failed(args: &args::ReconcileArgs, lines: Vec<String>) -> Exit {
    for l in &lines {
        eprintln!("{l}");
    }
    if args.json {
        let doc = serde_json::json!({
            "actions": [],
            "problems": [],
            "notes": [],
            "batches": [],
            "realisable": false,
            "domain_actions": [],
            "errors": lines,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
        );
    }
    Exit::Failed
}

/// The plan's JSON with the domain layer's changes under `domain_actions` (each with `action`,
/// `domain` and `detail`) and, when the config has domains, each one's backend under
/// `domain_backends` (`domain`, `backend`, `why`), so machines see the whole dry run as people
/// do.
fn with_domain_actions(
    plan: &crate::plan::Plan,
    events: &[crate::domain::report::Event],
    backends: &[(String, crate::plan::backend::Resolved)],
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
        if !backends.is_empty() {
            let list = backends
                .iter()
                .map(|(name, b)| {
                    serde_json::json!({
                        "domain": name,
                        "backend": b.backend.as_str(),
                        "why": b.why,
                    })
                })
                .collect();
            obj.insert(
                "domain_backends".to_string(),
                serde_json::Value::Array(list),
            );
        }
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
/// verify, and keep the CDI spec from what the pass read ([`super::cdi::keep_after_pass`]).
/// Prints one line per change and every problem; exit 0 when converged, 1 otherwise. Also
/// returns the whole host after a committed pass (none after a scoped one), so what follows
/// the pass reads no host again.
fn apply(
    opts: &Options,
    args: &args::ReconcileArgs,
    config: &Config,
) -> (
    Exit,
    Option<super::cdi::KeptAfterPass>,
    Option<crate::host::Snapshot>,
) {
    let host = LinuxHost::new(opts.roots.clone(), Timeouts::default());
    let apply_opts = apply_options(opts, args, config);
    let mut kept = None;
    let mut after = None;
    let result = apply::reconcile_then(&host, config, &apply_opts, |out| {
        kept = super::cdi::keep_after_pass(opts, config, &apply_opts.accounts, out);
        if !config.domains.is_empty() && out.after.covers.is_none() {
            after = Some(out.after.clone());
        }
    });
    let exit = if args.json {
        print_json(&result)
    } else {
        print_text(result)
    };
    (exit, kept, after)
}

/// The text output of a pass: one line per change, the kernel's word per group, notes and
/// problems. Exit 0 when converged, 1 otherwise.
fn print_text(result: Result<apply::Outcome, ApplyError>) -> Exit {
    match result {
        Ok(out) => {
            if let Some((pid, report)) = &out.recovered {
                outln!("recovered an interrupted pass (pid {pid}):");
                for l in report.lines() {
                    outln!("  {l}");
                }
            }
            for r in &out.executed {
                outln!(
                    "ok    {} ({:.0} ms)",
                    apply::executor::describe(&r.step.action),
                    r.duration.as_secs_f64() * 1e3
                );
            }
            if let Some(v) = &out.verification {
                for g in &v.groups {
                    outln!("{}", g.line());
                }
            }
            for n in &out.plan.notes {
                outln!("note: {n}");
            }
            for p in &out.plan.problems {
                eprintln!("error: {}", p.message);
            }
            if out.executed.is_empty() && out.plan.problems.is_empty() {
                outln!("nothing to do");
            } else if out.plan.problems.is_empty() {
                outln!("converged: {} change(s) applied", out.executed.len());
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
    outln!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
    exit
}
