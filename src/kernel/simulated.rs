//! An in-memory kernel behind the [`Host`] seam, for tests: it follows the rules the real
//! kernel enforces (as observed in the VM, `/work/shared/vm-notes.md`), records every call, and
//! can be told to fail at any step.
//!
//! It is a test tool, not a second planner: it knows how the kernel reacts to each write, not
//! what vfioctl ought to write. The rules it keeps:
//! - `driver_override` only affects the next probe; it never moves a bound function.
//! - a probe of a bound function does nothing; of an unbound one, binds the override driver if
//!   set and registered (and nothing else), else a registered driver whose id table matches.
//!   The probe write itself succeeds either way.
//! - unbind leaves the function driverless; unbinding a vfio function whose group is held
//!   blocks (reported as a timeout, as the real host would).
//! - a group node `/dev/vfio/N` appears `root:root 0600` when a member binds a vfio driver and
//!   disappears when the last vfio member leaves.
//! - viability: every member unbound or on vfio-pci/variants, pci-stub, pcieport; a held group
//!   refuses a second open (EBUSY); `SET_CONTAINER` fails with EPERM on a non-viable group.
//! - SR-IOV: VFs appear at the PF's offset/stride, each in a new group, and autoprobe; a
//!   non-zero count changes only through 0 (EBUSY); more than `total_vfs` is ERANGE.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;

use super::{DeviceState, Host, KernelError, NodeOwner};
use crate::host::{
    driver_keeps_group_viable, is_vfio_driver, DeviceCdev, IommuGroup, NodeInfo, PciDevice,
    Snapshot, Sriov, Usage,
};

/// The major number the simulated kernel gives VFIO device cdevs.
const SIM_CDEV_MAJOR: u32 = 511;
use crate::pci::{PciAddress, PciId};
use crate::vfio::GroupStatus;

/// One recorded call on the seam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    SetOverride(PciAddress, Option<String>),
    Unbind(PciAddress),
    Probe(PciAddress),
    Bind(PciAddress, String),
    SetNumVfs(PciAddress, u32),
    SetNodeOwner(u32, NodeOwner),
    LoadModule(String),
    UnloadModule(String),
}

impl Call {
    /// What the call acts on and what it does, for a [`FaultKey`].
    pub fn key_parts(&self) -> (String, &'static str) {
        match self {
            Call::SetOverride(a, _) => (a.to_string(), "set-override"),
            Call::Unbind(a) => (a.to_string(), "unbind"),
            Call::Probe(a) => (a.to_string(), "probe"),
            Call::Bind(a, _) => (a.to_string(), "bind"),
            Call::SetNumVfs(a, _) => (a.to_string(), "set-num-vfs"),
            Call::SetNodeOwner(g, _) => (format!("group {g}"), "set-node-owner"),
            Call::LoadModule(m) => (format!("module {m}"), "load-module"),
            Call::UnloadModule(m) => (format!("module {m}"), "unload-module"),
        }
    }

    /// The function the call writes to, when it writes to one.
    pub fn device(&self) -> Option<PciAddress> {
        match self {
            Call::SetOverride(a, _)
            | Call::Unbind(a)
            | Call::Probe(a)
            | Call::Bind(a, _)
            | Call::SetNumVfs(a, _) => Some(*a),
            Call::SetNodeOwner(..) | Call::LoadModule(_) | Call::UnloadModule(_) => None,
        }
    }
}

/// How an injected fault behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails and changes nothing.
    Fail,
    /// The call takes effect, then reports failure (a write that worked but could not be
    /// confirmed).
    FailAfterEffect,
    /// The call times out without effect (a blocked write that was abandoned); the function
    /// stays locked (every call on it is `Stuck`) until [`SimKernel::revive`].
    Hang,
    /// The host stops answering from this call on (until [`SimKernel::revive`]): how tests
    /// model vfioctl being killed between steps.
    Crash,
    /// Like `Crash`, but the call itself takes effect first.
    CrashAfterEffect,
    /// The function the call acts on is surprise-removed (hot-unplugged) just before it: the
    /// call finds no such device. Only for calls on a function.
    Remove,
    /// The function the call writes to is surprise-removed just before it (the call then
    /// finds no such device), as a hot-unplug between a decision and its write.
    Unplug,
}

/// One call on the seam named independently of how threads interleave: what it acts on (a
/// function's address, `group N`, `module M`, or `host`), what it does (`unbind`, `probe`,
/// ..., or `read` for a read of a function's attributes, `snapshot` for a whole-host read),
/// and how many calls of that kind on that target came before it in this kernel's life. Group
/// members run side by side, but each member's calls run in order, so a key names the same call
/// in every run of the same plan: a fault injected by key is replayable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultKey {
    pub target: String,
    pub op: &'static str,
    pub occurrence: usize,
}

impl std::fmt::Display for FaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} #{}", self.op, self.target, self.occurrence)
    }
}

#[derive(Debug, Clone)]
struct SimDevice {
    dev: PciDevice,
    /// The device cdev (`vfioN`, its node's owner) while on a vfio driver, on a kernel with
    /// device cdevs.
    cdev: Option<(u32, NodeOwner)>,
}

#[derive(Debug, Clone, Default)]
struct SimGroup {
    node: Option<NodeOwner>,
    /// The group fd is held open by some process (a VM, the daemon).
    held: bool,
    /// Attached to a container.
    container_set: bool,
}

#[derive(Debug, Clone)]
struct State {
    devices: BTreeMap<PciAddress, SimDevice>,
    groups: BTreeMap<u32, SimGroup>,
    /// Registered PCI drivers (`/sys/bus/pci/drivers/*`).
    drivers: BTreeSet<String>,
    /// Loaded modules.
    modules: BTreeSet<String>,
    /// Id tables of host drivers: (vendor, device) -> driver.
    id_table: BTreeMap<(PciId, PciId), String>,
    /// Modules that exist on disk and can be loaded.
    loadable: BTreeSet<String>,
    /// Registered drivers whose probe fails (the device stays unbound, the write succeeds).
    refusing: BTreeSet<String>,
    next_group: u32,
    /// The kernel has iommufd and VFIO device cdevs (the snapshot it was made from had
    /// `/dev/iommu`): a function on a vfio driver gets `vfioN`, the lowest free number.
    cdevs: bool,
    template: Snapshot,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Functions with a write still blocked in the kernel (its device lock held): every call
    /// on them blocks too, which the seam reports as `Stuck`. The value says whether the
    /// blocked write is an unbind that completes when its group is let go.
    stuck: BTreeMap<PciAddress, bool>,
    calls: Vec<Call>,
    faults: BTreeMap<usize, Fault>,
    /// Faults by key ([`FaultKey`]), and every keyed call so far with how many of each.
    keyed: BTreeMap<FaultKey, Fault>,
    seen: BTreeMap<(String, &'static str), usize>,
    keys: Vec<FaultKey>,
    /// Functions whose reads fail (an EIO on their sysfs attributes).
    unreadable: BTreeSet<PciAddress>,
    crashed: bool,
    /// Reads of a function with its usage ([`Host::function`]).
    usage_reads: usize,
    /// Reads of the whole host ([`Host::snapshot`]) and of a closure ([`Host::snapshot_of`]).
    snapshot_reads: (usize, usize),
}

impl Inner {
    /// The key of the next call of `op` on `target` (counting it), and its injected fault.
    fn next_key(&mut self, target: String, op: &'static str) -> (FaultKey, Option<Fault>) {
        let n = self.seen.entry((target.clone(), op)).or_insert(0);
        let key = FaultKey {
            target,
            op,
            occurrence: *n,
        };
        *n += 1;
        self.keys.push(key.clone());
        let fault = self.keyed.get(&key).copied();
        (key, fault)
    }
}

/// The simulated kernel. Cheap to clone the state out of ([`SimKernel::snapshot`]).
#[derive(Debug)]
pub struct SimKernel {
    inner: Mutex<Inner>,
}

/// The pid the simulated kernel gives the writer of a blocked unbind of `a`.
fn sim_writer(a: PciAddress) -> u32 {
    1_000_000 + u32::from(a.routing_id())
}

/// The driver a module registers (`vfio_pci` -> `vfio-pci`).
/// A module with the modules loading it pulls in (vm-notes, "Module closure": vfio_pci pulls in
/// vfio and vfio_iommu_type1).
fn module_closure(name: &str) -> Vec<&str> {
    match name {
        "vfio_pci" => vec!["vfio", "vfio_iommu_type1", "vfio_pci_core", "vfio_pci"],
        "vfio_iommu_type1" => vec!["vfio", "vfio_iommu_type1"],
        other => vec![other],
    }
}

fn module_driver(module: &str) -> String {
    module.replace('_', "-")
}

impl SimKernel {
    /// A kernel in the state `snap` describes. The drivers functions are bound to are taken to
    /// match their ids (so a released function can go back); vfio modules named in
    /// `snap.vfio.modules` are loaded and `vfio_pci`/`vfio_iommu_type1`/`pci_stub` loadable.
    pub fn from_snapshot(snap: &Snapshot) -> Self {
        let mut s = snap.clone();
        s.normalize();
        let mut drivers: BTreeSet<String> = s.pci_drivers.iter().cloned().collect();
        let mut id_table = BTreeMap::new();
        for d in &s.devices {
            if let Some(drv) = &d.driver {
                drivers.insert(drv.clone());
                if !is_vfio_driver(drv) && drv != "pci-stub" {
                    id_table.insert((d.vendor, d.device), drv.clone());
                }
            }
        }
        let modules: BTreeSet<String> = s.vfio.modules.iter().cloned().collect();
        for m in &modules {
            if m == "vfio_pci" || m == "pci_stub" {
                drivers.insert(module_driver(m));
            }
        }
        let mut groups = BTreeMap::new();
        for g in &s.groups {
            groups.insert(
                g.id,
                SimGroup {
                    node: g.node.as_ref().map(|n| NodeOwner {
                        uid: n.uid,
                        gid: n.gid,
                        mode: n.mode,
                    }),
                    held: false,
                    container_set: false,
                },
            );
        }
        let next_group = s.groups.iter().map(|g| g.id + 1).max().unwrap_or(0);
        let devices = s
            .devices
            .iter()
            .map(|d| {
                let cdev = d.vfio_cdev.as_ref().and_then(|c| {
                    let n = c.name.strip_prefix("vfio")?.parse::<u32>().ok()?;
                    let owner = c
                        .node
                        .as_ref()
                        .map_or(NodeOwner::KERNEL_DEFAULT, |n| NodeOwner {
                            uid: n.uid,
                            gid: n.gid,
                            mode: n.mode,
                        });
                    Some((n, owner))
                });
                (
                    d.address,
                    SimDevice {
                        dev: d.clone(),
                        cdev,
                    },
                )
            })
            .collect();
        let loadable = ["vfio", "vfio_pci", "vfio_iommu_type1", "pci_stub"]
            .into_iter()
            .map(String::from)
            .collect();
        SimKernel {
            inner: Mutex::new(Inner {
                state: State {
                    devices,
                    groups,
                    drivers,
                    modules,
                    id_table,
                    loadable,
                    refusing: BTreeSet::new(),
                    next_group,
                    cdevs: s.vfio.iommufd,
                    template: s,
                },
                stuck: BTreeMap::new(),
                calls: Vec::new(),
                faults: BTreeMap::new(),
                keyed: BTreeMap::new(),
                seen: BTreeMap::new(),
                keys: Vec::new(),
                unreadable: BTreeSet::new(),
                crashed: false,
                usage_reads: 0,
                snapshot_reads: (0, 0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A test thread that panicked while holding the lock leaves a usable state behind.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Teaches a host driver to match `vendor:device` (its id table).
    pub fn add_driver_match(&self, vendor: PciId, device: PciId, driver: &str) {
        let mut g = self.lock();
        g.state.drivers.insert(driver.to_string());
        g.state
            .id_table
            .insert((vendor, device), driver.to_string());
    }

    /// Makes a module unavailable (as if it were not installed).
    pub fn remove_loadable(&self, module: &str) {
        self.lock().state.loadable.remove(module);
    }

    /// Makes `driver`'s probe fail: a probe leaves the function unbound although the
    /// `drivers_probe` write succeeds, as the kernel does when a driver's probe returns an error.
    pub fn refuse_probe(&self, driver: &str) {
        self.lock().state.refusing.insert(driver.to_string());
    }

    /// Injects `fault` at the `n`th mutating call (0-based, counting every write).
    pub fn inject(&self, n: usize, fault: Fault) {
        self.lock().faults.insert(n, fault);
    }

    /// Injects `fault` at the call `key` names (see [`FaultKey`]): the same call in every run.
    pub fn inject_at(&self, key: FaultKey, fault: Fault) {
        self.lock().keyed.insert(key, fault);
    }

    /// Every keyed call so far (writes, reads of a function, whole-host reads), in order.
    pub fn fault_keys(&self) -> Vec<FaultKey> {
        self.lock().keys.clone()
    }

    /// The host stops answering now, as when vfioctl is killed (a crash outside the seam, in a
    /// state file), until [`SimKernel::revive`].
    pub fn crash(&self) {
        self.lock().crashed = true;
    }

    /// Surprise removal of `dev` (a hot-unplug): it is gone from the host, with the VFs it had.
    pub fn remove_device(&self, dev: PciAddress) {
        self.lock().state.remove(dev);
    }

    /// Makes every read of `dev`'s attributes fail with EIO (`false`: readable again).
    pub fn fail_reads(&self, dev: PciAddress, failing: bool) {
        let mut g = self.lock();
        if failing {
            g.unreadable.insert(dev);
        } else {
            g.unreadable.remove(&dev);
        }
    }

    /// Surprise-removes a function (and its VFs' link to it stays as the kernel leaves it).
    pub fn unplug(&self, dev: PciAddress) {
        self.lock().state.devices.remove(&dev);
    }

    /// Clears injected faults and a simulated crash: the "next run" after a crash.
    pub fn revive(&self) {
        let mut g = self.lock();
        g.faults.clear();
        g.keyed.clear();
        g.unreadable.clear();
        g.crashed = false;
        // Hung writes finished (without effect) in the meantime.
        g.stuck.retain(|_, unbind| *unbind);
    }

    /// Marks group `id` as held open by another process (a VM).
    /// Letting go completes an unbind that was blocked on the group.
    pub fn hold_group(&self, id: u32, held: bool) {
        let mut g = self.lock();
        g.state.groups.entry(id).or_default().held = held;
        if !held {
            let pending: Vec<PciAddress> = g
                .stuck
                .iter()
                .filter(|(a, unbind)| {
                    **unbind && g.state.devices.get(a).and_then(|d| d.dev.iommu_group) == Some(id)
                })
                .map(|(a, _)| *a)
                .collect();
            for a in pending {
                g.stuck.remove(&a);
                let _ = g.state.unbind(a);
            }
        }
    }

    /// Every mutating call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many times a function was read with what the host uses it for
    /// ([`Host::function`]: interfaces, disks, mounts, `root=`).
    pub fn usage_reads(&self) -> usize {
        self.lock().usage_reads
    }

    /// How many times the whole host ([`Host::snapshot`]) and a closure of it
    /// ([`Host::snapshot_of`]) were read.
    pub fn snapshot_reads(&self) -> (usize, usize) {
        self.lock().snapshot_reads
    }

    /// Number of mutating calls so far.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    /// `VFIO_GROUP_SET_CONTAINER` on group `id`: EPERM unless viable (vm-notes, "Non-viable
    /// group"); ENOENT without a node; EBUSY when held elsewhere.
    pub fn set_container(&self, id: u32) -> Result<(), Errno> {
        let mut g = self.lock();
        let st = &mut g.state;
        let grp = st.groups.get(&id).ok_or(Errno::ENOENT)?;
        if grp.node.is_none() {
            return Err(Errno::ENOENT);
        }
        if grp.held {
            return Err(Errno::EBUSY);
        }
        if !st.viable(id) {
            return Err(Errno::EPERM);
        }
        if let Some(grp) = st.groups.get_mut(&id) {
            grp.container_set = true;
        }
        Ok(())
    }

    /// Runs one mutating call: records it, applies any injected fault, else `f`.
    fn mutate<T>(
        &self,
        call: Call,
        f: impl FnOnce(&mut State) -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        let mut g = self.lock();
        let what = format!("{call:?}");
        if g.crashed {
            return Err(KernelError::Crashed { what });
        }
        let device = call.device();
        if let Some(d) = device {
            if g.stuck.contains_key(&d) {
                return Err(KernelError::Stuck { device: d, what });
            }
        }
        let unbind = matches!(call, Call::Unbind(_));
        let n = g.calls.len();
        let (target, op) = call.key_parts();
        let (_, by_key) = g.next_key(target, op);
        g.calls.push(call);
        let r = match g.faults.get(&n).copied().or(by_key) {
            None => f(&mut g.state),
            Some(Fault::Remove) => {
                if let Some(d) = device {
                    g.state.remove(d);
                }
                Err(device.map_or(KernelError::Injected { call: n, what }, |d| {
                    KernelError::NoSuchDevice(d)
                }))
            }
            Some(Fault::Fail) => Err(KernelError::Injected { call: n, what }),
            Some(Fault::Hang) => {
                if let Some(d) = device {
                    g.stuck.insert(d, false);
                }
                return Err(KernelError::Timeout {
                    what,
                    secs: 5.0,
                    writer: None,
                });
            }
            Some(Fault::FailAfterEffect) => {
                let _ = f(&mut g.state);
                Err(KernelError::Injected { call: n, what })
            }
            Some(Fault::Crash) => {
                g.crashed = true;
                Err(KernelError::Crashed { what })
            }
            Some(Fault::CrashAfterEffect) => {
                let _ = f(&mut g.state);
                g.crashed = true;
                Err(KernelError::Crashed { what })
            }
            Some(Fault::Unplug) => {
                if let Some(d) = device {
                    g.state.devices.remove(&d);
                }
                f(&mut g.state)
            }
        };
        // An unbind blocked on a held group keeps the device lock until the group is let go.
        if let (Err(KernelError::Timeout { .. }), Some(d), true) = (&r, device, unbind) {
            g.stuck.insert(d, true);
        }
        r
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> Result<T, KernelError>) -> Result<T, KernelError> {
        let g = self.lock();
        if g.crashed {
            return Err(KernelError::Crashed {
                what: "a read".to_string(),
            });
        }
        f(&g.state)
    }

    /// A read of one function's attributes, which blocks (is `Stuck`) while a write holds it.
    fn read_dev<T>(
        &self,
        dev: PciAddress,
        f: impl FnOnce(&State) -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        let g = self.lock();
        if g.stuck.contains_key(&dev) {
            return Err(KernelError::Stuck {
                device: dev,
                what: "an earlier write".to_string(),
            });
        }
        if g.unreadable.contains(&dev) {
            return Err(errno(
                "read",
                format!("/sys/bus/pci/devices/{dev}"),
                Errno::EIO,
            ));
        }
        drop(g);
        self.read_fault(dev.to_string(), "read", Some(dev))?;
        self.read(f)
    }

    /// Applies a fault injected at this read ([`FaultKey`]): a failing read is `EIO`.
    fn read_fault(
        &self,
        target: String,
        op: &'static str,
        dev: Option<PciAddress>,
    ) -> Result<(), KernelError> {
        let mut g = self.lock();
        if g.crashed {
            return Ok(());
        }
        let (key, fault) = g.next_key(target, op);
        let what = format!("{op} of {}", key.target);
        match fault {
            None => Ok(()),
            Some(Fault::Fail | Fault::FailAfterEffect | Fault::Hang) => Err(KernelError::Io {
                what,
                path: key.target,
                errno: Some(Errno::EIO as i32),
                message: Errno::EIO.desc().to_string(),
            }),
            Some(Fault::Crash | Fault::CrashAfterEffect) => {
                g.crashed = true;
                Err(KernelError::Crashed { what })
            }
            Some(Fault::Remove | Fault::Unplug) => {
                if let Some(d) = dev {
                    g.state.remove(d);
                }
                Ok(())
            }
        }
    }
}

fn enoent(what: &str, path: String) -> KernelError {
    KernelError::Io {
        what: what.to_string(),
        path,
        errno: Some(Errno::ENOENT as i32),
        message: "No such file or directory".to_string(),
    }
}

fn errno(what: &str, path: String, e: Errno) -> KernelError {
    KernelError::Io {
        what: what.to_string(),
        path,
        errno: Some(e as i32),
        message: e.desc().to_string(),
    }
}

impl State {
    fn dev(&self, a: PciAddress) -> Result<&PciDevice, KernelError> {
        self.devices
            .get(&a)
            .map(|d| &d.dev)
            .ok_or(KernelError::NoSuchDevice(a))
    }

    fn dev_mut(&mut self, a: PciAddress) -> Result<&mut PciDevice, KernelError> {
        self.devices
            .get_mut(&a)
            .map(|d| &mut d.dev)
            .ok_or(KernelError::NoSuchDevice(a))
    }

    fn members(&self, group: u32) -> impl Iterator<Item = &PciDevice> {
        self.devices
            .values()
            .map(|d| &d.dev)
            .filter(move |d| d.iommu_group == Some(group))
    }

    fn viable(&self, group: u32) -> bool {
        self.members(group).all(|d| match &d.driver {
            None => true,
            Some(drv) => driver_keeps_group_viable(drv),
        })
    }

    /// A surprise removal: the function goes, with its VFs, and its group's node when no
    /// vfio member is left.
    fn remove(&mut self, a: PciAddress) {
        let Some(gone) = self.devices.remove(&a) else {
            return;
        };
        for vf in gone.dev.sriov.iter().flat_map(|x| x.vfs.clone()) {
            self.remove(vf);
        }
        for d in self.devices.values_mut() {
            if let Some(x) = d.dev.sriov.as_mut() {
                x.vfs.retain(|v| *v != a);
            }
        }
        if let Some(g) = gone.dev.iommu_group {
            self.refresh_node(g);
        }
    }

    /// The node exists exactly while some member is on a vfio driver; so does each member's
    /// device cdev (a fresh one, root:root 0600, the lowest free number) on a cdev kernel.
    fn refresh_node(&mut self, group: u32) {
        if self.cdevs {
            let mut used: BTreeSet<u32> = self
                .devices
                .values()
                .filter_map(|d| d.cdev.map(|(n, _)| n))
                .collect();
            for d in self.devices.values_mut() {
                if d.dev.iommu_group != Some(group) {
                    continue;
                }
                let on_vfio = d.dev.driver.as_deref().is_some_and(is_vfio_driver);
                match (on_vfio, d.cdev) {
                    (true, None) => {
                        let n = (0..).find(|n| !used.contains(n)).unwrap_or(0);
                        used.insert(n);
                        d.cdev = Some((n, NodeOwner::KERNEL_DEFAULT));
                    }
                    (false, Some((n, _))) => {
                        used.remove(&n);
                        d.cdev = None;
                    }
                    _ => {}
                }
            }
        }
        let has_vfio = self
            .members(group)
            .any(|d| d.driver.as_deref().is_some_and(is_vfio_driver));
        let g = self.groups.entry(group).or_default();
        match (has_vfio, g.node.is_some()) {
            (true, false) => g.node = Some(NodeOwner::KERNEL_DEFAULT),
            (false, true) => {
                g.node = None;
                g.container_set = false;
            }
            _ => {}
        }
    }

    /// The driver a probe of `a` would bind, following override semantics.
    fn probe_target(&self, a: PciAddress) -> Result<Option<String>, KernelError> {
        let d = self.dev(a)?;
        let candidate = match &d.driver_override {
            Some(o) => Some(o),
            None => self.id_table.get(&(d.vendor, d.device)),
        };
        Ok(candidate
            .filter(|drv| self.drivers.contains(*drv) && !self.refusing.contains(*drv))
            .cloned())
    }

    fn attach(&mut self, a: PciAddress, driver: String) -> Result<(), KernelError> {
        let d = self.dev_mut(a)?;
        d.driver = Some(driver);
        if let Some(g) = d.iommu_group {
            self.refresh_node(g);
        }
        Ok(())
    }

    fn unbind(&mut self, a: PciAddress) -> Result<(), KernelError> {
        let d = self.dev(a)?;
        let Some(drv) = d.driver.clone() else {
            return Ok(());
        };
        if let Some(g) = d.iommu_group {
            if is_vfio_driver(&drv) && self.groups.get(&g).is_some_and(|g| g.held) {
                // vfio-pci's remove waits for the user to release the device.
                return Err(KernelError::Timeout {
                    what: format!("unbind of {a} from {drv}"),
                    secs: 5.0,
                    writer: Some(sim_writer(a)),
                });
            }
        }
        let d = self.dev_mut(a)?;
        d.driver = None;
        // A net or block driver's interfaces go away with it.
        d.usage = Usage::default();
        let g = d.iommu_group;
        if let Some(g) = g {
            self.refresh_node(g);
        }
        Ok(())
    }

    fn set_num_vfs(&mut self, pf: PciAddress, count: u32) -> Result<(), KernelError> {
        let path = format!("/sys/bus/pci/devices/{pf}/sriov_numvfs");
        let d = self.dev(pf)?;
        let Some(sriov) = d.sriov.clone() else {
            return Err(enoent("write sriov_numvfs", path));
        };
        if count > sriov.total_vfs {
            return Err(errno("write sriov_numvfs", path, Errno::ERANGE));
        }
        if count == sriov.num_vfs {
            return Ok(());
        }
        if d.driver.is_none() {
            // sriov_numvfs_store: no driver, no sriov_configure.
            return Err(errno("write sriov_numvfs", path, Errno::ENOENT));
        }
        if sriov.num_vfs != 0 && count != 0 {
            return Err(KernelError::SriovBusy {
                what: format!("write {count} to sriov_numvfs of {pf}"),
                pf,
                current: sriov.num_vfs,
            });
        }
        if count == 0 {
            for vf in sriov.vfs.iter().rev() {
                let group = self.dev(*vf)?.iommu_group;
                self.unbind(*vf)?;
                self.devices.remove(vf);
                if let Some(g) = group {
                    if self.members(g).next().is_none() {
                        self.groups.remove(&g);
                    }
                }
            }
            let d = self.dev_mut(pf)?;
            if let Some(s) = d.sriov.as_mut() {
                s.num_vfs = 0;
                s.vfs.clear();
            }
            return Ok(());
        }
        let d = d.clone();
        let parent = d.parent;
        let vendor = d.vendor;
        let class = d.class;
        let mut vfs = Vec::new();
        for i in 0..count {
            let addr = sriov.vf_address(pf, i);
            let group = self.next_group;
            self.next_group += 1;
            self.groups.insert(group, SimGroup::default());
            let vf = PciDevice {
                address: addr,
                vendor,
                device: sriov.vf_device.unwrap_or(d.device),
                subsystem_vendor: None,
                subsystem_device: None,
                class,
                revision: None,
                driver: None,
                driver_override: None,
                iommu_group: Some(group),
                iommu: d.iommu.clone(),
                numa_node: d.numa_node,
                bridge: false,
                parent,
                sriov: None,
                physfn: Some(pf),
                boot_vga: None,
                reset_method: None,
                usage: Usage::default(),
                vfio_cdev: None,
            };
            self.devices.insert(
                addr,
                SimDevice {
                    dev: vf,
                    cdev: None,
                },
            );
            vfs.push(addr);
            // sriov_drivers_autoprobe defaults to 1: new VFs are probed at once.
            if let Some(drv) = self.probe_target(addr)? {
                self.attach(addr, drv)?;
            }
        }
        let d = self.dev_mut(pf)?;
        if let Some(s) = d.sriov.as_mut() {
            s.num_vfs = count;
            s.vfs = vfs;
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let mut s = self.template.clone();
        s.devices = self
            .devices
            .values()
            .map(|d| {
                let mut dev = d.dev.clone();
                dev.vfio_cdev = d.cdev.map(|(n, o)| DeviceCdev {
                    name: format!("vfio{n}"),
                    path: format!("/dev/vfio/devices/vfio{n}"),
                    major: SIM_CDEV_MAJOR,
                    minor: n,
                    node: Some(NodeInfo {
                        path: format!("/dev/vfio/devices/vfio{n}"),
                        uid: o.uid,
                        gid: o.gid,
                        mode: o.mode,
                    }),
                });
                dev
            })
            .collect();
        let mut cdevs: Vec<(u32, String)> = s
            .devices
            .iter()
            .filter_map(|d| d.vfio_cdev.as_ref().map(|c| (c.minor, c.name.clone())))
            .collect();
        cdevs.sort();
        s.vfio.device_cdevs = cdevs.into_iter().map(|(_, n)| n).collect();
        let mut groups = Vec::new();
        for (id, g) in &self.groups {
            let members: Vec<PciAddress> = self.members(*id).map(|d| d.address).collect();
            let template = self.template.group(*id);
            groups.push(IommuGroup {
                id: *id,
                devices: members,
                domain_type: template.and_then(|t| t.domain_type.clone()),
                reserved_regions: template
                    .map(|t| t.reserved_regions.clone())
                    .unwrap_or_default(),
                node: g.node.map(|n| NodeInfo {
                    path: format!("/dev/vfio/{id}"),
                    uid: n.uid,
                    gid: n.gid,
                    mode: n.mode,
                }),
            });
        }
        s.groups = groups;
        s.pci_drivers = self.drivers.iter().cloned().collect();
        s.vfio.modules = self.modules.iter().cloned().collect();
        s.vfio.container_node = self.modules.contains("vfio");
        s.normalize();
        s
    }
}

impl SimKernel {
    fn read_snapshot(&self) -> Result<Snapshot, KernelError> {
        self.read_fault("host".to_string(), "snapshot", None)?;
        self.read(|s| Ok(s.snapshot()))
    }
}

impl Host for SimKernel {
    fn snapshot(&self) -> Result<Snapshot, KernelError> {
        self.lock().snapshot_reads.0 += 1;
        self.read_snapshot()
    }

    fn snapshot_of(&self, seeds: &[PciAddress]) -> Result<Snapshot, KernelError> {
        self.lock().snapshot_reads.1 += 1;
        self.read_snapshot()
            .map(|s| crate::host::partial::restrict(&s, seeds))
    }

    fn device_state(&self, dev: PciAddress) -> Result<DeviceState, KernelError> {
        self.read_dev(dev, |s| {
            let d = s.dev(dev)?;
            Ok(DeviceState {
                driver: d.driver.clone(),
                driver_override: d.driver_override.clone(),
            })
        })
    }

    fn function(&self, dev: PciAddress) -> Result<PciDevice, KernelError> {
        self.lock().usage_reads += 1;
        self.read_dev(dev, |s| s.dev(dev).cloned())
    }

    fn function_identity(&self, dev: PciAddress) -> Result<PciDevice, KernelError> {
        self.read_dev(dev, |s| {
            let mut d = s.dev(dev)?.clone();
            d.usage = Usage {
                boot_console: d.usage.boot_console,
                ..Default::default()
            };
            Ok(d)
        })
    }

    fn num_vfs(&self, pf: PciAddress) -> Result<u32, KernelError> {
        self.read_dev(pf, |s| {
            Ok(s.dev(pf)?.sriov.as_ref().map_or(0, |x: &Sriov| x.num_vfs))
        })
    }

    fn virtfns(&self, pf: PciAddress) -> Result<Vec<PciAddress>, KernelError> {
        self.read_fault(pf.to_string(), "read", Some(pf))?;
        self.read(|s| {
            Ok(s.dev(pf)?
                .sriov
                .as_ref()
                .map_or(Vec::new(), |x| x.vfs.clone()))
        })
    }

    fn node_owner(&self, group: u32) -> Result<Option<NodeOwner>, KernelError> {
        self.read_fault(format!("group {group}"), "read", None)?;
        self.read(|s| Ok(s.groups.get(&group).and_then(|g| g.node)))
    }

    fn iommu_group(&self, dev: PciAddress) -> Result<Option<u32>, KernelError> {
        self.read_fault(dev.to_string(), "read", Some(dev))?;
        self.read(|s| Ok(s.dev(dev)?.iommu_group))
    }

    fn set_driver_override(
        &self,
        dev: PciAddress,
        driver: Option<&str>,
    ) -> Result<(), KernelError> {
        let call = Call::SetOverride(dev, driver.map(String::from));
        self.mutate(call, |s| {
            s.dev_mut(dev)?.driver_override = driver.filter(|d| !d.is_empty()).map(String::from);
            Ok(())
        })
    }

    fn unbind(&self, dev: PciAddress) -> Result<(), KernelError> {
        self.mutate(Call::Unbind(dev), |s| s.unbind(dev))
    }

    fn probe(&self, dev: PciAddress) -> Result<Option<String>, KernelError> {
        self.mutate(Call::Probe(dev), |s| {
            if s.dev(dev)?.driver.is_none() {
                if let Some(drv) = s.probe_target(dev)? {
                    s.attach(dev, drv)?;
                }
            }
            Ok(s.dev(dev)?.driver.clone())
        })
    }

    fn bind(&self, dev: PciAddress, driver: &str) -> Result<(), KernelError> {
        let path = format!("/sys/bus/pci/drivers/{driver}/bind");
        self.mutate(Call::Bind(dev, driver.to_string()), |s| {
            if !s.drivers.contains(driver) {
                return Err(enoent("bind", path));
            }
            let d = s.dev(dev)?;
            if d.driver.is_some() {
                return Err(errno("bind", path, Errno::EBUSY));
            }
            // bind_store: the driver must match, and an override names the only match.
            let matches = match &d.driver_override {
                Some(o) => o == driver,
                None => s.id_table.get(&(d.vendor, d.device)).map(String::as_str) == Some(driver),
            };
            if !matches {
                return Err(errno("bind", path, Errno::ENODEV));
            }
            s.attach(dev, driver.to_string())
        })
    }

    fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<(), KernelError> {
        self.mutate(Call::SetNumVfs(pf, count), |s| s.set_num_vfs(pf, count))
    }

    fn set_node_owner(
        &self,
        group: u32,
        owner: NodeOwner,
        wait: Duration,
    ) -> Result<(), KernelError> {
        self.mutate(Call::SetNodeOwner(group, owner), |s| {
            match s.groups.get_mut(&group).and_then(|g| g.node.as_mut()) {
                Some(n) => {
                    *n = owner;
                    for d in s.devices.values_mut() {
                        if d.dev.iommu_group == Some(group) {
                            if let Some((_, o)) = d.cdev.as_mut() {
                                *o = owner;
                            }
                        }
                    }
                    Ok(())
                }
                None => Err(KernelError::NodeMissing {
                    group,
                    secs: wait.as_secs_f64(),
                }),
            }
        })
    }

    fn load_module(&self, name: &str) -> Result<(), KernelError> {
        self.mutate(Call::LoadModule(name.to_string()), |s| {
            if s.modules.contains(name) {
                return Ok(());
            }
            if !s.loadable.contains(name) {
                return Err(KernelError::Module {
                    name: name.to_string(),
                    message: format!("module {name} not found"),
                });
            }
            for m in module_closure(name) {
                s.modules.insert(m.to_string());
            }
            if name == "vfio_pci" || name == "pci_stub" {
                s.drivers.insert(module_driver(name));
            }
            Ok(())
        })
    }

    fn module_loaded(&self, name: &str) -> Result<bool, KernelError> {
        self.read(|s| Ok(s.modules.contains(name)))
    }

    fn unload_module(&self, name: &str) -> Result<(), KernelError> {
        self.mutate(Call::UnloadModule(name.to_string()), |s| {
            if !s.modules.contains(name) {
                return Ok(());
            }
            // Removing a driver's module unbinds its functions first (driver_unregister).
            let driver = module_driver(name);
            for d in s.devices.values_mut() {
                if d.dev.driver.as_deref() == Some(driver.as_str()) {
                    d.dev.driver = None;
                }
            }
            s.drivers.remove(&driver);
            // modprobe -r takes with it the dependencies no other loaded module needs.
            let removing = module_closure(name);
            let needed: BTreeSet<&str> = s
                .modules
                .iter()
                .filter(|m| !removing.contains(&m.as_str()))
                .flat_map(|m| module_closure(m))
                .collect();
            let gone: Vec<String> = removing
                .iter()
                .filter(|m| !needed.contains(*m))
                .map(|m| m.to_string())
                .collect();
            for m in gone {
                s.modules.remove(&m);
            }
            Ok(())
        })
    }

    fn driver_devices(&self, driver: &str) -> Result<Vec<PciAddress>, KernelError> {
        self.read(|s| {
            Ok(s.devices
                .values()
                .filter(|d| d.dev.driver.as_deref() == Some(driver))
                .map(|d| d.dev.address)
                .collect())
        })
    }

    fn writer_blocked(&self, pid: u32) -> bool {
        self.lock().stuck.keys().any(|a| sim_writer(*a) == pid)
    }

    fn group_status(&self, group: u32) -> Result<GroupStatus, KernelError> {
        self.read(|s| {
            let g = s
                .groups
                .get(&group)
                .filter(|g| g.node.is_some())
                .ok_or_else(|| enoent("open group", format!("/dev/vfio/{group}")))?;
            if g.held {
                return Err(KernelError::GroupInUse { group });
            }
            Ok(GroupStatus {
                viable: s.viable(group),
                container_set: g.container_set,
            })
        })
    }
}

/// Builders for test hosts shaped like the VM layout in vm-notes.md.
pub mod fixtures {
    use super::*;
    use crate::pci::PciClass;

    /// A function with the given ids, class, driver and group.
    pub fn device(
        addr: &str,
        vendor: u16,
        device: u16,
        class: u32,
        driver: Option<&str>,
        group: u32,
    ) -> PciDevice {
        PciDevice {
            address: addr.parse().unwrap_or(PciAddress::new(0, 0, 0, 0)),
            vendor: PciId(vendor),
            device: PciId(device),
            subsystem_vendor: None,
            subsystem_device: None,
            class: PciClass(class),
            revision: None,
            driver: driver.map(String::from),
            driver_override: None,
            iommu_group: Some(group),
            iommu: Some("dmar0".to_string()),
            numa_node: None,
            bridge: class >> 8 == 0x0604,
            parent: None,
            sriov: None,
            physfn: None,
            boot_vga: None,
            reset_method: None,
            usage: Usage::default(),
            vfio_cdev: None,
        }
    }

    /// A snapshot from devices; groups follow from their `iommu_group`.
    pub fn snapshot(devices: Vec<PciDevice>, modules: &[&str]) -> Snapshot {
        let mut groups: BTreeMap<u32, Vec<PciAddress>> = BTreeMap::new();
        for d in &devices {
            if let Some(g) = d.iommu_group {
                groups.entry(g).or_default().push(d.address);
            }
        }
        let mut s = Snapshot {
            devices,
            groups: groups
                .into_iter()
                .map(|(id, devices)| IommuGroup {
                    id,
                    devices,
                    domain_type: Some("DMA".to_string()),
                    reserved_regions: Vec::new(),
                    node: None,
                })
                .collect(),
            ..Snapshot::default()
        };
        s.vfio.modules = modules.iter().map(|m| m.to_string()).collect();
        s.normalize();
        s
    }

    /// The VM layout's interesting groups: e1000e alone (group 1), the bridge group (4: a
    /// driverless pcie-pci-bridge, e1000 and virtio-net), the multifunction edu/pci-testdev
    /// pair (5, both driverless), NVMe (8), and an igb PF with 7 VFs possible (9).
    pub fn vm_layout() -> Snapshot {
        let mut igb = device("0000:03:00.0", 0x8086, 0x10c9, 0x020000, Some("igb"), 9);
        igb.sriov = Some(Sriov {
            total_vfs: 7,
            num_vfs: 0,
            offset: 128,
            stride: 2,
            vf_device: Some(PciId(0x10ca)),
            vfs: Vec::new(),
        });
        snapshot(
            vec![
                device("0000:00:01.0", 0x8086, 0x10d3, 0x020000, Some("e1000e"), 1),
                device("0000:00:04.0", 0x1b36, 0x000e, 0x060400, None, 4),
                device("0000:02:01.0", 0x8086, 0x100e, 0x020000, Some("e1000"), 4),
                device(
                    "0000:02:02.0",
                    0x1af4,
                    0x1041,
                    0x020000,
                    Some("virtio-pci"),
                    4,
                ),
                device("0000:00:05.0", 0x1234, 0x11e8, 0x00ff00, None, 5),
                device("0000:00:05.1", 0x1b36, 0x0005, 0x00ff00, None, 5),
                device("0000:01:00.0", 0x1b36, 0x0010, 0x010802, Some("nvme"), 8),
                igb,
            ],
            &["vfio", "vfio_iommu_type1", "vfio_pci"],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::vm_layout;
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn bind_vfio(k: &SimKernel, dev: &str) {
        k.set_driver_override(a(dev), Some("vfio-pci")).unwrap();
        k.unbind(a(dev)).unwrap();
        assert_eq!(k.probe(a(dev)).unwrap().as_deref(), Some("vfio-pci"));
    }

    // vm-notes "Bind": override, unbind, drivers_probe -> vfio-pci, and devtmpfs creates
    // /dev/vfio/N as crw------- root root.
    #[test]
    fn bind_sequence_creates_a_root_only_node() {
        let k = SimKernel::from_snapshot(&vm_layout());
        assert_eq!(k.node_owner(8).unwrap(), None);
        bind_vfio(&k, "0000:01:00.0");
        assert_eq!(k.node_owner(8).unwrap(), Some(NodeOwner::KERNEL_DEFAULT));
        let st = k.group_status(8).unwrap();
        assert!(st.viable && !st.container_set);
    }

    // Override semantics: driver_override only affects the next probe, never the bound driver.
    #[test]
    fn override_alone_does_not_move_a_bound_device() {
        let k = SimKernel::from_snapshot(&vm_layout());
        k.set_driver_override(a("0000:01:00.0"), Some("vfio-pci"))
            .unwrap();
        assert_eq!(
            k.device_state(a("0000:01:00.0")).unwrap().driver.as_deref(),
            Some("nvme")
        );
        // A probe of a bound function does nothing.
        assert_eq!(k.probe(a("0000:01:00.0")).unwrap().as_deref(), Some("nvme"));
    }

    // drivers_probe reports success even when nothing binds: an override naming an
    // unregistered driver leaves the function driverless.
    #[test]
    fn probe_with_an_unregistered_override_binds_nothing() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let d = a("0000:01:00.0");
        k.set_driver_override(d, Some("vfio-pci-nonexistent"))
            .unwrap();
        k.unbind(d).unwrap();
        assert_eq!(k.probe(d).unwrap(), None);
        // Clearing the override and probing returns it to its id-table driver.
        k.set_driver_override(d, None).unwrap();
        assert_eq!(k.probe(d).unwrap().as_deref(), Some("nvme"));
    }

    // vm-notes "Non-viable group": e1000 on vfio-pci while virtio-net stays on virtio-pci ->
    // viable=0 and SET_CONTAINER EPERM; with the sibling on vfio-pci too: viable. The
    // driverless bridge does not block.
    #[test]
    fn a_sibling_on_a_dma_driver_makes_the_group_non_viable() {
        let k = SimKernel::from_snapshot(&vm_layout());
        bind_vfio(&k, "0000:02:01.0");
        assert!(!k.group_status(4).unwrap().viable);
        assert_eq!(k.set_container(4), Err(Errno::EPERM));
        bind_vfio(&k, "0000:02:02.0");
        assert!(k.group_status(4).unwrap().viable);
        assert_eq!(k.set_container(4), Ok(()));
    }

    // vm-notes: a driverless sibling (pci-testdev) did not block viability.
    #[test]
    fn a_driverless_sibling_does_not_block() {
        let k = SimKernel::from_snapshot(&vm_layout());
        k.set_driver_override(a("0000:00:05.0"), Some("vfio-pci"))
            .unwrap();
        assert_eq!(
            k.probe(a("0000:00:05.0")).unwrap().as_deref(),
            Some("vfio-pci")
        );
        assert!(k.group_status(5).unwrap().viable);
        assert_eq!(k.set_container(5), Ok(()));
    }

    // A held group refuses another open with EBUSY; unbinding its vfio member blocks.
    #[test]
    fn a_held_group_is_in_use_and_its_unbind_blocks() {
        let k = SimKernel::from_snapshot(&vm_layout());
        bind_vfio(&k, "0000:01:00.0");
        k.hold_group(8, true);
        assert_eq!(k.group_status(8), Err(KernelError::GroupInUse { group: 8 }));
        assert!(matches!(
            k.unbind(a("0000:01:00.0")),
            Err(KernelError::Timeout { .. })
        ));
        k.hold_group(8, false);
        k.unbind(a("0000:01:00.0")).unwrap();
        // The last vfio member left: the node goes away.
        assert_eq!(k.node_owner(8).unwrap(), None);
    }

    // vm-notes (QEMU 10 igb): PF 8086:10c9, total 7, each VF in its own group; VF addresses
    // follow offset/stride; a non-zero count changes only through 0.
    #[test]
    fn sriov_rules() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let pf = a("0000:03:00.0");
        k.set_num_vfs(pf, 2).unwrap();
        let s = k.snapshot().unwrap();
        let vfs = &s.device(pf).unwrap().sriov.as_ref().unwrap().vfs;
        assert_eq!(vfs, &vec![a("0000:03:10.0"), a("0000:03:10.2")]);
        let g0 = s.device(vfs[0]).unwrap().iommu_group;
        let g1 = s.device(vfs[1]).unwrap().iommu_group;
        assert!(g0.is_some() && g0 != g1 && g0 != Some(9));
        assert!(matches!(
            k.set_num_vfs(pf, 3),
            Err(KernelError::SriovBusy { current: 2, .. })
        ));
        assert!(matches!(
            k.set_num_vfs(pf, 8),
            Err(KernelError::Io { errno: Some(e), .. }) if e == Errno::ERANGE as i32
        ));
        k.set_num_vfs(pf, 0).unwrap();
        k.set_num_vfs(pf, 3).unwrap();
        assert_eq!(k.num_vfs(pf).unwrap(), 3);
        assert_eq!(k.snapshot().unwrap().devices.len(), 8 + 3);
    }

    // New VFs autoprobe to a matching host driver.
    #[test]
    fn new_vfs_autoprobe() {
        let k = SimKernel::from_snapshot(&vm_layout());
        k.add_driver_match(PciId(0x8086), PciId(0x10ca), "igbvf");
        k.set_num_vfs(a("0000:03:00.0"), 1).unwrap();
        assert_eq!(
            k.device_state(a("0000:03:10.0")).unwrap().driver.as_deref(),
            Some("igbvf")
        );
    }

    // bind via drivers/NAME/bind: an override names the only driver that may bind.
    #[test]
    fn bind_respects_the_override() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let d = a("0000:01:00.0");
        k.unbind(d).unwrap();
        k.set_driver_override(d, Some("vfio-pci")).unwrap();
        assert!(k.bind(d, "nvme").is_err());
        k.bind(d, "vfio-pci").unwrap();
        assert_eq!(
            k.device_state(d).unwrap().driver.as_deref(),
            Some("vfio-pci")
        );
    }

    #[test]
    fn module_load_registers_the_driver() {
        let mut snap = vm_layout();
        snap.vfio.modules.clear();
        let k = SimKernel::from_snapshot(&snap);
        let d = a("0000:01:00.0");
        k.set_driver_override(d, Some("vfio-pci")).unwrap();
        k.unbind(d).unwrap();
        assert_eq!(k.probe(d).unwrap(), None);
        k.load_module("vfio_pci").unwrap();
        assert_eq!(k.probe(d).unwrap().as_deref(), Some("vfio-pci"));
        k.remove_loadable("pci_stub");
        assert!(k.load_module("pci_stub").is_err());
    }

    #[test]
    fn faults_and_crashes() {
        let k = SimKernel::from_snapshot(&vm_layout());
        let d = a("0000:01:00.0");
        k.inject(0, Fault::Fail);
        k.inject(1, Fault::FailAfterEffect);
        k.inject(2, Fault::Crash);
        assert!(k.set_driver_override(d, Some("x")).is_err());
        assert_eq!(k.device_state(d).unwrap().driver_override, None);
        assert!(k.set_driver_override(d, Some("y")).is_err());
        assert_eq!(
            k.device_state(d).unwrap().driver_override.as_deref(),
            Some("y")
        );
        assert!(k.unbind(d).is_err());
        assert!(matches!(
            k.device_state(d),
            Err(KernelError::Crashed { .. })
        ));
        k.revive();
        assert_eq!(k.device_state(d).unwrap().driver.as_deref(), Some("nvme"));
        assert_eq!(k.call_count(), 3);
    }
}
