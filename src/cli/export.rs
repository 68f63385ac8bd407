//! `vfioctl export libvirt [NAME]`: prints `<hostdev managed='no'>` elements for what a
//! `[[device]]` (or every one) hands out, computed from the plan like `vfioctl cdi`.

use super::{args, Exit, Options};
use crate::export::{self, handout, libvirt};

pub fn run(opts: &Options, cmd: &args::ExportCommand) -> Exit {
    match cmd {
        args::ExportCommand::Libvirt(a) => run_libvirt(opts, a),
    }
}

fn run_libvirt(opts: &Options, args: &args::LibvirtArgs) -> Exit {
    let (config, snap, plan) = match super::cdi::planned(opts, "export") {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    if let Some(name) = &args.name {
        if config.device(name).is_none() {
            let names: Vec<&str> = config.devices.iter().map(|d| d.name.as_str()).collect();
            eprintln!(
                "vfioctl export: {} has no [[device]] named `{name}`; it has: {}",
                args.config.config.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
            return Exit::Failed;
        }
    }
    let h = handout::handout(config, &export::outcome(&snap, &plan), &plan.problems);
    let wanted: Vec<&handout::Entry> = match &args.name {
        Some(n) => h.entry(n).into_iter().collect(),
        None => h.entries.iter().collect(),
    };
    // Notes about the entry asked for (or all of them).
    for n in h.notes.iter().filter(|n| {
        args.name
            .as_ref()
            .map_or(true, |name| n.contains(&format!("`{name}`")))
    }) {
        eprintln!("vfioctl export: note: {n}");
    }
    if wanted.is_empty() {
        eprintln!(
            "vfioctl export: nothing to export: {} on this host",
            match &args.name {
                Some(n) => format!("[[device]] `{n}` hands out no function"),
                None => "no [[device]] hands out a function".to_string(),
            }
        );
        return Exit::Failed;
    }
    for (i, e) in wanted.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        out!("{}", libvirt::hostdevs(e));
    }
    Exit::Done
}
