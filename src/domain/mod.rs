//! Held IOMMU domains and DMA windows: what `vfioctl watch` keeps open so that `[[domain]]`
//! entries exist in the kernel (containers, group fds, pinned window memory).
//!
//! - [`windows`]: the pure window diff and the checks against the live container;
//! - [`placement`]: the pure decision of which container each group goes into;
//! - [`held`]: the held state and its reconcile through the [`iommu::Iommu`] seam;
//! - [`linux`] (the real kernel) and `simulated` (tests and benches only: the `testing`
//!   feature) implement that seam;
//! - [`memory`]: window backing (memfd, hugetlb, mmap) and RLIMIT_MEMLOCK;
//! - [`status`]: what `vfioctl status` shows of the held domains; [`report`]: what a pass did;
//! - [`fdstore`], [`stored`], [`adopt`]: domain persistence across restarts in systemd's fd
//!   store (naming and sending the fds, keeping the store in step, rebuilding on start);
//! - [`published`]: the held domains as a state file for `vfioctl status`;
//! - [`hold`]: `vfioctl domain hold`, the domain layer alone in the foreground.
//!
//! [`Domains`] ties them together: `reconcile(&Config, &Snapshot)` is what `watch` calls on
//! each pass, after binding; `release_removed(&Config)` before it releases devices. The adapter
//! that runs them around watch's binding pass is `watch::domain_layer` (domains sit below watch).

pub mod adopt;
pub mod fdstore;
pub mod held;
pub mod hold;
pub mod iommu;
pub mod linux;
pub mod memory;
pub mod placement;
pub mod preview;
pub mod published;
pub mod report;
#[cfg(any(test, feature = "testing"))]
pub mod simulated;
pub mod status;
pub mod stored;
pub mod windows;

use std::collections::BTreeMap;

use crate::config::model::{Config, DomainSpec, Placement, Selector};
use crate::host::snapshot::{PciDevice, Snapshot};
use crate::plan::backend::{self, Backend, Resolved};
use held::HeldDomain;
use iommu::{Cdev, Iommu};
pub use report::{Action, Report};
use windows::{GroupReserved, Window};

/// One domain as the config and the host together ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredDomain {
    pub name: String,
    pub placement: Placement,
    /// Member groups that can be held now (their `/dev/vfio/N` exists), ascending.
    pub groups: Vec<u32>,
    pub windows: Vec<Window>,
    /// Reserved regions of the member groups.
    pub reserved: Vec<GroupReserved>,
    /// Why some members cannot be held yet (no device, no group, not on vfio), or why the
    /// domain cannot be held at all (an explicit `iommufd` on a host without it).
    pub pending: Vec<String>,
    /// The kernel interface it is held through, and why ([`crate::plan::backend`]).
    pub backend: Resolved,
    /// On iommufd: each member group's functions on a vfio driver with their device cdevs,
    /// resolved on every pass (cdev numbers change on rebind). Empty on legacy.
    pub cdevs: BTreeMap<u32, Vec<Cdev>>,
}

fn selects(selector: &Selector, d: &PciDevice) -> bool {
    selector.matches(d.address, &d.ids())
}

/// Resolves one `[[domain]]` against the host: member groups, windows, reserved regions.
pub fn desired_domain(config: &Config, spec: &DomainSpec, host: &Snapshot) -> DesiredDomain {
    let mut groups = Vec::new();
    let mut pending = Vec::new();
    let mut cdevs: BTreeMap<u32, Vec<Cdev>> = BTreeMap::new();
    let resolved = backend::for_domain(config, spec, host);
    let iommufd = matches!(&resolved, Ok(r) if r.backend == Backend::Iommufd);
    for name in &spec.devices {
        let Some(dev) = config.device(name) else {
            pending.push(format!("device \"{name}\" is not a [[device]] entry"));
            continue;
        };
        let matched: Vec<&PciDevice> = host
            .devices
            .iter()
            .filter(|d| selects(&dev.selector, d))
            .collect();
        if matched.is_empty() {
            pending.push(format!(
                "device \"{name}\" matches no function on this host"
            ));
        }
        for d in matched {
            let Some(g) = d.iommu_group else {
                pending.push(format!(
                    "device \"{name}\" ({}) has no IOMMU group",
                    d.address
                ));
                continue;
            };
            if iommufd {
                match &d.vfio_cdev {
                    Some(c) => {
                        let list = cdevs.entry(g).or_default();
                        if !list.iter().any(|x| x.address == d.address.to_string()) {
                            list.push(Cdev {
                                address: d.address.to_string(),
                                name: c.name.clone(),
                            });
                        }
                        if !groups.contains(&g) {
                            groups.push(g);
                        }
                    }
                    None => pending.push(format!(
                        "device \"{name}\" ({}): no VFIO device cdev yet (not on a vfio driver)",
                        d.address
                    )),
                }
                continue;
            }
            let ready = host.group(g).is_some_and(|grp| grp.node.is_some());
            if !ready {
                pending.push(format!(
                    "device \"{name}\" ({}): /dev/vfio/{g} does not exist yet (not on a vfio driver)",
                    d.address
                ));
            } else if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    groups.sort_unstable();
    let backend = match resolved {
        Ok(r) => r,
        Err(e) => {
            // Not realisable: nothing is held (what is held goes), and the pass says why.
            pending.push(e.to_string());
            groups.clear();
            cdevs.clear();
            Resolved {
                backend: Backend::Iommufd,
                why: "set in the config; not realisable on this host".into(),
            }
        }
    };
    for list in cdevs.values_mut() {
        list.sort_by(|a, b| a.address.cmp(&b.address));
    }
    let reserved = groups
        .iter()
        .filter_map(|g| host.group(*g))
        .flat_map(|grp| {
            grp.reserved_regions.iter().map(|r| GroupReserved {
                group: grp.id,
                region: r.clone(),
            })
        })
        .collect();
    DesiredDomain {
        name: spec.name.clone(),
        placement: spec.placement,
        groups,
        windows: windows::desired(spec),
        reserved,
        pending,
        backend,
        cdevs,
    }
}

/// Every domain the config asks for, resolved against the host.
pub fn desired_domains(config: &Config, host: &Snapshot) -> Vec<DesiredDomain> {
    config
        .domains
        .iter()
        .map(|d| desired_domain(config, d, host))
        .collect()
}

/// The domains a process holds, and the seam it holds them through.
#[derive(Debug)]
pub struct Domains<I: Iommu> {
    iommu: I,
    held: BTreeMap<String, HeldDomain<I>>,
}

impl<I: Iommu> Domains<I> {
    pub fn new(iommu: I) -> Self {
        Domains {
            iommu,
            held: BTreeMap::new(),
        }
    }

    pub fn iommu(&self) -> &I {
        &self.iommu
    }

    pub fn iommu_mut(&mut self) -> &mut I {
        &mut self.iommu
    }

    /// The held domains by name (the fd broker reads handles from here).
    pub fn held(&self) -> &BTreeMap<String, HeldDomain<I>> {
        &self.held
    }

    /// Takes domains adopted at start (from systemd's fd store) as held; the next pass
    /// converges them like any other.
    pub fn adopt(&mut self, domains: Vec<HeldDomain<I>>) {
        for d in domains {
            self.held.insert(d.name.clone(), d);
        }
    }

    /// Total bytes pinned by every held domain.
    pub fn pinned_bytes(&self) -> u64 {
        self.held.values().map(|d| d.pinned_bytes()).sum()
    }

    /// Tears down every held domain the config no longer has, or whose placement changed.
    /// `watch` runs this before releasing devices, so no group is still held when its
    /// devices go back to their host drivers.
    pub fn release_removed(&mut self, config: &Config) -> Report {
        let mut report = Report::default();
        let gone: Vec<String> = self
            .held
            .iter()
            .filter(|(name, held)| {
                !config
                    .domains
                    .iter()
                    .any(|d| &d.name == *name && d.placement == held.placement)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(d) = self.held.remove(&name) {
                d.teardown(&mut self.iommu, &mut report);
            }
        }
        report
    }

    /// Before a binding pass: tear down removed domains and, resolving members against the
    /// last host seen, release groups whose devices left their domain, so nothing is held when
    /// the binding pass gives devices back to their host drivers.
    pub fn release_departed(&mut self, config: &Config, last_host: &Snapshot) -> Report {
        let mut report = self.release_removed(config);
        let desired = desired_domains(config, last_host);
        self.release_other_backend(&desired, &mut report);
        for want in desired {
            if let Some(held) = self.held.get_mut(&want.name) {
                let keep = held.kept_groups(&want);
                held.release_departed(&mut self.iommu, &keep, &mut report);
            }
        }
        report
    }

    /// One pass: tear down removed domains, build new ones, converge members and windows.
    pub fn reconcile(&mut self, config: &Config, host: &Snapshot) -> Report {
        let mut report = self.release_removed(config);
        let desired = desired_domains(config, host);
        self.release_other_backend(&desired, &mut report);

        for want in &desired {
            for p in &want.pending {
                report.error(&want.name, p.clone());
            }
            let held = self.held.entry(want.name.clone()).or_insert_with(|| {
                report.event(
                    &want.name,
                    Action::CreateDomain,
                    format!("({})", placement_name(want.placement)),
                );
                if want.backend.backend == Backend::Iommufd {
                    report.note(&want.name, want.backend.line(&want.name));
                }
                HeldDomain::on(&want.name, want.placement, want.backend.backend)
            });
            held.backend_why.clone_from(&want.backend.why);
            held.reconcile_groups(&mut self.iommu, want, &mut report);
        }

        // Plan every domain's windows, then make sure the memory fits the host and can be
        // pinned before any map.
        let mut plans = Vec::new();
        for want in &desired {
            let Some(held) = self.held.get(&want.name) else {
                continue;
            };
            plans.push((want.name.clone(), held.plan_windows(want)));
        }
        // Window memory is allocated once per window, whatever the containers: what it takes
        // of the host. Removing the held domains' other windows is not counted in.
        let memory = |plans: &[(String, held::WindowPlan)], per_container: bool| -> u64 {
            plans
                .iter()
                .filter_map(|(name, plan)| {
                    let held = self.held.get(name)?;
                    let n = if per_container {
                        held.containers.len() as u64
                    } else {
                        1
                    };
                    Some(plan.bytes_after(&held.held_windows()) * n)
                })
                .sum()
        };
        let physical = memory(&plans, false);
        if physical > 0 {
            if let Some(total) = self.iommu.host_memory() {
                let cap = host_memory_cap(total);
                if physical > cap {
                    for (name, plan) in &mut plans {
                        for c in plan.drop_growth() {
                            report.error(
                                name,
                                format!(
                                    "{}: not mapped: the domains' windows would take {} of this host's {} of memory, more than the {} (three quarters) vfioctl holds at most; shrink the windows",
                                    change_window(&c),
                                    windows::human_bytes(physical),
                                    windows::human_bytes(total),
                                    windows::human_bytes(cap)
                                ),
                            );
                        }
                    }
                }
            }
        }
        let needed = memory(&plans, true);
        if needed > 0 {
            let memlock = self.iommu.ensure_memlock(needed);
            if memlock.shortfall > 0 {
                for (name, plan) in &mut plans {
                    for c in plan.drop_growth() {
                        report.error(
                            name,
                            format!(
                                "{}: not mapped: RLIMIT_MEMLOCK is {}, the domains need {} ({} short); raise the limit (LimitMEMLOCK= in the unit) or shrink the windows",
                                change_window(&c),
                                windows::human_bytes(memlock.limit),
                                windows::human_bytes(needed),
                                windows::human_bytes(memlock.shortfall)
                            ),
                        );
                    }
                }
            }
        }
        for (name, plan) in plans {
            if let Some(held) = self.held.get_mut(&name) {
                held.apply_windows(&mut self.iommu, &plan, &mut report);
            }
        }
        report
    }

    /// Tears down held domains whose backend is not the one resolved now (the config's
    /// `backend` changed, or `auto` decides otherwise on this host): the pass rebuilds them.
    fn release_other_backend(&mut self, desired: &[DesiredDomain], report: &mut Report) {
        for want in desired {
            let other = self
                .held
                .get(&want.name)
                .is_some_and(|h| h.backend != want.backend.backend);
            if other {
                if let Some(d) = self.held.remove(&want.name) {
                    report.note(
                        &want.name,
                        format!(
                            "held on {}, now {}: rebuilt",
                            d.backend,
                            want.backend.line(&want.name)
                        ),
                    );
                    d.teardown(&mut self.iommu, report);
                }
            }
        }
    }

    /// Releases every held domain (shutdown).
    pub fn release_all(&mut self) -> Report {
        let mut report = Report::default();
        for (_, d) in std::mem::take(&mut self.held) {
            d.teardown(&mut self.iommu, &mut report);
        }
        report
    }

    /// What `status` shows of the held domains.
    pub fn status(&self) -> Vec<status::DomainStatus> {
        self.held.values().map(status::DomainStatus::of).collect()
    }
}

/// The most window memory the held domains may take together: three quarters of the host's
/// memory, so pinning never starves the host itself (the kernel cannot reclaim pinned pages).
pub fn host_memory_cap(mem_total: u64) -> u64 {
    mem_total / 4 * 3
}

fn change_window(c: &windows::WindowChange) -> String {
    match c {
        windows::WindowChange::Add { window } | windows::WindowChange::Remove { window } => {
            window.to_string()
        }
        windows::WindowChange::Resize { to, .. } => to.to_string(),
    }
}

/// `shared` / `per-group`, as in the config.
pub fn placement_name(p: Placement) -> &'static str {
    match p {
        Placement::Shared => "shared",
        Placement::PerGroup => "per-group",
    }
}
