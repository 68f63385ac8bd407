//! Exports of what the config hands out, for the tools that consume devices: CDI specs for
//! container runtimes ([`cdi`], kept in a directory by [`cdi_dir`]) and libvirt `<hostdev>`
//! elements ([`libvirt`]). [`handout`] decides what is handed out, from a host as a pass
//! leaves it and the plan's problems; everything here but [`cdi_dir`] is pure.
//!
//! Sits at the apply level: it uses config, host, plan and files, and nothing above.

pub mod cdi;
pub mod cdi_dir;
pub mod handout;
pub mod libvirt;

use std::path::Path;

use crate::config::Config;
use crate::files::FileError;
use crate::host::Snapshot;
use crate::plan::{self, Accounts, Context, Plan};

pub use cdi_dir::Kept;

/// What [`refresh_cdi`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub kept: Kept,
    /// Devices in the spec.
    pub devices: usize,
    /// What was left out, and why.
    pub notes: Vec<String>,
}

/// After a pass: computes the spec from the host as observed after it (`observed`, a full
/// snapshot) with the problems a plan against it reports, and keeps it in `dir`. Group numbers
/// come from the observed host, so a renumbered group is picked up by the next pass.
pub fn refresh_cdi(
    dir: &Path,
    config: &Config,
    observed: &Snapshot,
    accounts: &Accounts,
) -> Result<Refreshed, FileError> {
    let ctx = Context {
        accounts: accounts.clone(),
        ..Context::default()
    };
    let plan = plan::plan_with(config, observed, &ctx);
    let export = cdi::observed(config, observed, &plan.problems);
    let kept = cdi_dir::keep(dir, &export.spec)?;
    Ok(Refreshed {
        kept,
        devices: export.spec.devices.len(),
        notes: export.notes,
    })
}

/// The host as `plan` leaves `snap` ([`plan::simulate`]), without the functions the plan
/// creates (VFs): their group numbers are the kernel's to choose, so nothing is exported for
/// them until a pass has made them and observed their groups.
pub fn outcome(snap: &Snapshot, plan: &Plan) -> Snapshot {
    let mut out = plan::simulate(snap, plan);
    out.devices.retain(|d| snap.device(d.address).is_some());
    for g in &mut out.groups {
        g.devices.retain(|a| snap.device(*a).is_some());
    }
    out.groups.retain(|g| !g.devices.is_empty());
    out
}

#[cfg(test)]
mod tests;
