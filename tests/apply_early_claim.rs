//! Early-claimed functions (the udev rule's or `watch`'s `driver_override` write before any
//! driver probed them) against the simulated kernel: they count as taken, a release or a
//! rollback clears the override, unbinds and lets the kernel pick (e1000e here), and the
//! record and the journal entry are forgotten once the function is back or gone. A fault at
//! any write of the release, the probe included, is undone.

use std::path::Path;
use std::time::Duration;

use vfioctl::apply::early_claim::records::{self, Records};
use vfioctl::apply::journal::{Journal, Object, Recorded};
use vfioctl::apply::{self, rollback, ApplyError, Options};
use vfioctl::config::model::{Config, DeviceSpec, Origin, Selector};
use vfioctl::kernel::simulated::{fixtures::vm_layout, Call, Fault, SimKernel};
use vfioctl::kernel::{DeviceState, Host};
use vfioctl::pci::PciAddress;

const NIC: &str = "0000:00:01.0";

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn config(with_nic: bool) -> Config {
    let mut c = Config {
        version: 1,
        ..Config::default()
    };
    if with_nic {
        c.devices.push(DeviceSpec {
            name: "nic".to_string(),
            selector: Selector::Address(a(NIC)),
            driver: "vfio-pci".to_string(),
            companions: Vec::new(),
            force: false,
            origin: Origin::default(),
        });
    }
    c
}

fn opts(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("state"), dir.join("run"));
    o.lock_timeout = Duration::from_millis(100);
    o.exec.node_wait = Duration::from_millis(10);
    o
}

fn state(k: &SimKernel) -> DeviceState {
    k.device_state(a(NIC)).unwrap()
}

fn st(driver: Option<&str>, over: Option<&str>) -> DeviceState {
    DeviceState {
        driver: driver.map(str::to_string),
        driver_override: over.map(str::to_string),
    }
}

/// What the boot claim leaves: the override written and recorded before any driver probed the
/// NIC; with vfio-pci loaded (`bound`) the kernel binds it straight from the override.
fn claimed_early(k: &SimKernel, o: &Options, bound: bool) {
    k.unbind(a(NIC)).unwrap();
    records::remember(&o.run_dir, &a(NIC), None).unwrap();
    k.set_driver_override(a(NIC), Some("vfio-pci")).unwrap();
    if bound {
        assert_eq!(k.probe(a(NIC)).unwrap().as_deref(), Some("vfio-pci"));
    }
}

fn records(o: &Options) -> Vec<PciAddress> {
    Records::load(&o.run_dir)
        .unwrap()
        .records
        .into_keys()
        .collect()
}

fn journal(o: &Options) -> Journal {
    Journal::load(&o.state_dir).unwrap()
}

fn nic_object() -> Object {
    Object::Device { device: a(NIC) }
}

#[test]
fn a_device_the_kernel_bound_from_the_early_override_is_released_to_the_kernels_pick() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    claimed_early(&k, &o, true);

    // Still configured: nothing to change, but the NIC now counts as taken.
    let out = apply::reconcile(&k, &config(true), &o).unwrap();
    assert!(
        out.plan.is_empty(),
        "{}",
        vfioctl::plan::render::text(&out.plan)
    );
    assert_eq!(
        journal(&o).original(&nic_object()),
        Some(&Recorded::Unprobed {
            driver_override: None
        })
    );
    assert_eq!(records(&o), vec![a(NIC)], "the record lives until release");

    // Removed from the config: override cleared, unbound from vfio-pci, probed.
    let calls = k.call_count();
    let out = apply::reconcile(&k, &config(false), &o).unwrap();
    let kinds: Vec<&str> = out.plan.actions.iter().map(|s| s.action.kind()).collect();
    assert_eq!(kinds, ["clear-override", "unbind", "probe"]);
    assert_eq!(
        k.calls()[calls..].to_vec(),
        [
            Call::SetOverride(a(NIC), None),
            Call::Unbind(a(NIC)),
            Call::Probe(a(NIC))
        ]
    );
    assert_eq!(state(&k), st(Some("e1000e"), None));
    assert!(journal(&o).entries.is_empty(), "{:?}", journal(&o));
    assert!(records(&o).is_empty());
    // And it stays released: nothing more to do.
    assert!(apply::reconcile(&k, &config(false), &o)
        .unwrap()
        .plan
        .is_empty());
}

#[test]
fn a_device_claimed_before_vfio_pci_loaded_is_bound_then_released_to_the_kernels_pick() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    claimed_early(&k, &o, false);
    assert_eq!(state(&k), st(None, Some("vfio-pci")));

    apply::reconcile(&k, &config(true), &o).unwrap();
    assert_eq!(state(&k), st(Some("vfio-pci"), Some("vfio-pci")));
    // The pass that bound it found "no driver, override vfio-pci": our own early write. The
    // journal holds the true original instead.
    assert_eq!(
        journal(&o).original(&nic_object()),
        Some(&Recorded::Unprobed {
            driver_override: None
        })
    );

    apply::reconcile(&k, &config(false), &o).unwrap();
    assert_eq!(state(&k), st(Some("e1000e"), None));
    assert!(journal(&o).entries.is_empty());
    assert!(records(&o).is_empty());
}

#[test]
fn a_journal_entry_that_recorded_our_early_override_takes_the_original_from_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    claimed_early(&k, &o, true);
    // A pass that recorded the NIC before its record was folded (an earlier build, or a pass
    // racing the claim) kept our override as the original.
    let mut j = Journal::default();
    j.record(nic_object(), Recorded::Device(st(None, Some("vfio-pci"))));
    j.save(&o.state_dir).unwrap();
    let (taken, _) = apply::load_context(&o.state_dir, &o.run_dir, &k.snapshot().unwrap()).unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].original_override, None);
    assert!(taken[0].driver_unknown);

    apply::reconcile(&k, &config(false), &o).unwrap();
    assert_eq!(state(&k), st(Some("e1000e"), None));
    assert!(journal(&o).entries.is_empty());
    assert!(records(&o).is_empty());
}

#[test]
fn rollback_gives_an_early_claimed_device_to_the_kernels_pick() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    claimed_early(&k, &o, true);
    // Nothing ran since the claim: only the record knows.
    let (_, listed) =
        rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, true).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(records(&o), vec![a(NIC)], "a dry run changes nothing");

    let (out, _) = rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert!(out.report.complete(), "{:?}", out.report.lines());
    assert!(out.report.lines()[0].contains("the driver the kernel picks"));
    assert_eq!(state(&k), st(Some("e1000e"), None));
    assert!(journal(&o).entries.is_empty());
    assert!(records(&o).is_empty());
    // Again: nothing left to roll back.
    let (_, listed) =
        rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, true).unwrap();
    assert!(listed.is_empty());
}

#[test]
fn a_record_of_a_device_gone_from_the_host_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    claimed_early(&k, &o, true);
    apply::reconcile(&k, &config(true), &o).unwrap();
    assert!(!journal(&o).entries.is_empty());
    // The NIC is unplugged.
    let mut gone = vm_layout();
    gone.devices.retain(|d| d.address != a(NIC));
    for g in &mut gone.groups {
        g.devices.retain(|d| *d != a(NIC));
    }
    gone.groups.retain(|g| !g.devices.is_empty());
    let k = SimKernel::from_snapshot(&gone);
    apply::reconcile(&k, &config(false), &o).unwrap();
    assert!(journal(&o).entries.is_empty(), "{:?}", journal(&o));
    assert!(records(&o).is_empty());
}

#[test]
fn a_fault_at_any_write_of_the_release_is_undone_and_the_next_run_releases() {
    let reference = {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let k = SimKernel::from_snapshot(&vm_layout());
        claimed_early(&k, &o, true);
        let base = k.call_count();
        apply::reconcile(&k, &config(false), &o).unwrap();
        k.call_count() - base
    };
    assert_eq!(reference, 3, "clear-override, unbind, probe");
    for at in 0..reference {
        for fault in [Fault::Fail, Fault::FailAfterEffect] {
            let dir = tempfile::tempdir().unwrap();
            let o = opts(dir.path());
            let k = SimKernel::from_snapshot(&vm_layout());
            claimed_early(&k, &o, true);
            apply::reconcile(&k, &config(true), &o).unwrap();
            let start_journal = journal(&o);
            k.inject(k.call_count() + at, fault);
            let e = apply::reconcile(&k, &config(false), &o).unwrap_err();
            let ctx = format!("{fault:?} at write {at}");
            let ApplyError::Failed { undo, .. } = &e else {
                panic!("{ctx}: unexpected {e:?}")
            };
            assert!(undo.complete(), "{ctx}: {:?}", undo.lines());
            assert_eq!(state(&k), st(Some("vfio-pci"), Some("vfio-pci")), "{ctx}");
            assert_eq!(journal(&o), start_journal, "{ctx}");
            assert_eq!(records(&o), vec![a(NIC)], "{ctx}");
            apply::reconcile(&k, &config(false), &o).unwrap();
            assert_eq!(state(&k), st(Some("e1000e"), None), "{ctx}");
            assert!(journal(&o).entries.is_empty(), "{ctx}");
            assert!(records(&o).is_empty(), "{ctx}");
        }
    }
}

#[test]
fn a_claim_after_the_kernels_probe_keeps_the_probed_driver_as_the_original() {
    // A hot-plug claim that lost the race: e1000e probed the NIC, then the override came.
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    records::remember(&o.run_dir, &a(NIC), None).unwrap();
    k.set_driver_override(a(NIC), Some("vfio-pci")).unwrap();
    apply::reconcile(&k, &config(true), &o).unwrap();
    assert_eq!(state(&k), st(Some("vfio-pci"), Some("vfio-pci")));
    assert_eq!(
        journal(&o).original(&nic_object()),
        Some(&Recorded::Device(st(Some("e1000e"), None)))
    );
    let out = apply::reconcile(&k, &config(false), &o).unwrap();
    let kinds: Vec<&str> = out.plan.actions.iter().map(|s| s.action.kind()).collect();
    assert_eq!(kinds, ["clear-override", "unbind", "bind"]);
    assert_eq!(state(&k), st(Some("e1000e"), None));
    assert!(journal(&o).entries.is_empty());
    assert!(records(&o).is_empty());
}

#[test]
fn a_scoped_pass_leaves_records_outside_its_closure_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    let k = SimKernel::from_snapshot(&vm_layout());
    claimed_early(&k, &o, true);
    // `reconcile --device` for the NVMe: its partial snapshot does not see the NIC, which must
    // neither be taken from an unknown state nor have its record forgotten.
    o.scope = Some(a("0000:01:00.0"));
    apply::reconcile(&k, &config(false), &o).unwrap();
    assert_eq!(records(&o), vec![a(NIC)]);
    assert!(journal(&o).original(&nic_object()).is_none());
    assert_eq!(state(&k), st(Some("vfio-pci"), Some("vfio-pci")));
    // Scoped to the NIC, it is seen, taken and released.
    o.scope = Some(a(NIC));
    apply::reconcile(&k, &config(false), &o).unwrap();
    assert_eq!(state(&k), st(Some("e1000e"), None));
    assert!(records(&o).is_empty());
    assert!(journal(&o).entries.is_empty());
}
