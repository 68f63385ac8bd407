//! Applying plans against the simulated kernel: bind, no-op re-run, release, rollback, undo on
//! failure, crash recovery, the lock, and a held group.

use std::path::Path;
use std::time::Duration;

use vfioctl::apply::{self, journal::Journal, rollback, ApplyError, Options};
use vfioctl::config::model::{Config, DeviceSpec, Origin, Selector, SriovSpec, UserRef, UserSpec};
use vfioctl::host::Snapshot;
use vfioctl::kernel::simulated::{fixtures::vm_layout, Call, Fault, SimKernel};
use vfioctl::kernel::{Host, KernelError, NodeOwner};
use vfioctl::pci::{PciAddress, PciId};

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn device(name: &str, addr: &str, companions: &[&str]) -> DeviceSpec {
    DeviceSpec {
        name: name.to_string(),
        selector: Selector::Address(a(addr)),
        driver: "vfio-pci".to_string(),
        companions: companions.iter().map(|c| a(c)).collect(),
        force: false,
        origin: Origin::default(),
    }
}

fn config(devices: Vec<DeviceSpec>) -> Config {
    Config {
        version: 1,
        devices,
        ..Config::default()
    }
}

fn opts(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("state"), dir.join("run"));
    o.lock_timeout = Duration::from_millis(100);
    o
}

fn driver(k: &SimKernel, d: &str) -> Option<String> {
    k.device_state(a(d)).unwrap().driver
}

#[test]
fn bind_then_rerun_is_a_no_op_with_zero_writes() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    let out = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    assert!(!out.executed.is_empty());
    assert_eq!(driver(&k, "0000:01:00.0").as_deref(), Some("vfio-pci"));
    assert_eq!(
        k.device_state(a("0000:01:00.0"))
            .unwrap()
            .driver_override
            .as_deref(),
        Some("vfio-pci")
    );
    let v = out.verification.unwrap();
    assert!(v.converged());
    assert_eq!(v.groups.len(), 1);
    assert_eq!(v.groups[0].group, 8);
    // The journal kept what the device was.
    let j = Journal::load(&dir.path().join("state")).unwrap();
    let t = apply::taken(&j);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].original_driver.as_deref(), Some("nvme"));
    // Re-run: nothing to do, not one write.
    let writes = k.call_count();
    let again = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    assert!(again.plan.is_empty());
    assert_eq!(k.call_count(), writes);
}

#[test]
fn release_restores_the_original_driver_and_empties_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let start = vm_layout();
    let k = SimKernel::from_snapshot(&start);
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    apply::reconcile(&k, &config(vec![]), &opts(dir.path())).unwrap();
    assert_eq!(driver(&k, "0000:01:00.0").as_deref(), Some("nvme"));
    assert_eq!(
        k.snapshot().unwrap(),
        SimKernel::from_snapshot(&start).snapshot().unwrap()
    );
    assert!(Journal::load(&dir.path().join("state"))
        .unwrap()
        .entries
        .is_empty());
}

#[test]
fn rollback_restores_every_taken_device() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let before = k.snapshot().unwrap();
    let mut cfg = config(vec![
        device("nic", "0000:02:01.0", &["0000:02:02.0"]),
        device("nvme", "0000:01:00.0", &[]),
    ]);
    cfg.users.push(UserSpec {
        user: UserRef::Uid(1000),
        group: None,
        mode: 0o600,
        devices: vec!["nvme".to_string()],
        memlock: None,
        origin: Origin::default(),
    });
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    let node: NodeOwner = k.node_owner(8).unwrap().unwrap();
    assert_eq!((node.uid, node.mode), (1000, 0o600));
    assert_eq!(driver(&k, "0000:02:02.0").as_deref(), Some("vfio-pci"));
    let o = opts(dir.path());
    let (out, entries) =
        rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert!(out.report.complete(), "{:?}", out.report.lines());
    assert!(!entries.is_empty());
    assert_eq!(k.snapshot().unwrap(), before);
}

#[test]
fn a_failed_step_is_undone_and_both_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let before = k.snapshot().unwrap();
    let cfg = config(vec![device("nic", "0000:02:01.0", &["0000:02:02.0"])]);
    // Let the first few writes through, then fail one.
    k.inject(4, Fault::Fail);
    let e = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap_err();
    let ApplyError::Failed { undo, .. } = &e else {
        panic!("unexpected {e:?}")
    };
    assert!(undo.complete());
    assert!(!undo.restored.is_empty());
    let lines = e.lines().join("\n");
    assert!(lines.contains("applying failed"), "{lines}");
    assert!(lines.contains("undo: every change was put back"), "{lines}");
    assert_eq!(k.snapshot().unwrap(), before);
    assert!(Journal::load(&dir.path().join("state"))
        .unwrap()
        .entries
        .is_empty());
}

#[test]
fn a_crash_is_recovered_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let before = k.snapshot().unwrap();
    let cfg = config(vec![device("nic", "0000:02:01.0", &["0000:02:02.0"])]);
    k.inject(3, Fault::CrashAfterEffect);
    assert!(apply::reconcile(&k, &cfg, &opts(dir.path())).is_err());
    k.revive();
    // The pass record survived the crash; recovery puts the host back as it started.
    let o = opts(dir.path());
    let (_, report) = rollback::recover(&k, &o.state_dir, &o.run_dir)
        .unwrap()
        .unwrap();
    assert!(report.complete());
    assert_eq!(k.snapshot().unwrap(), before);
    // And the next reconcile converges.
    apply::reconcile(&k, &cfg, &o).unwrap();
    assert_eq!(driver(&k, "0000:02:01.0").as_deref(), Some("vfio-pci"));
}

#[test]
fn a_second_pass_waits_then_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let o = opts(dir.path());
    let _held = apply::lock::acquire(&o.run_dir, Duration::ZERO).unwrap();
    let e = apply::reconcile(&k, &config(vec![]), &o).unwrap_err();
    assert!(matches!(e, ApplyError::Lock(_)));
    assert!(e
        .to_string()
        .contains(&format!("pid {}", std::process::id())));
    assert_eq!(k.call_count(), 0);
}

#[test]
fn an_unbind_that_blocks_is_reported_and_recovered_once_the_holder_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    // A VM holds the device; releasing it cannot unbind it, and while the unbind is blocked
    // the kernel holds the device's lock: the undo cannot touch it either.
    k.hold_group(8, true);
    let e = apply::reconcile(&k, &config(vec![]), &opts(dir.path())).unwrap_err();
    let text = e.lines().join("\n");
    assert!(text.contains("did not return within"), "{text}");
    assert!(text.contains("NOT everything could be put back"), "{text}");
    assert!(matches!(
        k.device_state(a("0000:01:00.0")),
        Err(KernelError::Stuck { .. })
    ));
    // The pass record stays for the next run, which refuses to touch anything while the
    // abandoned writer is still blocked (rather than blocking on the same device).
    assert!(dir.path().join("run/inflight.json").exists());
    let writes = k.call_count();
    let e = apply::reconcile(&k, &config(vec![]), &opts(dir.path())).unwrap_err();
    assert!(matches!(e, ApplyError::Blocked(_)), "{e:?}");
    assert!(e.to_string().contains("still blocked in the kernel"), "{e}");
    assert_eq!(k.call_count(), writes);
    // The VM lets go: the kernel completes the unbind; the next run recovers, then releases.
    k.hold_group(8, false);
    assert_eq!(driver(&k, "0000:01:00.0"), None);
    let out = apply::reconcile(&k, &config(vec![]), &opts(dir.path())).unwrap();
    assert!(out.recovered.is_some());
    assert_eq!(driver(&k, "0000:01:00.0").as_deref(), Some("nvme"));
    assert!(!dir.path().join("run/inflight.json").exists());
}

#[test]
fn a_held_group_verifies_as_in_use_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let cfg = config(vec![
        device("nvme", "0000:01:00.0", &[]),
        device("edu", "0000:00:05.0", &[]),
    ]);
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    k.hold_group(8, true);
    // Adding a user changes group 5 only; group 8 stays held throughout.
    let mut cfg2 = cfg.clone();
    cfg2.devices.push(device("testdev", "0000:00:05.1", &[]));
    let out = apply::reconcile(&k, &cfg2, &opts(dir.path())).unwrap();
    assert!(out.verification.unwrap().converged());
}

#[test]
fn sriov_vfs_are_created_and_claimed_then_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    k.add_driver_match(PciId(0x8086), PciId(0x10ca), "igbvf");
    let before = k.snapshot().unwrap();
    let mut cfg = config(vec![device("vf0", "0000:03:10.0", &[])]);
    cfg.sriov.push(SriovSpec {
        pf: a("0000:03:00.0"),
        num_vfs: 2,
        origin: Origin::default(),
    });
    let out = apply::reconcile(&k, &cfg, &opts(dir.path()));
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("{}", e.lines().join("\n")),
    };
    assert!(out.plan.problems.is_empty(), "{:?}", out.plan.problems);
    assert_eq!(k.num_vfs(a("0000:03:00.0")).unwrap(), 2);
    assert_eq!(driver(&k, "0000:03:10.0").as_deref(), Some("vfio-pci"));
    assert_eq!(driver(&k, "0000:03:10.2").as_deref(), Some("igbvf"));
    let o = opts(dir.path());
    let (r, _) = rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert!(r.report.complete(), "{:?}", r.report.lines());
    assert_eq!(k.snapshot().unwrap(), before);
}

#[test]
fn independent_groups_all_bind() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let cfg = config(vec![
        device("nvme", "0000:01:00.0", &[]),
        device("e1000e", "0000:00:01.0", &[]),
        device("nic", "0000:02:01.0", &["0000:02:02.0"]),
    ]);
    let out = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    for d in [
        "0000:01:00.0",
        "0000:00:01.0",
        "0000:02:01.0",
        "0000:02:02.0",
    ] {
        assert_eq!(driver(&k, d).as_deref(), Some("vfio-pci"), "{d}");
    }
    // Every bind was preceded by its override and unbind on the same device.
    let calls = k.calls();
    for d in ["0000:01:00.0", "0000:00:01.0"] {
        let pos = |c: &Call| calls.iter().position(|x| x == c).unwrap();
        assert!(pos(&Call::SetOverride(a(d), Some("vfio-pci".into()))) < pos(&Call::Unbind(a(d))));
        assert!(pos(&Call::Unbind(a(d))) < pos(&Call::Probe(a(d))));
    }
    assert_eq!(out.verification.unwrap().groups.len(), 3);
}

/// The VM layout with no vfio module loaded (vfio_pci loadable).
fn without_vfio_modules() -> SimKernel {
    let mut snap: Snapshot = vm_layout();
    snap.vfio.modules.clear();
    SimKernel::from_snapshot(&snap)
}

#[test]
fn a_missing_module_is_loaded_first() {
    let dir = tempfile::tempdir().unwrap();
    let k = without_vfio_modules();
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    match apply::reconcile(&k, &cfg, &opts(dir.path())) {
        Ok(_) => {}
        Err(e) => panic!("{}", e.lines().join("\n")),
    }
    assert_eq!(k.calls()[0], Call::LoadModule("vfio_pci".into()));
    assert_eq!(driver(&k, "0000:01:00.0").as_deref(), Some("vfio-pci"));
}

#[test]
fn a_module_vfioctl_loaded_is_unloaded_by_rollback_once_nothing_uses_its_driver() {
    let dir = tempfile::tempdir().unwrap();
    let k = without_vfio_modules();
    let before = k.snapshot().unwrap();
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    let o = opts(dir.path());
    let journal = Journal::load(&o.state_dir).unwrap();
    assert_eq!(journal.modules.len(), 1, "{journal:?}");
    assert_eq!(journal.modules[0].module, "vfio_pci");
    let (out, _) = rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert!(
        out.report
            .lines()
            .iter()
            .any(|l| l == "unloaded module vfio_pci (vfioctl loaded it)"),
        "{:?}",
        out.report.lines()
    );
    assert!(!k.module_loaded("vfio_pci").unwrap());
    assert_eq!(
        k.snapshot().unwrap(),
        before,
        "the host is as vfioctl found it"
    );
    let journal = Journal::load(&o.state_dir).unwrap();
    assert!(
        journal.entries.is_empty() && journal.modules.is_empty(),
        "{journal:?}"
    );
}

#[test]
fn a_module_whose_driver_someone_else_uses_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let k = without_vfio_modules();
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    // Another tool puts the edu device on vfio-pci by hand.
    k.set_driver_override(a("0000:00:05.0"), Some("vfio-pci"))
        .unwrap();
    k.probe(a("0000:00:05.0")).unwrap();
    assert_eq!(driver(&k, "0000:00:05.0").as_deref(), Some("vfio-pci"));
    let o = opts(dir.path());
    let (out, _) = rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert!(out.report.complete(), "{:?}", out.report.lines());
    assert!(
        out.report
            .lines()
            .iter()
            .any(|l| l == "kept module vfio_pci: 0000:00:05.0 still on vfio-pci"),
        "{:?}",
        out.report.lines()
    );
    assert!(k.module_loaded("vfio_pci").unwrap());
    assert_eq!(driver(&k, "0000:00:05.0").as_deref(), Some("vfio-pci"));
    assert_eq!(driver(&k, "0000:01:00.0").as_deref(), Some("nvme"));
    // Still journaled: a later rollback unloads it once the other tool is done.
    assert_eq!(Journal::load(&o.state_dir).unwrap().modules.len(), 1);
}

#[test]
fn a_failed_pass_that_loaded_a_module_unloads_it_in_the_undo() {
    let dir = tempfile::tempdir().unwrap();
    let k = without_vfio_modules();
    let before = k.snapshot().unwrap();
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    k.refuse_probe("vfio-pci");
    let e = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap_err();
    let undo = e.undo().expect("an undo ran");
    assert!(undo.complete(), "{:?}", undo.lines());
    assert!(!k.module_loaded("vfio_pci").unwrap(), "{:?}", undo.lines());
    assert_eq!(k.snapshot().unwrap(), before);
    let o = opts(dir.path());
    let journal = Journal::load(&o.state_dir).unwrap();
    assert!(journal.modules.is_empty(), "{journal:?}");
}

#[test]
fn a_probe_that_binds_nothing_is_a_failure_not_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    let cfg = config(vec![device("nvme", "0000:01:00.0", &[])]);
    k.refuse_probe("vfio-pci");
    let e = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap_err();
    let ApplyError::Failed { failure, undo, .. } = &e else {
        panic!("unexpected {e:?}")
    };
    assert!(matches!(
        &failure.error,
        apply::executor::StepError::Kernel(KernelError::NotConverged { found, .. }) if found == "no driver"
    ));
    assert!(undo.complete());
    // The NVMe is back on its driver.
    assert_eq!(driver(&k, "0000:01:00.0").as_deref(), Some("nvme"));
}

// What follows a pass (the CDI spec) reads `Outcome::after` instead of the host: it must be the
// host exactly as the pass left it, from one whole read and the verification's closure, through
// binds, a release, VFs created and VFs removed.
#[test]
fn a_pass_reads_the_whole_host_once_and_reports_the_host_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&vm_layout());
    k.add_driver_match(PciId(0x8086), PciId(0x10ca), "igbvf");
    let mut sriov = config(vec![
        device("vf0", "0000:03:10.0", &[]),
        device("edu", "0000:00:05.0", &["0000:00:05.1"]),
    ]);
    sriov.sriov.push(SriovSpec {
        pf: a("0000:03:00.0"),
        num_vfs: 2,
        origin: Origin::default(),
    });
    let steps = [
        config(vec![
            device("nvme", "0000:01:00.0", &[]),
            device("edu", "0000:00:05.0", &["0000:00:05.1"]),
        ]),
        config(vec![device("edu", "0000:00:05.0", &["0000:00:05.1"])]),
        sriov,
        config(vec![]),
        config(vec![]),
    ];
    for (i, cfg) in steps.iter().enumerate() {
        let reads = k.snapshot_reads();
        let out = match apply::reconcile(&k, cfg, &opts(dir.path())) {
            Ok(o) => o,
            Err(e) => panic!("step {i}: {}", e.lines().join("\n")),
        };
        let now = k.snapshot_reads();
        assert_eq!(now.0 - reads.0, 1, "step {i}: one whole read per pass");
        assert_eq!(
            now.1 - reads.1,
            usize::from(!out.executed.is_empty()),
            "step {i}: one closure read when something changed"
        );
        if i < 4 {
            assert!(!out.executed.is_empty(), "step {i} changes something");
        }
        let host = k.snapshot().unwrap();
        assert_eq!(out.after, host, "step {i}: the host as the pass left it");
    }
}
