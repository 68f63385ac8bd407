//! Never leave a host worse: generated configs are applied to the simulated kernel with a
//! fault injected at every write, of every kind. The host must end exactly as it started or
//! exactly as desired (after the next run's recovery, for crashes), no function that had a
//! driver may be left driverless, and the journal must match the host. Some hosts start with
//! the e1000e NIC claimed early (override written before any driver probed it), so releases
//! to the kernel's pick (clear override, unbind, probe) are faulted too.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestRunner};

use vfioctl::apply::journal::file_faults::{self, FileFault, FileOp};
use vfioctl::apply::{self, early_claim::records, journal::Journal, rollback, Options};

use vfioctl::config::model::{Config, DeviceSpec, Origin, Selector, SriovSpec, UserRef, UserSpec};
use vfioctl::host::Snapshot;
use vfioctl::kernel::simulated::{fixtures::vm_layout, Fault, FaultKey, SimKernel};
use vfioctl::kernel::Host;
use vfioctl::pci::{PciAddress, PciId};

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// The entries a generated config may hold (name, address, companions).
const ENTRIES: &[(&str, &str, &[&str])] = &[
    ("nvme", "0000:01:00.0", &[]),
    ("e1000e", "0000:00:01.0", &[]),
    ("nic", "0000:02:01.0", &["0000:02:02.0"]),
    ("edu", "0000:00:05.0", &[]),
    ("testdev", "0000:00:05.1", &[]),
    ("vf0", "0000:03:10.0", &[]),
];

#[derive(Debug, Clone)]
struct Spec {
    entries: Vec<bool>,
    user: Option<(u32, u32)>,
    vfs: u32,
    /// The e1000e NIC was claimed early, before the first run.
    early: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec(any::<bool>(), ENTRIES.len()),
        proptest::option::of((1000u32..1003, prop_oneof![Just(0o600u32), Just(0o660u32)])),
        0u32..3,
        any::<bool>(),
    )
        .prop_map(|(entries, user, vfs, early)| Spec {
            entries,
            user,
            vfs,
            early,
        })
}

fn config(s: &Spec) -> Config {
    let mut c = Config {
        version: 1,
        ..Config::default()
    };
    for (on, (name, addr, comp)) in s.entries.iter().zip(ENTRIES) {
        // A VF entry only makes sense when the VF will exist.
        if *on && !(name.starts_with("vf") && s.vfs == 0) {
            c.devices.push(DeviceSpec {
                name: name.to_string(),
                selector: Selector::Address(a(addr)),
                driver: "vfio-pci".to_string(),
                companions: comp.iter().map(|x| a(x)).collect(),
                force: false,
                origin: Origin::default(),
            });
        }
    }
    if s.vfs > 0 {
        c.sriov.push(SriovSpec {
            pf: a("0000:03:00.0"),
            num_vfs: s.vfs,
            origin: Origin::default(),
        });
    }
    if let Some((uid, mode)) = s.user {
        let devices: Vec<String> = c.devices.iter().map(|d| d.name.clone()).collect();
        if !devices.is_empty() {
            c.users.push(UserSpec {
                user: UserRef::Uid(uid),
                group: (mode == 0o660).then_some(UserRef::Uid(100)),
                mode,
                devices,
                memlock: None,
                origin: Origin::default(),
            });
        }
    }
    c
}

fn kernel() -> SimKernel {
    let k = SimKernel::from_snapshot(&vm_layout());
    k.add_driver_match(PciId(0x8086), PciId(0x10ca), "igbvf");
    k
}

/// What matters about a host, independent of group numbering: per function its driver,
/// override, VF count and its group node's owner.
type View = BTreeMap<PciAddress, (Option<String>, Option<String>, u32, Option<(u32, u32, u32)>)>;

fn view(s: &Snapshot) -> View {
    s.devices
        .iter()
        .map(|d| {
            let node = d
                .iommu_group
                .and_then(|g| s.group(g))
                .and_then(|g| g.node.as_ref())
                .map(|n| (n.uid, n.gid, n.mode));
            (
                d.address,
                (
                    d.driver.clone(),
                    d.driver_override.clone(),
                    d.sriov.as_ref().map_or(0, |x| x.num_vfs),
                    node,
                ),
            )
        })
        .collect()
}

/// The journal in a canonical order (parallel units record in any order).
fn sorted(mut j: Journal) -> Journal {
    j.entries.sort_by_key(|e| e.object);
    j
}

fn opts(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("state"), dir.join("run"));
    o.lock_timeout = Duration::from_millis(100);
    o.exec.node_wait = Duration::from_millis(10);
    o
}

fn scratch() -> tempfile::TempDir {
    // The journal fsyncs; a RAM-backed directory keeps thousands of runs quick.
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// Sets up a host that has `first` applied (so there are taken devices to release), with
/// its state directory. With `early`, the e1000e NIC was claimed before any driver probed it
/// (the kernel bound it to vfio-pci straight from the override), as the udev rule does.
fn prepared(first: &Config, early: bool) -> (SimKernel, tempfile::TempDir) {
    let k = kernel();
    let dir = scratch();
    if early {
        let nic = a("0000:00:01.0");
        k.unbind(nic).unwrap();
        records::remember(&opts(dir.path()).run_dir, &nic, None).unwrap();
        k.set_driver_override(nic, Some("vfio-pci")).unwrap();
        k.probe(nic).unwrap();
    }
    if let Err(e) = apply::reconcile(&k, first, &opts(dir.path())) {
        panic!("setup failed: {}", e.lines().join("\n"));
    }
    (k, dir)
}

/// One injected fault: a call on the seam named by its [`FaultKey`] (replayable: the same call
/// in every run of the same plan, whatever the threads do), or a state-file operation named by
/// file, step and occurrence.
#[derive(Debug, Clone)]
enum Injection {
    Kernel(FaultKey, Fault),
    File((String, FileOp, usize), FileFault),
}

impl std::fmt::Display for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Injection::Kernel(k, fault) => write!(f, "{fault:?} at {k}"),
            Injection::File((dir, op, n), fault) => write!(f, "{fault:?} at {op:?} #{n} in {dir}"),
        }
    }
}

/// Figures for docs/reliability.md: what was injected, and how each run ended.
#[derive(Default)]
struct Tally {
    injected: AtomicUsize,
    kernel_writes: AtomicUsize,
    kernel_reads: AtomicUsize,
    file_ops: AtomicUsize,
    crashes: AtomicUsize,
    removals: AtomicUsize,
    recovery_faults: AtomicUsize,
    ended_start: AtomicUsize,
    ended_desired: AtomicUsize,
    driverless: AtomicUsize,
    rollbacks_original: AtomicUsize,
    plans: AtomicUsize,
}

impl Tally {
    fn add(c: &AtomicUsize) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The one summary line the figures are regenerated from.
    fn print(&self, test: &str, seed: u64) {
        let g = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        println!(
            "fault-summary test={test} seed={seed} plans={} injected={} kernel-writes={} kernel-reads={} file-ops={} crashes={} removals={} recovery-faults={} ended-start={} ended-desired={} driverless={} rollback-original={}",
            g(&self.plans),
            g(&self.injected),
            g(&self.kernel_writes),
            g(&self.kernel_reads),
            g(&self.file_ops),
            g(&self.crashes),
            g(&self.removals),
            g(&self.recovery_faults),
            g(&self.ended_start),
            g(&self.ended_desired),
            g(&self.driverless),
            g(&self.rollbacks_original),
        );
    }
}

/// After a surprise removal, what can still be compared: the functions both views hold, and
/// not the group nodes (the kernel drops the node of a group that lost its vfio member).
fn common(v: &View, other: &View) -> View {
    v.iter()
        .filter(|(a, _)| other.contains_key(a))
        .map(|(a, x)| {
            let mut x = x.clone();
            x.3 = None;
            (*a, x)
        })
        .collect()
}

/// What to inject: every keyed call of the reference pass with every fault kind that applies,
/// and every state-file operation with a crash and with the filesystem faults.
fn injections(
    keys: &[FaultKey],
    ops: &[(String, FileOp, usize)],
    kinds: &[Fault],
) -> Vec<Injection> {
    let mut out = Vec::new();
    for k in keys {
        let read = k.op == "read" || k.op == "snapshot";
        for &f in kinds {
            let applies = match f {
                // A removal is of a function (not of a group's node or a module).
                Fault::Remove => k.target.starts_with("0000:"),
                Fault::Fail | Fault::Crash => true,
                _ => !read,
            };
            if applies {
                out.push(Injection::Kernel(k.clone(), f));
            }
        }
    }
    for op in ops {
        for f in [
            FileFault::Crash,
            FileFault::Errno(Errno::ENOSPC),
            FileFault::Errno(Errno::EROFS),
        ] {
            out.push(Injection::File(op.clone(), f));
        }
    }
    out
}

/// Arms a hook on `root` that counts state-file operations (keyed by directory, operation and
/// occurrence), recording them, and applies `fault` at `at`; a crash stops every later one and
/// the host with it.
fn file_hook(
    root: &Path,
    k: std::sync::Arc<SimKernel>,
    at: Option<((String, FileOp, usize), FileFault)>,
    seen: std::sync::Arc<Mutex<Vec<(String, FileOp, usize)>>>,
) -> file_faults::Armed {
    let root_s = root.to_path_buf();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut dead = false;
    file_faults::arm(root, move |dir, op| {
        if dead {
            return Err(FileFault::Crash);
        }
        let rel = dir
            .strip_prefix(&root_s)
            .unwrap_or(dir)
            .display()
            .to_string();
        let n = counts.entry((rel.clone(), format!("{op:?}"))).or_insert(0);
        let key = (rel, op.clone(), *n);
        *n += 1;
        seen.lock().unwrap().push(key.clone());
        match &at {
            Some((target, fault)) if *target == key => {
                if *fault == FileFault::Crash {
                    dead = true;
                    k.crash();
                }
                Err(*fault)
            }
            _ => Ok(()),
        }
    })
}

fn check_run(
    (first, early): (&Config, bool),
    second: &Config,
    kinds: &[Fault],
    recovery_fault: usize,
    tally: &Tally,
) -> Result<(), String> {
    Tally::add(&tally.plans);
    let original = view(&kernel().snapshot().unwrap());
    // The reference run: no faults; it names every call and file operation to fault.
    let (k, dir) = prepared(first, early);
    let k = std::sync::Arc::new(k);
    let start = view(&k.snapshot().unwrap());
    let start_journal = sorted(Journal::load(&dir.path().join("state")).unwrap());
    let base = k.fault_keys().len();
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let guard = file_hook(dir.path(), k.clone(), None, seen.clone());
    let reference = apply::reconcile(&*k, second, &opts(dir.path()));
    drop(guard);
    if let Err(e) = reference {
        return Err(format!("fault-free run failed: {}", e.lines().join("\n")));
    }
    let desired = view(&k.snapshot().unwrap());
    let mut keys: Vec<FaultKey> = k.fault_keys()[base..].to_vec();
    keys.dedup();
    let ops = seen.lock().unwrap().clone();

    for inj in injections(&keys, &ops, kinds) {
        let (k, dir) = prepared(first, early);
        let k = std::sync::Arc::new(k);
        let o = opts(dir.path());
        let guard = match &inj {
            Injection::Kernel(key, fault) => {
                k.inject_at(key.clone(), *fault);
                let read = key.op == "read" || key.op == "snapshot";
                Tally::add(if read {
                    &tally.kernel_reads
                } else {
                    &tally.kernel_writes
                });
                if matches!(fault, Fault::Crash | Fault::CrashAfterEffect) {
                    Tally::add(&tally.crashes);
                }
                if *fault == Fault::Remove {
                    Tally::add(&tally.removals);
                }
                None
            }
            Injection::File(at, fault) => {
                Tally::add(&tally.file_ops);
                if *fault == FileFault::Crash {
                    Tally::add(&tally.crashes);
                }
                let sink = std::sync::Arc::new(Mutex::new(Vec::new()));
                Some(file_hook(
                    dir.path(),
                    k.clone(),
                    Some((at.clone(), *fault)),
                    sink,
                ))
            }
        };
        Tally::add(&tally.injected);
        let result = apply::reconcile(&*k, second, &o);
        drop(guard);
        // The next run: the host answers again, and an interrupted or half-undone pass is
        // recovered from its record before anything else. With `recovery_fault`, the recovery
        // itself fails at that write first, and the run after that recovers.
        k.revive();
        if recovery_fault > 0 {
            k.inject(k.call_count() + recovery_fault - 1, Fault::Fail);
            let _ = rollback::recover(&*k, &o.state_dir, &o.run_dir);
            k.revive();
            Tally::add(&tally.recovery_faults);
        }
        rollback::recover(&*k, &o.state_dir, &o.run_dir)
            .map_err(|e| format!("{inj}: recovery failed: {e}"))?;
        let end = view(&k.snapshot().unwrap());
        let ctx = format!("{inj} (replay: this plan, this fault)");
        let removal = matches!(inj, Injection::Kernel(_, Fault::Remove));
        let (start_p, desired_p, end_p, end_d) = if removal {
            (
                common(&start, &end),
                common(&desired, &end),
                common(&end, &start),
                common(&end, &desired),
            )
        } else {
            (start.clone(), desired.clone(), end.clone(), end.clone())
        };
        if end_p == start_p {
            Tally::add(&tally.ended_start);
        } else if end_d == desired_p {
            Tally::add(&tally.ended_desired);
        } else {
            return Err(format!(
                "{ctx}: host is neither as it started nor as desired\nresult: {:?}\nstart: {start:?}\nend: {end:?}\ndesired: {desired:?}",
                result.as_ref().err().map(|e| e.lines())
            ));
        }
        for (addr, (drv, ..)) in &start_p {
            let wanted_driver = desired.get(addr).is_some_and(|d| d.0.is_some());
            if drv.is_some() && wanted_driver && end.get(addr).is_some_and(|e| e.0.is_none()) {
                Tally::add(&tally.driverless);
                return Err(format!(
                    "{ctx}: {addr} had a driver and was left driverless"
                ));
            }
        }
        let journal = sorted(Journal::load(&o.state_dir).unwrap());
        let removed = removal;
        if end == start && result.is_err() && journal != start_journal && !removed {
            return Err(format!(
                "{ctx}: host restored but the journal changed:\n{journal:?}\nvs\n{start_journal:?}"
            ));
        }
        // `rollback` returns the host vfioctl found, before the first run.
        let (out, _) = rollback::rollback(&*k, &o.state_dir, &o.run_dir, Duration::ZERO, false)
            .map_err(|e| format!("{ctx}: rollback failed: {e}"))?;
        let back = view(&k.snapshot().unwrap());
        let (back_p, original_p) = if removal {
            (common(&back, &original), common(&original, &back))
        } else {
            (back.clone(), original.clone())
        };
        if !out.report.complete() || back_p != original_p {
            return Err(format!(
                "{ctx}: rollback did not return the original host\n{:?}\noriginal: {original:?}\nnow: {back:?}",
                out.report.lines()
            ));
        }
        if !Journal::load(&o.state_dir).unwrap().entries.is_empty() {
            return Err(format!("{ctx}: rollback left journal entries"));
        }
        Tally::add(&tally.rollbacks_original);
        // Whatever happened, a run after converges.
        if let Err(e) = apply::reconcile(&*k, second, &o) {
            return Err(format!(
                "{ctx}: the next reconcile failed: {}",
                e.lines().join("\n")
            ));
        }
        if !removed && view(&k.snapshot().unwrap()) != desired {
            return Err(format!(
                "{ctx}: the next reconcile did not reach the desired state"
            ));
        }
    }
    Ok(())
}

const SINGLE: &[Fault] = &[
    Fault::Fail,
    Fault::FailAfterEffect,
    Fault::Hang,
    Fault::Crash,
    Fault::CrashAfterEffect,
    Fault::Remove,
];

/// The seed of the generated plans: fixed, so every run tries the same plans and faults
/// (`VFIOCTL_FAULT_SEED=N` tries others; a failure names its seed, plan and fault).
fn seed() -> u64 {
    std::env::var("VFIOCTL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7fa1_15af)
}

fn run_generated(test: &str, cases: u32, kinds: &[Fault], recovery_fault: bool) {
    let seed = seed();
    let pconfig = ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let tally = Tally::default();
    let mut runner = TestRunner::new(pconfig);
    let r = runner.run(&(spec(), spec(), 1usize..4), |(first, second, extra)| {
        let extra = if recovery_fault { extra } else { 0 };
        let r = check_run(
            (&config(&first), first.early),
            &config(&second),
            kinds,
            extra,
            &tally,
        );
        prop_assert!(r.is_ok(), "seed {seed}: {}", r.unwrap_err());
        Ok(())
    });
    tally.print(test, seed);
    if let Err(e) = r {
        panic!("{e}");
    }
}

#[test]
fn a_fault_at_every_call_and_file_operation_leaves_start_or_desired() {
    run_generated("every-fault", 12, SINGLE, false);
}

#[test]
fn a_fault_during_the_recovery_is_recovered_on_the_next_run() {
    run_generated(
        "recovery-fault",
        6,
        &[Fault::Crash, Fault::CrashAfterEffect, Fault::Fail],
        true,
    );
}

/// The same key names the same call in two runs of one plan, although group members run on
/// four threads.
#[test]
fn fault_keys_name_the_same_calls_every_run() {
    let all = Spec {
        entries: vec![true; ENTRIES.len()],
        user: Some((1000, 0o660)),
        vfs: 2,
        early: true,
    };
    let none = Spec {
        entries: vec![false; ENTRIES.len()],
        user: None,
        vfs: 0,
        early: false,
    };
    let keys = |first: &Spec, second: &Spec| {
        let (k, dir) = prepared(&config(first), first.early);
        let base = k.fault_keys().len();
        apply::reconcile(&k, &config(second), &opts(dir.path())).unwrap();
        let mut keys = k.fault_keys()[base..].to_vec();
        keys.sort();
        keys
    };
    for _ in 0..3 {
        assert_eq!(keys(&none, &all), keys(&none, &all));
        assert_eq!(keys(&all, &none), keys(&all, &none));
    }
    assert!(keys(&none, &all).iter().any(|k| k.op == "unbind"));
}

/// The crash cases spelled out on one fixed plan, so a regression names its step.
#[test]
fn a_crash_at_every_write_of_a_full_plan_is_recovered() {
    let all = Spec {
        entries: vec![true; ENTRIES.len()],
        user: Some((1000, 0o660)),
        vfs: 2,
        early: true,
    };
    let none = Spec {
        entries: vec![false; ENTRIES.len()],
        user: None,
        vfs: 0,
        early: false,
    };
    let crashes = [Fault::Crash, Fault::CrashAfterEffect];
    let tally = Tally::default();
    check_run((&config(&none), false), &config(&all), &crashes, 0, &tally).unwrap();
    check_run((&config(&all), true), &config(&none), &crashes, 0, &tally).unwrap();
    tally.print("full-plan-crashes", 0);
    // The release of a taken device (a crash between the journal forgetting it and the pass
    // record being cleared once stranded it on vfio-pci) is among the file operations crashed.
    assert!(tally.file_ops.load(Ordering::Relaxed) > 0);
    // That release includes a probe to the kernel's pick, so crashes hit it too.
    let (k, dir) = prepared(&config(&all), true);
    let out = apply::reconcile(&k, &config(&none), &opts(dir.path())).unwrap();
    assert!(out.plan.actions.iter().any(|s| s.action.kind() == "probe"));
    assert_eq!(
        k.device_state(a("0000:00:01.0")).unwrap().driver.as_deref(),
        Some("e1000e")
    );
}

/// A state directory that cannot be written (read-only, or full): the pass stops before any
/// change with an error naming the file and the reason, and the host is as it was.
#[test]
fn a_read_only_or_full_state_dir_stops_the_pass_before_any_change() {
    let all = Spec {
        entries: vec![true; ENTRIES.len()],
        user: None,
        vfs: 0,
        early: false,
    };
    for errno in [Errno::EROFS, Errno::ENOSPC] {
        let k = kernel();
        let dir = scratch();
        let before = view(&k.snapshot().unwrap());
        let _g = file_faults::arm(dir.path(), move |_, _| Err(FileFault::Errno(errno)));
        let e = apply::reconcile(&k, &config(&all), &opts(dir.path())).unwrap_err();
        let text = e.lines().join("\n");
        assert!(text.contains("inflight.json"), "{text}");
        assert!(text.contains(errno.desc()), "{text}");
        assert_eq!(k.calls(), vec![], "no write reached the host");
        assert_eq!(view(&k.snapshot().unwrap()), before);
    }
}
