//! How a plan reads: the human diff (what changes, from what, to what, and why, batch by batch)
//! and the JSON document (`{"actions": [...], "problems": [...], "notes": [...]}`). Owns only
//! presentation; the plan itself is decided elsewhere.

use std::fmt::Write as _;

use serde::Serialize;

use super::action::{Action, Ownership, Step};
use super::Plan;

fn or_unset(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(unset)")
}

/// One step as `WHAT  SUBJECT  FROM -> TO`.
fn describe(step: &Step) -> (String, String, String) {
    match &step.action {
        Action::LoadModule { module, driver } => (
            "load module".into(),
            module.clone(),
            format!("registers {driver}"),
        ),
        Action::SetNumVfs { device, from, to } => (
            "sriov_numvfs".into(),
            device.to_string(),
            format!("{from} -> {to}"),
        ),
        Action::SetOverride { device, from, to } => (
            "driver_override".into(),
            device.to_string(),
            format!("{} -> {to}", or_unset(from)),
        ),
        Action::ClearOverride { device, from } => (
            "driver_override".into(),
            device.to_string(),
            format!("{from} -> (unset)"),
        ),
        Action::Unbind { device, from } => (
            "unbind".into(),
            device.to_string(),
            match from {
                Some(d) => format!("{d} -> (none)"),
                None => "(whatever probes the new VF) -> (none)".into(),
            },
        ),
        Action::Bind { device, driver } => (
            "bind".into(),
            device.to_string(),
            format!("(none) -> {driver}"),
        ),
        Action::Probe { device } => (
            "probe".into(),
            device.to_string(),
            "(none) -> the kernel's pick".into(),
        ),
        Action::SetNodeOwner {
            device,
            group,
            from,
            to,
        } => {
            let node = match group {
                Some(g) => format!("/dev/vfio/{g}"),
                None => format!("group node of {device}"),
            };
            let from = match from {
                Some(o) => owner(o),
                None => format!("(new) {}", owner(&Ownership::KERNEL_DEFAULT)),
            };
            (
                "node owner".into(),
                node,
                format!("{from} -> {}", owner(to)),
            )
        }
    }
}

fn owner(o: &Ownership) -> String {
    format!("{}:{} {}", o.uid, o.gid, o.mode)
}

/// The plan as text: what the scan could not read, then problems first (each with its whole reason), then the changes by batch,
/// then notes. A converged host reads "nothing to do".
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {}: {}", w.path, w.message);
    }
    for p in &plan.problems {
        let _ = writeln!(out, "error: {}", p.message);
    }
    if !plan.problems.is_empty() {
        let _ = writeln!(
            out,
            "{} problem{}: the config cannot be fully realised on this host{}\n",
            plan.problems.len(),
            if plan.problems.len() == 1 { "" } else { "s" },
            if plan.is_empty() {
                ""
            } else {
                "; the rest is planned below"
            }
        );
    }
    if plan.is_empty() {
        if plan.problems.is_empty() {
            out.push_str("nothing to do: the host matches the config\n");
        } else {
            out.push_str("nothing else to do\n");
        }
    } else {
        let n = plan.actions.len();
        let b = plan.batches();
        let _ = writeln!(
            out,
            "{n} change{} in {b} batch{}:",
            if n == 1 { "" } else { "s" },
            if b == 1 { "" } else { "es" }
        );
        for batch in 1..=b {
            let units = plan.batch(batch);
            let _ = writeln!(
                out,
                "\nbatch {batch}{}",
                if units.len() > 1 {
                    format!(" ({} independent units, may run in parallel)", units.len())
                } else {
                    String::new()
                }
            );
            for (unit, steps) in units {
                let _ = writeln!(out, "  {unit}:");
                let mut last_reason: Option<&str> = None;
                for s in steps {
                    let (what, subject, change) = describe(s);
                    let _ = write!(out, "    {what:<16} {subject:<14} {change}");
                    if last_reason != Some(s.reason.as_str()) {
                        let _ = write!(out, "    # {}", s.reason);
                        last_reason = Some(s.reason.as_str());
                    }
                    out.push('\n');
                }
            }
        }
    }
    if !plan.notes.is_empty() {
        out.push('\n');
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    actions: &'a [Step],
    problems: &'a [super::Problem],
    notes: &'a [String],
    warnings: &'a [crate::host::ScanWarning],
    batches: usize,
    realisable: bool,
}

/// The plan as pretty JSON: `actions` (each with `action`, `device`, `driver` where it hands a
/// device to one, `from`/`to`, `batch`, `unit`, `reason`), `problems` (an in-use refusal
/// lists what could not be read in `cannot_tell`), `notes`, `warnings` (what the scan could
/// not read: `path`, `message`), `batches`, `realisable`.
pub fn json(plan: &Plan) -> String {
    let doc = JsonPlan {
        actions: &plan.actions,
        problems: &plan.problems,
        notes: &plan.notes,
        warnings: &plan.warnings,
        batches: plan.batches(),
        realisable: plan.is_realisable(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
