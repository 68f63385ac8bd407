//! Scale and contention on the simulated kernel: a plan and apply of 4096 functions, and
//! one-shot `reconcile`, `rollback` and `watch`-style scoped passes racing on one host. Each
//! prints one `storm-summary` line for docs/reliability.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vfioctl::apply::{self, journal::Journal, rollback, ApplyError, Options};
use vfioctl::config::{Config, DeviceSpec, Origin, Selector};
use vfioctl::fixtures::synthetic::SyntheticHost;
use vfioctl::host::{is_vfio_driver, Snapshot};
use vfioctl::kernel::simulated::{fixtures::vm_layout, SimKernel};
use vfioctl::kernel::Host;
use vfioctl::pci::PciAddress;

fn opts(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("state"), dir.join("run"));
    o.exec.node_wait = Duration::from_millis(10);
    o
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

/// Per function: driver and override.
fn drivers(s: &Snapshot) -> BTreeMap<PciAddress, (Option<String>, Option<String>)> {
    s.devices
        .iter()
        .map(|d| (d.address, (d.driver.clone(), d.driver_override.clone())))
        .collect()
}

/// Every member of every group the host can give whole (no member on a DMA driver stays
/// behind, no bridge, no PF with VFs).
fn claim_all(snap: &Snapshot) -> Config {
    let mut devices = Vec::new();
    for g in &snap.groups {
        let members: Vec<PciAddress> = g
            .devices
            .iter()
            .filter(|a| {
                snap.device(**a).is_some_and(|d| {
                    !d.class.is_bridge() && d.sriov.as_ref().map_or(true, |s| s.num_vfs == 0)
                })
            })
            .copied()
            .collect();
        let blocked = g.devices.iter().filter_map(|a| snap.device(*a)).any(|d| {
            !members.contains(&d.address)
                && d.driver
                    .as_deref()
                    .is_some_and(|x| !vfioctl::host::driver_keeps_group_viable(x))
        });
        if blocked {
            continue;
        }
        for a in members {
            devices.push(DeviceSpec {
                name: format!("dev-{}", devices.len()),
                selector: Selector::Address(a),
                driver: "vfio-pci".into(),
                companions: Vec::new(),
                force: true,
                origin: Origin::default(),
            });
        }
    }
    Config {
        version: 1,
        devices,
        ..Default::default()
    }
}

/// The journal matches the host: every function vfioctl moved to a vfio driver is recorded with an original
/// that is not vfio, and every recorded function is not at its original.
fn journal_consistent(
    k: &SimKernel,
    state: &Path,
    original: &BTreeMap<PciAddress, (Option<String>, Option<String>)>,
) -> Result<(), String> {
    let snap = k.snapshot().unwrap();
    let j = Journal::load(state).map_err(|e| e.to_string())?;
    let taken: BTreeMap<PciAddress, _> = j.taken_devices().collect();
    for d in &snap.devices {
        let was_vfio = original
            .get(&d.address)
            .and_then(|x| x.0.as_deref())
            .is_some_and(is_vfio_driver);
        if d.driver.as_deref().is_some_and(is_vfio_driver)
            && !was_vfio
            && !taken.contains_key(&d.address)
        {
            return Err(format!("{} is on vfio with no journal entry", d.address));
        }
    }
    for e in &j.entries {
        if rollback::is_at(k, &e.object, &e.was).unwrap() {
            return Err(format!(
                "{} is at its original but still journaled",
                e.object
            ));
        }
    }
    Ok(())
}

#[test]
fn plan_and_apply_of_4096_functions() {
    let dir = scratch();
    let roots = SyntheticHost::new(4096, 1024).write(dir.path()).unwrap();
    let snap = vfioctl::host::scan(&roots).unwrap();
    assert_eq!(snap.devices.len(), 4096);
    let k = SimKernel::from_snapshot(&snap);
    let original = drivers(&k.snapshot().unwrap());
    let config = claim_all(&snap);
    let state = scratch();
    let o = opts(state.path());
    let out =
        apply::reconcile(&k, &config, &o).unwrap_or_else(|e| panic!("{}", e.lines().join("\n")));
    assert!(out.verification.as_ref().is_some_and(|v| v.converged()));
    let now = k.snapshot().unwrap();
    let on_vfio = now
        .devices
        .iter()
        .filter(|d| d.driver.as_deref().is_some_and(is_vfio_driver))
        .count();
    assert!(on_vfio >= config.devices.len(), "{on_vfio} on vfio");
    journal_consistent(&k, &o.state_dir, &original).unwrap();
    // Converged: the next pass plans nothing and writes nothing.
    let calls = k.call_count();
    let again = apply::reconcile(&k, &config, &o).unwrap();
    assert!(again.plan.is_empty());
    assert_eq!(k.call_count(), calls);
    let (back, _) =
        rollback::rollback(&k, &o.state_dir, &o.run_dir, Duration::ZERO, false).unwrap();
    assert!(back.report.complete());
    assert_eq!(drivers(&k.snapshot().unwrap()), original);
    println!(
        "storm-summary test=scale functions={} claimed={} actions={} on-vfio={on_vfio}",
        snap.devices.len(),
        config.devices.len(),
        out.plan.actions.len()
    );
}

/// `reconcile` (one-shot), `rollback` and `watch`-style scoped passes race on one host and one
/// state directory. The pass lock serializes them: each either runs whole or reports the lock
/// busy, none fails otherwise, the journal matches the host after every round, and the host
/// ends as the last operation wants it.
#[test]
fn reconcile_rollback_and_watch_passes_race_on_one_host() {
    let k = SimKernel::from_snapshot(&vm_layout());
    let original = drivers(&k.snapshot().unwrap());
    let config = Config {
        version: 1,
        devices: [
            "0000:00:05.0",
            "0000:00:05.1",
            "0000:02:01.0",
            "0000:02:02.0",
        ]
        .iter()
        .enumerate()
        .map(|(i, a)| DeviceSpec {
            name: format!("d{i}"),
            selector: Selector::Address(a.parse().unwrap()),
            driver: "vfio-pci".into(),
            companions: Vec::new(),
            force: false,
            origin: Origin::default(),
        })
        .collect(),
        ..Default::default()
    };
    let dir = scratch();
    let mut o = opts(dir.path());
    o.lock_timeout = Duration::from_secs(20);
    let (ran, busy) = (AtomicUsize::new(0), AtomicUsize::new(0));
    const ROUNDS: usize = 30;
    for round in 0..3 {
        std::thread::scope(|s| {
            let (k, config, o, ran, busy) = (&k, &config, &o, &ran, &busy);
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    match apply::reconcile(k, config, o) {
                        Ok(_) => ran.fetch_add(1, Ordering::SeqCst),
                        Err(ApplyError::Lock(_)) => busy.fetch_add(1, Ordering::SeqCst),
                        Err(e) => panic!("reconcile: {}", e.lines().join("\n")),
                    };
                }
            });
            s.spawn(move || {
                for _ in 0..ROUNDS {
                    match rollback::rollback(k, &o.state_dir, &o.run_dir, o.lock_timeout, false) {
                        Ok((out, _)) => {
                            assert!(out.report.complete(), "{:?}", out.report.lines());
                            ran.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(rollback::RollbackError::Lock(_)) => {
                            busy.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(e) => panic!("rollback: {e}"),
                    };
                }
            });
            s.spawn(move || {
                // What `watch` runs when a configured function appears: a scoped pass.
                let mut scoped = o.clone();
                scoped.scope = Some("0000:02:01.0".parse().unwrap());
                for _ in 0..ROUNDS {
                    match apply::reconcile(k, config, &scoped) {
                        Ok(_) => ran.fetch_add(1, Ordering::SeqCst),
                        Err(ApplyError::Lock(_)) => busy.fetch_add(1, Ordering::SeqCst),
                        Err(e) => panic!("watch pass: {}", e.lines().join("\n")),
                    };
                }
            });
        });
        journal_consistent(&k, &o.state_dir, &original)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(vfioctl::apply::journal::InFlight::load(&o.run_dir)
            .unwrap()
            .is_none());
    }
    // Nothing lost: every operation ran or was told the lock was busy; the host converges and
    // gives everything back.
    assert_eq!(
        ran.load(Ordering::SeqCst) + busy.load(Ordering::SeqCst),
        3 * 3 * ROUNDS
    );
    apply::reconcile(&k, &config, &o).unwrap();
    journal_consistent(&k, &o.state_dir, &original).unwrap();
    rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert_eq!(drivers(&k.snapshot().unwrap()), original);
    assert!(Journal::load(&o.state_dir).unwrap().entries.is_empty());
    println!(
        "storm-summary test=race operations={} ran={} busy={}",
        3 * 3 * ROUNDS,
        ran.load(Ordering::SeqCst),
        busy.load(Ordering::SeqCst)
    );
}
