//! Never leave a host worse: generated configs are applied to the simulated kernel with a
//! fault injected at every write, of every kind. The host must end exactly as it started or
//! exactly as desired (after the next run's recovery, for crashes), no function that had a
//! driver may be left driverless, and the journal must match the host. Some hosts start with
//! the e1000e NIC claimed early (override written before any driver probed it), so releases
//! to the kernel's pick (clear override, unbind, probe) are faulted too.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use vfioctl::apply::{self, early_claim::records, journal::Journal, rollback, Options};
use vfioctl::config::model::{Config, DeviceSpec, Origin, Selector, SriovSpec, UserRef, UserSpec};
use vfioctl::host::Snapshot;
use vfioctl::kernel::simulated::{fixtures::vm_layout, Fault, SimKernel};
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

fn check_run(
    (first, early): (&Config, bool),
    second: &Config,
    faults: &[(usize, Fault)],
) -> Result<(), String> {
    // The reference run: no faults.
    let (k, dir) = prepared(first, early);
    let start = view(&k.snapshot().unwrap());
    let start_journal = sorted(Journal::load(&dir.path().join("state")).unwrap());
    let base = k.call_count();
    if let Err(e) = apply::reconcile(&k, second, &opts(dir.path())) {
        return Err(format!("fault-free run failed: {}", e.lines().join("\n")));
    }
    let desired = view(&k.snapshot().unwrap());
    let writes = k.call_count() - base;

    for offset in 0..=writes {
        for &(extra, fault) in faults {
            let (k, dir) = prepared(first, early);
            let base = k.call_count();
            k.inject(base + offset, fault);
            if extra > 0 {
                // A second fault, hitting the undo.
                k.inject(base + offset + extra, Fault::Fail);
            }
            let o = opts(dir.path());
            let result = apply::reconcile(&k, second, &o);
            // The next run: the host answers again, and an interrupted or half-undone pass is
            // recovered from its record before anything else.
            k.revive();
            rollback::recover(&k, &o.state_dir, &o.run_dir)
                .map_err(|e| format!("recovery failed: {e}"))?;
            let end = view(&k.snapshot().unwrap());
            let ctx = format!("fault {fault:?} at write {offset} (+{extra}) of {writes}");
            if end != start && end != desired {
                return Err(format!(
                    "{ctx}: host is neither as it started nor as desired\nresult: {:?}\nstart: {start:?}\nend: {end:?}\ndesired: {desired:?}",
                    result.as_ref().err().map(|e| e.lines())
                ));
            }
            for (addr, (drv, ..)) in &start {
                let wanted_driver = desired.get(addr).is_some_and(|d| d.0.is_some());
                if drv.is_some() && wanted_driver && end.get(addr).is_some_and(|e| e.0.is_none()) {
                    return Err(format!(
                        "{ctx}: {addr} had a driver and was left driverless"
                    ));
                }
            }
            let journal = sorted(Journal::load(&o.state_dir).unwrap());
            if end == start && result.is_err() && journal != start_journal {
                return Err(format!(
                    "{ctx}: host restored but the journal changed:\n{journal:?}\nvs\n{start_journal:?}"
                ));
            }
            // Whatever happened, the run after converges.
            if let Err(e) = apply::reconcile(&k, second, &o) {
                return Err(format!(
                    "{ctx}: the next reconcile failed: {}",
                    e.lines().join("\n")
                ));
            }
            if view(&k.snapshot().unwrap()) != desired {
                return Err(format!(
                    "{ctx}: the next reconcile did not reach the desired state"
                ));
            }
        }
    }
    Ok(())
}

const SINGLE: &[(usize, Fault)] = &[
    (0, Fault::Fail),
    (0, Fault::FailAfterEffect),
    (0, Fault::Hang),
    (0, Fault::Crash),
    (0, Fault::CrashAfterEffect),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn a_fault_at_every_write_leaves_start_or_desired(first in spec(), second in spec()) {
        let r = check_run((&config(&first), first.early), &config(&second), SINGLE);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn a_fault_during_the_undo_is_recovered_on_the_next_run(
        first in spec(),
        second in spec(),
        extra in 1usize..4,
    ) {
        let faults = [(extra, Fault::Fail), (extra, Fault::FailAfterEffect)];
        let r = check_run((&config(&first), first.early), &config(&second), &faults);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
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
    let crashes = [(0, Fault::Crash), (0, Fault::CrashAfterEffect)];
    check_run((&config(&none), false), &config(&all), &crashes).unwrap();
    check_run((&config(&all), true), &config(&none), &crashes).unwrap();
    // That release includes a probe to the kernel's pick, so crashes hit it too.
    let (k, dir) = prepared(&config(&all), true);
    let out = apply::reconcile(&k, &config(&none), &opts(dir.path())).unwrap();
    assert!(out.plan.actions.iter().any(|s| s.action.kind() == "probe"));
    assert_eq!(
        k.device_state(a("0000:00:01.0")).unwrap().driver.as_deref(),
        Some("e1000e")
    );
}
