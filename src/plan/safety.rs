//! Safety: refuse to take a function the host is using (an interface up with addresses or
//! routes, a mounted or held block device, the boot console) unless its entry says
//! `force = true`. Owns the in-use refusal and the note a forced take leaves in the plan.
//! An entry is refused as a whole: if any function it selects is in use, none is taken.
//!
//! The per-function rule, [`in_use`] and [`verdict`], is the one the early claim obeys too
//! (`apply::early_claim`): whatever the host is known to use a function for, and whatever could
//! not be read about it ("cannot tell"), refuses it unless the entry says `force = true`.

use crate::config::Config;
use crate::host::{PciDevice, Snapshot};

/// Why taking `dev` onto `driver` would take something the host is using; empty when it is
/// free, or already on `driver` (nothing to take).
pub fn in_use(dev: &PciDevice, driver: &str) -> Vec<String> {
    if dev.driver.as_deref() == Some(driver) {
        return Vec::new();
    }
    dev.usage.reasons()
}

/// What the safety rule decides for a function with `reasons` (from [`in_use`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Free,
    /// In use (or cannot tell), taken anyway because of `force = true`.
    Forced(Vec<String>),
    /// In use (or cannot tell): not taken.
    Refused(Vec<String>),
}

pub fn verdict(reasons: Vec<String>, force: bool) -> Verdict {
    match (reasons.is_empty(), force) {
        (true, _) => Verdict::Free,
        (false, true) => Verdict::Forced(reasons),
        (false, false) => Verdict::Refused(reasons),
    }
}

use super::claims::{Claims, Role};
use super::problem::{Problem, ProblemKind};

/// Marks entries that would take a function in use; returns problems and notes for forced ones.
pub fn check(config: &Config, snap: &Snapshot, claims: &mut Claims) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for (i, spec) in config.devices.iter().enumerate() {
        let mut lines = Vec::new();
        let mut cannot_tell = Vec::new();
        let mut p = Problem::new(ProblemKind::InUse, String::new()).entry(&spec.name);
        for (a, c) in claims.of_entry(i) {
            let Some(dev) = snap.device(a) else { continue };
            let reasons = in_use(dev, &c.driver);
            if reasons.is_empty() {
                continue;
            }
            let role = match c.role {
                Role::Declared => "",
                Role::Companion => "companion ",
            };
            lines.push(format!("{role}{a}: {}", reasons.join("; ")));
            cannot_tell.extend(dev.usage.unknown.iter().map(|why| format!("{a}: {why}")));
            p = p.device(a);
        }
        if lines.is_empty() {
            continue;
        }
        if let Verdict::Forced(_) = verdict(lines.clone(), spec.force) {
            notes.push(format!(
                "[[device]] `{}` takes functions the host is using, because of force = true: {}",
                spec.name,
                lines.join("; ")
            ));
            continue;
        }
        p.cannot_tell = cannot_tell.into();
        p.message = format!(
            "[[device]] `{}` would take functions the host is using:\n  {}\nstop using them \
             first, or set `force = true` in the entry to take them anyway",
            spec.name,
            lines.join("\n  ")
        );
        problems.push(p);
        claims.fail_entry(i);
    }
    (problems, notes)
}
