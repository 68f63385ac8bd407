//! The planner: a pure function from (desired state, host snapshot) to an ordered plan that a
//! person can read before anything changes. No I/O happens here; the caller supplies the config,
//! the snapshot, the journal's record of what vfioctl took earlier ([`Taken`]) and the accounts
//! table ([`Accounts`]).
//!
//! The stages, one module each: [`resolve`] selectors to functions and VF counts; [`claims`]
//! the claim table and releases; [`closure`] companions and the kernel's group rule;
//! [`safety`] in-use refusal; [`ownership`] group nodes; [`windows`] domain windows;
//! [`graph`] dependencies, order and batches; [`render`] text and JSON; [`simulate()`] what the
//! host looks like after a plan (for tests and for `--check` reasoning).

pub mod action;
pub mod backend;
pub mod claims;
pub mod closure;
pub mod graph;
pub mod ownership;
pub mod problem;
pub mod render;
pub mod resolve;
pub mod safety;
pub mod simulate;
pub mod windows;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::host::{is_vfio_driver, PciDevice, Snapshot};
use crate::pci::PciAddress;

pub use action::{Action, Mode, Ownership, Step, Unit};
pub use ownership::{Account, Accounts};
pub use problem::{Problem, ProblemKind};
pub use simulate::simulate;

use claims::Claim;
use graph::{Graph, Node};
use ownership::NodeKey;

/// A function vfioctl took earlier, as the apply journal recorded it before the first change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    pub address: PciAddress,
    /// The driver it was on (`None`: it was unbound).
    pub original_driver: Option<String>,
    /// Its `driver_override` (`None`: unset).
    pub original_override: Option<String>,
    /// Its original driver is unknown: vfioctl claimed it before any driver probed it (an
    /// early claim), so `original_driver` is `None` and a release lets the kernel pick
    /// ([`Action::Probe`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub driver_unknown: bool,
}

/// Inputs beyond the config and the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Functions vfioctl took earlier (from the journal). Without it nothing is released.
    pub taken: Vec<Taken>,
    /// Users and groups by name.
    pub accounts: Accounts,
    /// Plan only this function and its group closure (`reconcile --device`).
    pub scope: Option<PciAddress>,
    /// Physical functions whose VF count vfioctl changed earlier (from the journal), with the
    /// count they had. A PF the config no longer names in `[[sriov]]` goes back to it.
    pub taken_vfs: Vec<TakenVfs>,
}

impl Context {
    /// This context, planning only `device` and its IOMMU group closure.
    pub fn scoped_to(mut self, device: PciAddress) -> Self {
        self.scope = Some(device);
        self
    }
}

/// A PF's VF count as the apply journal recorded it before vfioctl first changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenVfs {
    pub pf: PciAddress,
    pub original_num_vfs: u32,
}

/// An ordered plan: steps in batches, and every reason the config cannot be realised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Steps in order; see [`Step::batch`] and [`Step::unit`] for what may run in parallel.
    pub actions: Vec<Step>,
    /// Why (part of) the config cannot be realised. The rest is still planned.
    pub problems: Vec<Problem>,
    /// Things worth knowing that do not stop the plan (forced takes, ignored companions).
    pub notes: Vec<String>,
    /// What the scan of the host could not read (from the snapshot the plan was made on).
    pub warnings: Vec<crate::host::ScanWarning>,
}

impl Plan {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// No problems: applying the plan realises the config.
    pub fn is_realisable(&self) -> bool {
        self.problems.is_empty()
    }

    /// Number of batches.
    pub fn batches(&self) -> usize {
        self.actions.iter().map(|s| s.batch).max().unwrap_or(0)
    }

    /// The steps of batch `b` (1-based), grouped by unit, each unit's steps in order.
    pub fn batch(&self, b: usize) -> Vec<(&Unit, Vec<&Step>)> {
        let mut out: Vec<(&Unit, Vec<&Step>)> = Vec::new();
        for s in self.actions.iter().filter(|s| s.batch == b) {
            match out.last_mut() {
                Some((u, v)) if *u == &s.unit => v.push(s),
                _ => out.push((&s.unit, vec![s])),
            }
        }
        out
    }
}

/// Plans `config` against `snap` with no journal and no accounts: nothing is released and
/// named users are unknown. See [`plan_with`].
pub fn plan(config: &Config, snap: &Snapshot) -> Plan {
    plan_with(config, snap, &Context::default())
}

/// Plans `config` against `snap` with the journal's records and the accounts in `ctx`, in
/// stages: resolve what the config names → claim it (with companions, safety, and the releases
/// of what vfioctl took earlier) → keep each group whole or out → node owners and DMA windows →
/// the dependency graph, one kind of change at a time → ordered batches → the scope.
pub fn plan_with(config: &Config, snap: &Snapshot, ctx: &Context) -> Plan {
    let res = resolve::resolve(config, snap, &ctx.taken_vfs);
    let mut found = Found {
        problems: res.problems.clone(),
        notes: Vec::new(),
    };
    let claims = claim(config, snap, ctx, &res, &mut found);
    let (active, failed_groups) = whole_groups(config, snap, &res, &claims, &mut found);
    let nodes = ownership::nodes(config, snap, &active, &ctx.accounts);
    found.problems.extend(nodes.problems);
    found.notes.extend(nodes.notes);
    found.problems.extend(windows::check(config, snap, &res));

    let mut steps = Steps::new(config, snap);
    steps.claims(&res, &active);
    steps.releases(&claims.releases, &failed_groups);
    steps.vf_changes(&res);
    steps.node_owners(&nodes.wants, &active);
    steps.domain_edges(&active);

    let actions = match steps.g.order() {
        Ok(steps) => steps,
        Err(p) => {
            found.problems.push(p);
            Vec::new()
        }
    };
    let plan = Plan {
        actions,
        problems: found.problems,
        notes: found.notes,
        warnings: snap.warnings.clone(),
    };
    match ctx.scope {
        Some(dev) => scope(plan, snap, &res, dev),
        None => plan,
    }
}

/// The problems and notes the stages find, in the order found.
struct Found {
    problems: Vec<Problem>,
    notes: Vec<String>,
}

/// The claims the config declares, with the companions it consents to, the safety rules
/// applied, and the releases of what vfioctl took earlier and the config no longer names.
fn claim(
    config: &Config,
    snap: &Snapshot,
    ctx: &Context,
    res: &resolve::Resolution,
    found: &mut Found,
) -> claims::Claims {
    let mut claims = claims::declared(config, snap, res);
    found.problems.append(&mut claims.problems);
    found
        .notes
        .extend(closure::add_companions(config, snap, &mut claims));
    let (p, n) = safety::check(config, snap, &mut claims);
    found.problems.extend(p);
    found.notes.extend(n);
    claims::releases(&mut claims, &ctx.taken, snap, res);
    claims
}

/// A group is planned whole or not at all: the claims that survive (those whose group, or
/// whose pending VF, is not failed by the closure check, by a failed entry, or by a PF that
/// would lose its VFs), and the failed groups.
fn whole_groups(
    config: &Config,
    snap: &Snapshot,
    res: &resolve::Resolution,
    claims: &claims::Claims,
    found: &mut Found,
) -> (BTreeMap<PciAddress, Claim>, BTreeSet<u32>) {
    let (mut failed_groups, p, n) = closure::check(config, snap, claims);
    found.problems.extend(p);
    found.notes.extend(n);
    // An entry that failed takes its groups with it.
    let mut failed_pending = BTreeSet::new();
    for i in &claims.failed_entries {
        for (a, c) in claims.of_entry(*i) {
            if c.pending {
                failed_pending.insert(a);
            } else if let Some(g) = group_of(snap, a) {
                failed_groups.insert(g);
            }
        }
    }
    found
        .problems
        .extend(pf_driver_changes(snap, res, claims, &mut failed_groups));
    let active = claims
        .claims
        .iter()
        .filter(|(a, c)| {
            if c.pending {
                !failed_pending.contains(*a)
            } else {
                group_of(snap, **a).is_some_and(|g| !failed_groups.contains(&g))
            }
        })
        .map(|(a, c)| (*a, c.clone()))
        .collect();
    (active, failed_groups)
}

/// The dependency graph under construction, with the driver modules its steps need.
struct Steps<'a> {
    config: &'a Config,
    snap: &'a Snapshot,
    g: Graph,
    loaded: BTreeSet<String>,
    modules: ModuleLoads,
}

impl<'a> Steps<'a> {
    fn new(config: &'a Config, snap: &'a Snapshot) -> Self {
        Steps {
            config,
            snap,
            g: Graph::new(),
            loaded: loaded_drivers(snap),
            modules: ModuleLoads::default(),
        }
    }

    /// Each surviving claim: a function onto its driver (override, unbind, bind), or a VF
    /// still to be created, after its PF's VF count.
    fn claims(&mut self, res: &resolve::Resolution, active: &BTreeMap<PciAddress, Claim>) {
        for (a, c) in active {
            let why = claim_reason(self.config, c);
            if c.pending {
                let node = Node::Vf(*a);
                self.g.push(
                    node.clone(),
                    Action::SetOverride {
                        device: *a,
                        from: None,
                        to: c.driver.clone(),
                    },
                    why.clone(),
                );
                self.g.push(
                    node.clone(),
                    Action::Unbind {
                        device: *a,
                        from: None,
                    },
                    why.clone(),
                );
                self.g.push(
                    node.clone(),
                    Action::Bind {
                        device: *a,
                        driver: c.driver.clone(),
                    },
                    why,
                );
                if let Some(pf) = res.pending.get(a) {
                    self.g.edge(Node::Pf(*pf), node.clone());
                }
                self.modules
                    .need(&mut self.g, &self.loaded, &c.driver, *a, node);
            } else if let (Some(dev), Some(grp)) = (self.snap.device(*a), group_of(self.snap, *a)) {
                let node = Node::Group(grp);
                let target = Some(c.driver.as_str());
                if converge(&mut self.g, &node, dev, target, target, &why) {
                    self.modules
                        .need(&mut self.g, &self.loaded, &c.driver, *a, node);
                }
            }
        }
    }

    /// What vfioctl took and the config no longer names, back to how vfioctl found it (or to
    /// the kernel's pick, when it was claimed before any driver probed it).
    fn releases(
        &mut self,
        releases: &BTreeMap<PciAddress, claims::Release>,
        failed_groups: &BTreeSet<u32>,
    ) {
        for (a, r) in releases {
            let (Some(dev), Some(grp)) = (self.snap.device(*a), group_of(self.snap, *a)) else {
                continue;
            };
            if failed_groups.contains(&grp) {
                continue;
            }
            let node = Node::Group(grp);
            if r.driver_unknown {
                let why = "no longer in the config: claimed before any driver probed it, so the \
                           kernel picks its driver";
                to_kernel_pick(&mut self.g, &node, dev, r.driver_override.as_deref(), why);
                continue;
            }
            let why = match &r.driver {
                Some(d) => format!("no longer in the config: back to {d}, as vfioctl found it"),
                None => "no longer in the config: left unbound, as vfioctl found it".to_string(),
            };
            if converge(
                &mut self.g,
                &node,
                dev,
                r.driver.as_deref(),
                r.driver_override.as_deref(),
                &why,
            ) {
                if let Some(d) = &r.driver {
                    self.modules.need(&mut self.g, &self.loaded, d, *a, node);
                }
            }
        }
    }

    /// SR-IOV VF counts: through 0 between two counts, before the PF's own group changes.
    fn vf_changes(&mut self, res: &resolve::Resolution) {
        for change in res.vf_changes.values() {
            let node = Node::Pf(change.pf);
            // The PF's own group changes come after its VF count (a PF leaves its driver only
            // once it has no VFs to lose).
            if let Some(grp) = group_of(self.snap, change.pf) {
                self.g.edge(node.clone(), Node::Group(grp));
            }
            let wants = if change.release {
                format!(
                    "no longer in [[sriov]]: {} goes back to {} VFs, as vfioctl found it (has {})",
                    change.pf, change.to, change.from
                )
            } else {
                format!(
                    "[[sriov]] wants {} VFs on {} (has {})",
                    change.to, change.pf, change.from
                )
            };
            let why = if change.from != 0 && change.to != 0 {
                format!("{wants}; the kernel needs 0 between two counts")
            } else {
                wants
            };
            if change.from != 0 {
                self.g.push(
                    node.clone(),
                    Action::SetNumVfs {
                        device: change.pf,
                        from: change.from,
                        to: 0,
                    },
                    why.clone(),
                );
            }
            if change.to != 0 {
                self.g.push(
                    node,
                    Action::SetNumVfs {
                        device: change.pf,
                        from: 0,
                        to: change.to,
                    },
                    why,
                );
            }
        }
    }

    /// Group node owners and modes the `[[user]]` entries want (with the members' device
    /// cdevs on a kernel that has them).
    fn node_owners(
        &mut self,
        wants: &BTreeMap<NodeKey, ownership::NodeWant>,
        active: &BTreeMap<PciAddress, Claim>,
    ) {
        let cdev_kernel = has_device_cdevs(self.snap);
        for (key, want) in wants {
            let why = match (&want.user, cdev_kernel) {
                (Some(u), false) => format!("[[user]] `{u}` may open this group"),
                (Some(u), true) => {
                    format!("[[user]] `{u}` may open this group and its devices' cdevs")
                }
                (None, _) => "claimed group without a [[user]]: root only".to_string(),
            };
            match key {
                NodeKey::Group(grp) => {
                    let current = self
                        .snap
                        .group(*grp)
                        .and_then(|x| x.node.as_ref())
                        .map(|n| Ownership {
                            uid: n.uid,
                            gid: n.gid,
                            mode: Mode(n.mode & 0o7777),
                        });
                    let expected = current.unwrap_or(Ownership::KERNEL_DEFAULT);
                    let cdevs = cdevs_to_set(self.snap, *grp, active, want.owner);
                    if expected != want.owner || cdevs {
                        self.g.push(
                            Node::Group(*grp),
                            Action::SetNodeOwner {
                                device: want.device,
                                group: Some(*grp),
                                from: current,
                                to: want.owner,
                            },
                            why,
                        );
                    }
                }
                NodeKey::Pending(a) => {
                    if want.owner != Ownership::KERNEL_DEFAULT {
                        self.g.push(
                            Node::Vf(*a),
                            Action::SetNodeOwner {
                                device: *a,
                                group: None,
                                from: None,
                                to: want.owner,
                            },
                            why,
                        );
                    }
                }
            }
        }
    }

    /// A domain comes after the groups of its devices.
    fn domain_edges(&mut self, active: &BTreeMap<PciAddress, Claim>) {
        for dom in &self.config.domains {
            for name in &dom.devices {
                for (a, c) in active {
                    if self
                        .config
                        .devices
                        .get(c.entry)
                        .is_some_and(|d| &d.name == name)
                    {
                        let member = if c.pending {
                            Node::Vf(*a)
                        } else {
                            match group_of(self.snap, *a) {
                                Some(grp) => Node::Group(grp),
                                None => continue,
                            }
                        };
                        self.g.edge(member, Node::Domain(dom.name.clone()));
                    }
                }
            }
        }
    }
}

/// A PF leaving its driver loses its VFs (the driver's remove disables SR-IOV), so a plan that
/// moves a PF which has or gets VFs would undo itself. Such a PF's group is not planned.
fn pf_driver_changes(
    snap: &Snapshot,
    res: &resolve::Resolution,
    claims: &claims::Claims,
    failed_groups: &mut BTreeSet<u32>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for dev in snap.devices.iter().filter(|d| d.sriov.is_some()) {
        let now = dev.sriov.as_ref().map_or(0, |s| s.num_vfs);
        let wanted = res.vf_changes.get(&dev.address).map_or(now, |c| c.to);
        // With no VFs wanted, the count goes to 0 first (the graph orders it) and the PF
        // may then move freely.
        if wanted == 0 {
            continue;
        }
        let target = match (
            claims.claims.get(&dev.address),
            claims.releases.get(&dev.address),
        ) {
            (Some(c), _) => Some(c.driver.as_str()),
            (None, Some(r)) => r.final_driver(dev),
            (None, None) => continue,
        };
        if target == dev.driver.as_deref() {
            continue;
        }
        let Some(g) = dev.iommu_group else { continue };
        if !failed_groups.insert(g) {
            continue;
        }
        out.push(
            Problem::new(
                ProblemKind::Sriov,
                format!(
                    "{} is an SR-IOV PF that {} {} VF(s); moving it from {} to {} would remove \
                     them (the driver's remove disables SR-IOV). Leave the PF on its driver, or \
                     set its [[sriov]] num_vfs to 0",
                    dev.address,
                    if res.vf_changes.contains_key(&dev.address) {
                        "should get"
                    } else {
                        "has"
                    },
                    wanted,
                    dev.driver.as_deref().unwrap_or("(none)"),
                    target.unwrap_or("(none)")
                ),
            )
            .device(dev.address)
            .group(g),
        );
    }
    out
}

fn group_of(snap: &Snapshot, a: PciAddress) -> Option<u32> {
    snap.device(a).and_then(|d| d.iommu_group)
}

fn claim_reason(config: &Config, c: &Claim) -> String {
    let name = config
        .devices
        .get(c.entry)
        .map(|d| d.name.as_str())
        .unwrap_or("?");
    match c.role {
        claims::Role::Declared => format!("[[device]] `{name}` wants {}", c.driver),
        claims::Role::Companion => {
            format!("companion of [[device]] `{name}`: its group needs it off DMA drivers")
        }
    }
}

/// Plans the steps that move `dev` to (`driver`, `over`ride) at `node`: override first (so a
/// re-probe keeps the function where we want it), then unbind, then bind. Returns whether a
/// bind was planned.
fn converge(
    g: &mut Graph,
    node: &Node,
    dev: &PciDevice,
    driver: Option<&str>,
    over: Option<&str>,
    why: &str,
) -> bool {
    let a = dev.address;
    if dev.driver_override.as_deref() != over {
        g.push(node.clone(), override_to(dev, over), why);
    }
    if dev.driver.as_deref() == driver {
        return false;
    }
    if let Some(from) = &dev.driver {
        g.push(
            node.clone(),
            Action::Unbind {
                device: a,
                from: Some(from.clone()),
            },
            why,
        );
    }
    match driver {
        Some(d) => {
            g.push(
                node.clone(),
                Action::Bind {
                    device: a,
                    driver: d.to_string(),
                },
                why,
            );
            true
        }
        None => false,
    }
}

/// The action that changes `dev`'s override to `to` (`None`: cleared); only called when they
/// differ.
fn override_to(dev: &PciDevice, to: Option<&str>) -> Action {
    match to {
        Some(to) => Action::SetOverride {
            device: dev.address,
            from: dev.driver_override.clone(),
            to: to.to_string(),
        },
        None => Action::ClearOverride {
            device: dev.address,
            from: dev.driver_override.clone().unwrap_or_default(),
        },
    }
}

/// Plans the release of `dev` to whatever driver the kernel picks (see
/// [`claims::KernelPick`]): its override back to `original`, unbind from the vfio driver (or
/// the driver our override named), then a plain probe.
fn to_kernel_pick(g: &mut Graph, node: &Node, dev: &PciDevice, original: Option<&str>, why: &str) {
    let a = dev.address;
    let pick = claims::KernelPick::needed(
        dev.driver.as_deref(),
        dev.driver_override.as_deref(),
        original,
    );
    if pick.set_override {
        g.push(node.clone(), override_to(dev, original), why);
    }
    if pick.unbind {
        g.push(
            node.clone(),
            Action::Unbind {
                device: a,
                from: dev.driver.clone(),
            },
            why,
        );
    }
    if pick.probe {
        g.push(node.clone(), Action::Probe { device: a }, why);
    }
}

/// Drivers registered on the PCI bus, or evidently loaded (a module, or a function on it).
fn loaded_drivers(snap: &Snapshot) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = snap.pci_drivers.iter().cloned().collect();
    for m in &snap.vfio.modules {
        out.insert(m.replace('_', "-"));
        out.insert(m.clone());
    }
    for d in &snap.devices {
        if let Some(drv) = &d.driver {
            out.insert(drv.clone());
        }
    }
    out
}

/// The module that registers `driver` (module names use `_` where drivers may use `-`).
pub fn module_for(driver: &str) -> String {
    driver.replace('-', "_")
}

#[derive(Default)]
struct ModuleLoads {
    planned: BTreeSet<String>,
}

impl ModuleLoads {
    fn need(
        &mut self,
        g: &mut Graph,
        loaded: &BTreeSet<String>,
        driver: &str,
        by: PciAddress,
        node: Node,
    ) {
        if loaded.contains(driver) || loaded.contains(&module_for(driver)) {
            return;
        }
        if self.planned.insert(driver.to_string()) {
            g.push(
                Node::Modules,
                Action::LoadModule {
                    module: module_for(driver),
                    driver: driver.to_string(),
                },
                format!("{driver} is not registered on the PCI bus; {by} needs it"),
            );
        }
        g.edge(Node::Modules, node);
    }
}

/// Keeps only the steps and problems about `dev`'s group closure (its group, or the VF it will
/// be, and the SR-IOV change of a PF), and the module loads they need; renumbers batches.
fn scope(plan: Plan, snap: &Snapshot, res: &resolve::Resolution, dev: PciAddress) -> Plan {
    let mut units: BTreeSet<Unit> = BTreeSet::new();
    let mut members: BTreeSet<PciAddress> = BTreeSet::new();
    members.insert(dev);
    let group = group_of(snap, dev);
    if let Some(g) = group {
        units.insert(Unit::Group { group: g });
        if let Some(x) = snap.group(g) {
            members.extend(x.devices.iter().copied());
        }
    }
    if res.pending.contains_key(&dev) {
        units.insert(Unit::Pending { device: dev });
    }
    if res.vf_changes.contains_key(&dev) {
        units.insert(Unit::Sriov { pf: dev });
    }
    let mut problems: Vec<Problem> = plan
        .problems
        .into_iter()
        .filter(|p| {
            p.kind == ProblemKind::Cycle
                || p.devices.iter().any(|a| members.contains(a))
                || group.is_some_and(|g| p.groups.contains(&g))
        })
        .collect();
    if snap.device(dev).is_none() && !res.pending.contains_key(&dev) {
        problems.push(
            Problem::new(
                ProblemKind::Missing,
                format!("{dev} is not present on this host"),
            )
            .device(dev),
        );
    }
    let kept: Vec<Step> = plan
        .actions
        .iter()
        .filter(|s| units.contains(&s.unit))
        .cloned()
        .collect();
    let drivers: BTreeSet<String> = kept
        .iter()
        .filter_map(|s| match &s.action {
            Action::Bind { driver, .. } => Some(driver.clone()),
            _ => None,
        })
        .collect();
    let mut actions: Vec<Step> = plan
        .actions
        .iter()
        .filter(|s| match &s.action {
            Action::LoadModule { driver, .. } => drivers.contains(driver),
            _ => false,
        })
        .cloned()
        .chain(kept)
        .collect();
    let mut used: Vec<usize> = actions.iter().map(|s| s.batch).collect();
    used.sort_unstable();
    used.dedup();
    for s in &mut actions {
        s.batch = used.partition_point(|b| *b < s.batch) + 1;
    }
    Plan {
        actions,
        problems,
        notes: plan.notes,
        warnings: plan.warnings,
    }
}

/// Whether the host has iommufd and VFIO device cdevs (`/dev/iommu`, or a function with a cdev).
fn has_device_cdevs(snap: &Snapshot) -> bool {
    snap.vfio.iommufd || snap.devices.iter().any(|d| d.vfio_cdev.is_some())
}

/// Whether group `group`'s device cdevs need the node step although the group node itself is
/// right: a member's cdev (node) owned otherwise, or, on a cdev kernel, a claimed member not on
/// a vfio driver yet (its cdev appears root:root 0600 when it binds, after the group node).
fn cdevs_to_set(
    snap: &Snapshot,
    group: u32,
    active: &BTreeMap<PciAddress, Claim>,
    want: Ownership,
) -> bool {
    let Some(g) = snap.group(group) else {
        return false;
    };
    let cdev_kernel = has_device_cdevs(snap);
    g.devices.iter().filter_map(|a| snap.device(*a)).any(|d| {
        let owned = |c: &crate::host::DeviceCdev| {
            c.node
                .as_ref()
                .map_or(Ownership::KERNEL_DEFAULT, |n| Ownership {
                    uid: n.uid,
                    gid: n.gid,
                    mode: Mode(n.mode & 0o7777),
                })
        };
        match &d.vfio_cdev {
            Some(c) => owned(c) != want,
            None => {
                cdev_kernel
                    && want != Ownership::KERNEL_DEFAULT
                    && active
                        .get(&d.address)
                        .is_some_and(|c| is_vfio_driver(&c.driver))
                    && !d.driver.as_deref().is_some_and(is_vfio_driver)
            }
        }
    })
}
