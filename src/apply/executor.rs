//! Running a plan's steps through the seam: batch after batch; within a batch, independent
//! units (IOMMU groups, PFs, pending VFs) in parallel with a small bound, each unit's steps in
//! order, except that the members of a group move side by side (see [`lanes`]). Before every
//! change the object's current state goes to the journal (the pass's in-flight record, and the
//! persistent record of originals). One `tracing` line per action:
//! what, device, result, duration.
//!
//! The executor stops at the first failure (letting steps already running in other units
//! finish) and returns it; undoing is the caller's transaction, not sprinkled through here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::journal::{Entry, InFlight, Journal, JournalError, LoadedModule, Object, Recorded};
use crate::kernel::{Host, KernelError, NodeOwner};
use crate::pci::PciAddress;
use crate::plan::{Action, Plan, Step, Unit};

/// How steps run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Units (and group members, see [`lanes`]) of one batch run at most this many at a time.
    pub parallel: usize,
    /// How long to wait for `/dev/vfio/N` to appear before setting its owner.
    pub node_wait: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            parallel: 4,
            node_wait: Duration::from_secs(5),
        }
    }
}

/// One executed step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub step: Step,
    pub result: Result<(), StepError>,
    pub duration: Duration,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("recording the state before the change failed: {0}")]
    Journal(#[from] JournalError),
}

/// A step that failed, with what it was.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    pub step: Step,
    pub error: StepError,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", describe(&self.step.action), self.error)
    }
}

/// A one-line description of an action: what, on which device.
pub fn describe(a: &Action) -> String {
    match a {
        Action::LoadModule { module, .. } => format!("load module {module}"),
        Action::SetNumVfs { device, to, .. } => format!("set {to} VFs on {device}"),
        Action::SetOverride { device, to, .. } => {
            format!("set driver_override of {device} to {to}")
        }
        Action::ClearOverride { device, .. } => format!("clear driver_override of {device}"),
        Action::Unbind { device, from } => match from {
            Some(d) => format!("unbind {device} from {d}"),
            None => format!("unbind {device}"),
        },
        Action::Bind { device, driver } => format!("bind {device} to {driver}"),
        Action::Probe { device } => format!("probe {device} (the kernel picks its driver)"),
        Action::SetNodeOwner {
            device, group, to, ..
        } => match group {
            Some(g) => format!("set /dev/vfio/{g} ({device}) to {to}"),
            None => format!("set the group node of {device} to {to}"),
        },
    }
}

/// The pass's journal: records each object's state before its first change in the pass.
#[derive(Debug)]
pub struct Recorder {
    state_dir: PathBuf,
    run_dir: PathBuf,
    inner: Mutex<Pass>,
}

/// What the recorder holds for the pass.
#[derive(Debug)]
struct Pass {
    journal: Journal,
    inflight: InFlight,
    /// Group nodes found absent when first looked at in this pass: a node that appears later
    /// is this pass's own creation, never an original to record (and whether a member's step
    /// ran before or after another member's bind must not change what is recorded).
    absent_nodes: std::collections::BTreeSet<Object>,
    /// The objects in `inflight` and in `journal`, so recording stays one lookup per object
    /// (a pass over thousands of functions must not scan the records once per step).
    in_pass: std::collections::HashSet<Object>,
    in_journal: std::collections::HashSet<Object>,
}

impl Recorder {
    pub fn new(state_dir: PathBuf, run_dir: PathBuf, journal: Journal) -> Self {
        let in_journal = journal.entries.iter().map(|e| e.object).collect();
        Recorder {
            state_dir,
            run_dir,
            inner: Mutex::new(Pass {
                journal,
                inflight: InFlight::new(),
                absent_nodes: Default::default(),
                in_pass: Default::default(),
                in_journal,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pass> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what `object` is now, and what the change may take with it, unless this pass
    /// recorded them already. Written to disk (in-flight first, then the journal of
    /// originals) before returning.
    ///
    /// A change of a function's driver can remove and re-create its group node (which comes
    /// back root:root 0600), so the node is recorded with it, first, to be restored after
    /// the function. A VF count change removes the VFs, so their state is recorded first too.
    pub fn before(&self, host: &dyn Host, object: Object) -> Result<(), StepError> {
        self.record(host, &[object], false)
    }

    /// Records every object `plan` will change, in plan order, with one write of each file:
    /// the same guarantee as [`Recorder::before`] per step, at the cost of one journal write
    /// per pass instead of one per object. Functions that do not exist yet (VFs the plan
    /// creates) are recorded by their own steps later.
    pub fn before_plan(&self, host: &dyn Host, plan: &Plan) -> Result<(), StepError> {
        let objects: Vec<Object> = plan
            .actions
            .iter()
            .filter_map(|s| target(&s.action))
            .collect();
        self.record(host, &objects, true)
    }

    fn record(
        &self,
        host: &dyn Host,
        targets: &[Object],
        skip_missing: bool,
    ) -> Result<(), StepError> {
        let mut g = self.lock();
        let Pass {
            journal,
            inflight,
            absent_nodes,
            in_pass,
            in_journal,
        } = &mut *g;
        let (mut new_inflight, mut new_journal) = (false, false);
        for object in targets {
            let mut objects = Vec::new();
            match *object {
                Object::Device { device } => objects.push(Object::Node { device }),
                Object::Sriov { pf } => {
                    for vf in host.virtfns(pf)? {
                        objects.push(Object::Node { device: vf });
                        objects.push(Object::Device { device: vf });
                    }
                }
                Object::Node { .. } => {}
            }
            objects.push(*object);
            for o in objects {
                if in_pass.contains(&o) || absent_nodes.contains(&o) {
                    continue;
                }
                let was = match current(host, &o) {
                    Ok(w) => w,
                    Err(KernelError::NoSuchDevice(_)) if skip_missing => continue,
                    Err(e) => return Err(e.into()),
                };
                if was == (Recorded::Node { owner: None }) {
                    // No node: nothing to put back (it goes with its last vfio member).
                    absent_nodes.insert(o);
                    continue;
                }
                // The first record is the original: only objects not journaled yet.
                if in_journal.insert(o) {
                    journal.entries.push(Entry {
                        object: o,
                        was: was.clone(),
                    });
                    new_journal = true;
                }
                in_pass.insert(o);
                inflight.entries.push(Entry { object: o, was });
                new_inflight = true;
            }
        }
        if new_inflight {
            inflight.save(&self.run_dir)?;
        }
        if new_journal {
            journal.save(&self.state_dir)?;
        }
        Ok(())
    }

    /// Records that the pass is about to load `module` (registering `driver`) when it is not
    /// loaded yet, so undo and rollback can unload it again. In-flight first, then the journal.
    pub fn before_load(
        &self,
        host: &dyn Host,
        module: &str,
        driver: &str,
    ) -> Result<(), StepError> {
        if host.module_loaded(module)? {
            return Ok(());
        }
        let loaded = LoadedModule {
            module: module.to_string(),
            driver: driver.to_string(),
        };
        let mut g = self.lock();
        let Pass {
            journal, inflight, ..
        } = &mut *g;
        if !inflight.modules.contains(&loaded) {
            inflight.modules.push(loaded.clone());
            inflight.save(&self.run_dir)?;
        }
        if !journal.modules.contains(&loaded) {
            journal.modules.push(loaded);
            journal.save(&self.state_dir)?;
        }
        Ok(())
    }

    /// The journal as the pass has recorded it so far.
    pub fn journal(&self) -> Journal {
        self.lock().journal.clone()
    }

    /// The pass's in-flight entries and the journal, for undo and commit.
    pub fn into_parts(self) -> (Journal, InFlight) {
        let pass = self.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        (pass.journal, pass.inflight)
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    pub fn run_dir(&self) -> &std::path::Path {
        &self.run_dir
    }
}

/// What `object` is now, read from the host.
pub fn current(host: &dyn Host, object: &Object) -> Result<Recorded, KernelError> {
    Ok(match object {
        Object::Device { device } => Recorded::Device(host.device_state(*device)?),
        Object::Sriov { pf } => Recorded::Sriov {
            num_vfs: host.num_vfs(*pf)?,
        },
        Object::Node { device } => Recorded::Node {
            owner: match host.iommu_group(*device)? {
                Some(g) => host.node_owner(g)?,
                None => None,
            },
        },
    })
}

fn device_object(device: PciAddress) -> Object {
    Object::Device { device }
}

/// The object an action changes (a node is named by its function), `None` for a module load.
fn target(a: &Action) -> Option<Object> {
    match a {
        Action::LoadModule { .. } => None,
        Action::SetNumVfs { device, .. } => Some(Object::Sriov { pf: *device }),
        Action::SetOverride { device, .. }
        | Action::ClearOverride { device, .. }
        | Action::Unbind { device, .. }
        | Action::Bind { device, .. }
        | Action::Probe { device } => Some(device_object(*device)),
        Action::SetNodeOwner { device, .. } => Some(Object::Node { device: *device }),
    }
}

/// Runs one step: journal, then the primitive(s), each checked by reading back.
fn run_step(
    host: &dyn Host,
    rec: &Recorder,
    step: &Step,
    opts: &ExecOptions,
) -> Result<(), StepError> {
    match &step.action {
        Action::LoadModule { module, driver } => {
            rec.before_load(host, module, driver)?;
            host.load_module(module)?
        }
        Action::SetNumVfs { device, to, .. } => {
            rec.before(host, Object::Sriov { pf: *device })?;
            host.set_num_vfs(*device, *to)?;
        }
        Action::SetOverride { device, to, .. } => {
            rec.before(host, device_object(*device))?;
            host.set_driver_override(*device, Some(to))?;
        }
        Action::ClearOverride { device, .. } => {
            rec.before(host, device_object(*device))?;
            host.set_driver_override(*device, None)?;
        }
        Action::Unbind { device, .. } => {
            rec.before(host, device_object(*device))?;
            host.unbind(*device)?;
        }
        Action::Bind { device, driver } => {
            rec.before(host, device_object(*device))?;
            let now = host.device_state(*device)?;
            if now.driver.as_deref() == Some(driver.as_str()) {
                return Ok(());
            }
            if now.driver_override.as_deref() == Some(driver.as_str()) {
                // With the override naming it, a probe can bind nothing else; it counts only
                // when the driver link says so.
                let bound = host.probe(*device)?;
                if bound.as_deref() != Some(driver.as_str()) {
                    return Err(KernelError::NotConverged {
                        what: format!("probe of {device}"),
                        expected: driver.clone(),
                        found: bound.unwrap_or_else(|| "no driver".to_string()),
                    }
                    .into());
                }
            } else {
                host.bind(*device, driver)?;
            }
        }
        Action::Probe { device } => {
            rec.before(host, device_object(*device))?;
            let bound = host.probe(*device)?;
            tracing::debug!(device = %device, driver = ?bound, "the kernel's pick");
        }
        Action::SetNodeOwner {
            device, group, to, ..
        } => {
            let group = match group {
                Some(g) => *g,
                None => host
                    .iommu_group(*device)?
                    .ok_or_else(|| KernelError::NotConverged {
                        what: format!("IOMMU group of {device}"),
                        expected: "a group".to_string(),
                        found: "none".to_string(),
                    })?,
            };
            rec.before(host, Object::Node { device: *device })?;
            let owner = NodeOwner {
                uid: to.uid,
                gid: to.gid,
                mode: to.mode.0,
            };
            host.set_node_owner(group, owner, opts.node_wait)?;
        }
    }
    Ok(())
}

fn traced(host: &dyn Host, rec: &Recorder, step: &Step, opts: &ExecOptions) -> StepRecord {
    let t0 = Instant::now();
    let result = run_step(host, rec, step, opts);
    let duration = t0.elapsed();
    let device = step
        .action
        .device()
        .map_or_else(|| "-".to_string(), |d| d.to_string());
    // The IOMMU group, where the step names one (the journal's GROUP= field).
    let group = match &step.action {
        Action::SetNodeOwner { group: Some(g), .. } => g.to_string(),
        _ => "-".to_string(),
    };
    match &result {
        Ok(()) => tracing::info!(
            action = step.action.kind(),
            device = %device,
            group = %group,
            result = "ok",
            ms = duration.as_secs_f64() * 1e3,
            "{}",
            describe(&step.action)
        ),
        Err(e) => tracing::error!(
            action = step.action.kind(),
            device = %device,
            group = %group,
            result = %e,
            ms = duration.as_secs_f64() * 1e3,
            "{}",
            describe(&step.action)
        ),
    }
    StepRecord {
        step: step.clone(),
        result,
        duration,
    }
}

/// A unit's steps as lanes that may run side by side, and a tail that runs once they are all
/// done. In an IOMMU group each member's driver steps (override, unbind, bind, probe) depend on
/// no other member's: the kernel binds and unbinds members independently, and the group only
/// has to be viable once all are done. So members move in parallel (a slow unbind of one no
/// longer holds up the rest of its group), and the node's owner, which needs the group on
/// vfio, is set after. A group whose steps do not have that shape (a node step before a driver
/// step, or a member leaving a vfio driver) and every other unit run as one lane, in plan
/// order.
fn lanes<'a>(unit: &Unit, steps: &[&'a Step]) -> (Vec<Vec<&'a Step>>, Vec<&'a Step>) {
    let is_node = |s: &&Step| matches!(s.action, Action::SetNodeOwner { .. });
    let first_node = steps.iter().position(is_node).unwrap_or(steps.len());
    // A member leaving a vfio driver could, side by side with the others, leave the group
    // with no vfio member for a moment: the kernel removes the node then and re-creates it
    // root:root 0600, which the plan (made for plan order) does not expect.
    let leaves_vfio = |s: &&Step| match &s.action {
        Action::Unbind { from: Some(d), .. } => crate::host::is_vfio_driver(d),
        _ => false,
    };
    let shaped = matches!(unit, Unit::Group { .. })
        && steps[first_node..].iter().all(is_node)
        && steps[..first_node]
            .iter()
            .all(|s| s.action.device().is_some())
        && !steps.iter().any(leaves_vfio);
    if !shaped {
        return (vec![steps.to_vec()], Vec::new());
    }
    let mut lanes: Vec<(PciAddress, Vec<&Step>)> = Vec::new();
    for s in &steps[..first_node] {
        let Some(d) = s.action.device() else { continue };
        match lanes.iter_mut().find(|(x, _)| *x == d) {
            Some((_, lane)) => lane.push(*s),
            None => lanes.push((d, vec![*s])),
        }
    }
    (
        lanes.into_iter().map(|(_, lane)| lane).collect(),
        steps[first_node..].to_vec(),
    )
}

/// Runs `plan`. Returns every executed step; on failure also the first failure.
pub fn execute(
    host: &dyn Host,
    rec: &Recorder,
    plan: &Plan,
    opts: &ExecOptions,
) -> (Vec<StepRecord>, Option<StepFailure>) {
    let mut done = Vec::new();
    if let Err(error) = rec.before_plan(host, plan) {
        if let Some(step) = plan.actions.first() {
            return (
                done,
                Some(StepFailure {
                    step: step.clone(),
                    error,
                }),
            );
        }
    }
    for b in 1..=plan.batches() {
        let units: Vec<(&Unit, Vec<&Step>)> = plan.batch(b);
        let failed = AtomicBool::new(false);
        let records = Mutex::new(Vec::new());
        let run_lane = |steps: &[&Step]| {
            for s in steps {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let r = traced(host, rec, s, opts);
                if r.result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                records.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            }
        };
        // Every lane of every unit side by side, then the units' tails (node owners).
        let (lanes, tails): (Vec<_>, Vec<_>) = units.iter().map(|(u, s)| lanes(u, s)).unzip();
        let lanes: Vec<Vec<&Step>> = lanes.into_iter().flatten().collect();
        let tails: Vec<Vec<&Step>> = tails.into_iter().filter(|t| !t.is_empty()).collect();
        for work in [lanes, tails] {
            let workers = opts.parallel.max(1).min(work.len());
            if workers <= 1 {
                for steps in &work {
                    run_lane(steps);
                }
            } else {
                let next = AtomicUsize::new(0);
                std::thread::scope(|scope| {
                    for _ in 0..workers {
                        scope.spawn(|| loop {
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            match work.get(i) {
                                Some(steps) if !failed.load(Ordering::SeqCst) => run_lane(steps),
                                _ => return,
                            }
                        });
                    }
                });
            }
        }
        let records = records.into_inner().unwrap_or_else(|p| p.into_inner());
        let failure = records.iter().find_map(|r| match &r.result {
            Err(e) => Some(StepFailure {
                step: r.step.clone(),
                error: e.clone(),
            }),
            Ok(()) => None,
        });
        done.extend(records);
        if failure.is_some() {
            return (done, failure);
        }
    }
    (done, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Ownership;

    fn step(action: Action, unit: Unit) -> Step {
        Step {
            action,
            batch: 1,
            unit,
            reason: String::new(),
        }
    }

    fn take(d: &str, unit: &Unit) -> Vec<Step> {
        let device: PciAddress = d.parse().unwrap();
        vec![
            step(
                Action::SetOverride {
                    device,
                    from: None,
                    to: "vfio-pci".into(),
                },
                unit.clone(),
            ),
            step(
                Action::Unbind {
                    device,
                    from: Some("e1000".into()),
                },
                unit.clone(),
            ),
            step(
                Action::Bind {
                    device,
                    driver: "vfio-pci".into(),
                },
                unit.clone(),
            ),
        ]
    }

    fn owner(d: &str, unit: &Unit) -> Step {
        step(
            Action::SetNodeOwner {
                device: d.parse().unwrap(),
                group: Some(4),
                from: None,
                to: Ownership {
                    uid: 1000,
                    gid: 1000,
                    mode: crate::plan::Mode(0o660),
                },
            },
            unit.clone(),
        )
    }

    #[test]
    fn group_members_become_lanes_and_the_node_comes_after() {
        let g = Unit::Group { group: 4 };
        let mut steps = take("0000:02:01.0", &g);
        steps.extend(take("0000:02:02.0", &g));
        steps.push(owner("0000:02:01.0", &g));
        let refs: Vec<&Step> = steps.iter().collect();
        let (lanes, tail) = lanes(&g, &refs);
        assert_eq!(lanes.len(), 2);
        assert_eq!(lanes[0], refs[0..3].to_vec());
        assert_eq!(lanes[1], refs[3..6].to_vec());
        assert_eq!(tail, vec![refs[6]]);
    }

    #[test]
    fn other_shapes_and_units_keep_plan_order() {
        let g = Unit::Group { group: 4 };
        let mut steps = vec![owner("0000:02:01.0", &g)];
        steps.extend(take("0000:02:01.0", &g));
        let refs: Vec<&Step> = steps.iter().collect();
        assert_eq!(lanes(&g, &refs), (vec![refs.clone()], vec![]));

        let mut steps = take("0000:02:01.0", &g);
        steps.push(step(
            Action::Unbind {
                device: "0000:02:02.0".parse().unwrap(),
                from: Some("vfio-pci".into()),
            },
            g.clone(),
        ));
        let refs: Vec<&Step> = steps.iter().collect();
        assert_eq!(
            lanes(&g, &refs),
            (vec![refs.clone()], vec![]),
            "a member leaving vfio keeps the group in plan order"
        );

        let vf = Unit::Pending {
            device: "0000:01:10.0".parse().unwrap(),
        };
        let steps = take("0000:01:10.0", &vf);
        let refs: Vec<&Step> = steps.iter().collect();
        assert_eq!(lanes(&vf, &refs), (vec![refs.clone()], vec![]));
    }
}
