//! What the domain layer would do, for `reconcile --dry-run`: the desired domains against the
//! ones a running `watch` publishes as held (none when no `watch` runs). Pure: the same
//! placement and window diff the held state uses, without the kernel's refusals (a mirror shows
//! only once the kernel has refused a group).

use super::placement::{self, Refusals};
use super::report::{Action, Event};
use super::status::DomainStatus;
use super::windows::{self, Window};
use super::{desired_domains, placement_name};
use crate::config::model::Config;
use crate::host::snapshot::Snapshot;

fn event(domain: &str, action: Action, detail: String) -> Event {
    Event {
        domain: domain.to_string(),
        action,
        detail,
    }
}

/// Which backend each domain would be held through, and why: the dry run's
/// `domain "dma" backend iommufd (auto: ...)` lines, in config order.
pub fn backends(config: &Config, host: &Snapshot) -> Vec<(String, crate::plan::backend::Resolved)> {
    desired_domains(config, host)
        .into_iter()
        .map(|d| (d.name, d.backend))
        .collect()
}

/// The domain changes a pass would make, in the order it makes them.
pub fn preview(config: &Config, host: &Snapshot, held: &[DomainStatus]) -> Vec<Event> {
    let desired = desired_domains(config, host);
    let mut out = Vec::new();
    let mut kept: Vec<&DomainStatus> = Vec::new();
    for h in held {
        let same = desired
            .iter()
            .any(|d| d.name == h.name && placement_name(d.placement) == h.placement);
        if same {
            kept.push(h);
        } else {
            out.push(event(&h.name, Action::DestroyDomain, String::new()));
        }
    }
    for want in &desired {
        let current = kept.iter().find(|h| h.name == want.name);
        let held_groups: Vec<u32> = current
            .map(|h| h.containers.iter().flat_map(|c| c.groups.clone()).collect())
            .unwrap_or_default();
        if current.is_none() {
            out.push(event(
                &want.name,
                Action::CreateDomain,
                format!("({})", placement_name(want.placement)),
            ));
            for (i, c) in placement::layout(want.placement, &want.groups, &Refusals::default())
                .iter()
                .enumerate()
            {
                for g in &c.groups {
                    out.push(event(
                        &want.name,
                        Action::AttachGroup,
                        format!("group {g} -> container {i} ({})", c.role),
                    ));
                }
            }
        } else {
            for g in held_groups.iter().filter(|g| !want.groups.contains(g)) {
                out.push(event(
                    &want.name,
                    Action::ReleaseGroup,
                    format!("group {g}"),
                ));
            }
            for g in want.groups.iter().filter(|g| !held_groups.contains(g)) {
                out.push(event(&want.name, Action::AttachGroup, format!("group {g}")));
            }
        }
        // Held windows as the config wrote them: the backing actually used (huge pages or a
        // fallback) is not a difference to act on.
        let held_windows: Vec<Window> = current
            .map(|h| {
                h.windows
                    .iter()
                    .map(|w| Window {
                        name: w.name.clone(),
                        iova: w.iova,
                        size: w.size,
                        hugepages: want
                            .windows
                            .iter()
                            .find(|d| d.name == w.name)
                            .map_or(w.hugepages, |d| d.hugepages),
                    })
                    .collect()
            })
            .unwrap_or_default();
        for c in windows::diff(&want.windows, &held_windows) {
            let action = match &c {
                windows::WindowChange::Add { .. } => Action::MapWindow,
                windows::WindowChange::Remove { .. } => Action::UnmapWindow,
                windows::WindowChange::Resize { .. } => Action::ResizeWindow,
            };
            let detail = match &c {
                windows::WindowChange::Resize { .. } => c.to_string(),
                windows::WindowChange::Add { window }
                | windows::WindowChange::Remove { window } => window.to_string(),
            };
            out.push(event(&want.name, action, detail));
        }
    }
    out
}
