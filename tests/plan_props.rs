//! Property tests over generated hosts and configs:
//! - the plan never touches a function outside the closure of what was declared;
//! - planning against the state the plan produces (`simulate`) gives an empty plan;
//! - each function's override is set before it is bound, and a batch never has two units on
//!   one function;
//! - undoing every step in reverse order restores every driver, override and node.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use vfioctl::config::{Config, DeviceSpec, Selector, UserRef};
use vfioctl::host::{NetInterface, Snapshot};
use vfioctl::pci::{PciAddress, PciId};
use vfioctl::plan::{self, Account, Accounts, Action, Context, Plan, Step, Taken, TakenVfs};

const DRIVERS: &[Option<&str>] = &[
    None,
    Some("e1000e"),
    Some("vfio-pci"),
    Some("snd_hda_intel"),
    Some("pci-stub"),
];
const OVERRIDES: &[Option<&str>] = &[None, Some("vfio-pci"), Some("e1000e")];
const IDS: &[(u16, u16, u32)] = &[
    (0x8086, 0x10d3, NIC),
    (0x10de, 0x10f0, AUDIO),
    (0x8086, 0xa110, BRIDGE),
];

#[derive(Debug, Clone)]
struct FnGen {
    ids: usize,
    driver: usize,
    over: usize,
    busy: bool,
}

fn fn_gen() -> impl Strategy<Value = FnGen> {
    (
        0..IDS.len(),
        0..DRIVERS.len(),
        0..OVERRIDES.len(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(ids, driver, over, busy)| FnGen {
            ids,
            driver,
            over,
            busy,
        })
}

#[derive(Debug, Clone)]
struct Case {
    snap: Snapshot,
    config: Config,
    ctx: Context,
}

fn build_host(groups: &[Vec<FnGen>], vfs_now: Option<u32>) -> Snapshot {
    let mut devices = Vec::new();
    for (gi, fns) in groups.iter().enumerate() {
        for (fi, f) in fns.iter().enumerate() {
            let (v, d, class) = IDS[f.ids];
            let a = format!("0000:{:02x}:00.{fi}", gi + 1);
            let mut drv = DRIVERS[f.driver];
            if class == BRIDGE && drv == Some("e1000e") {
                drv = Some("pcieport");
            }
            let mut dev = func(&a, v, d, class, drv, gi as u32);
            dev.driver_override = OVERRIDES[f.over].map(str::to_string);
            if f.busy && drv.is_some() && class == NIC {
                dev.usage.interfaces.push(NetInterface {
                    name: format!("eth{gi}{fi}"),
                    up: true,
                    addresses: vec!["192.0.2.1/24".into()],
                    routes: 0,
                });
            }
            devices.push(dev);
        }
    }
    // One SR-IOV PF on bus 0x40, VFs from 0x40:10.0 with stride 1.
    if let Some(n) = vfs_now {
        let pfa = addr("0000:40:00.0");
        let mut pf = func("0000:40:00.0", 0x8086, 0x1521, NIC, Some("igb"), 100);
        let mut s = sriov(4, n, 128, 1, 0x1520);
        for i in 0..n {
            let va = s.vf_address(pfa, i);
            let mut vf = func(&va.to_string(), 0x8086, 0x1520, NIC, Some("igbvf"), 101 + i);
            vf.physfn = Some(pfa);
            devices.push(vf);
            s.vfs.push(va);
        }
        pf.sriov = Some(s);
        devices.push(pf);
    }
    let mut snap = host(devices);
    for d in [
        "e1000e",
        "snd_hda_intel",
        "pci-stub",
        "pcieport",
        "igb",
        "igbvf",
    ] {
        snap.pci_drivers.push(d.into());
    }
    snap.normalize();
    snap
}

fn case() -> impl Strategy<Value = Case> {
    let groups = prop::collection::vec(prop::collection::vec(fn_gen(), 1..4), 1..7);
    (
        groups,
        prop::option::of(0u32..3),
        prop::option::of(0u32..4),
        any::<u64>(),
    )
        .prop_map(|(groups, vfs_now, vfs_want, seed)| {
            let snap = build_host(&groups, vfs_now);
            let mut bits = seed;
            let mut next = |n: u64| {
                let v = bits % n;
                bits = bits.rotate_right(7) ^ 0x9e37_79b9_7f4a_7c15;
                v
            };
            let mut config = Config {
                version: 1,
                ..Default::default()
            };
            for (gi, fns) in groups.iter().enumerate() {
                if next(2) == 0 {
                    continue;
                }
                let a = format!("0000:{:02x}:00.0", gi + 1);
                let mut spec = by_address(&format!("d{gi}"), &a);
                spec.force = next(4) == 0;
                for fi in 1..fns.len() {
                    if next(2) == 0 {
                        spec.companions
                            .push(addr(&format!("0000:{:02x}:00.{fi}", gi + 1)));
                    }
                }
                config.devices.push(spec);
            }
            if next(3) == 0 {
                config.devices.push(by_ids("audio", 0x10de, 0x10f0));
            }
            if vfs_now.is_some() {
                if let Some(n) = vfs_want {
                    config.sriov.push(sriov_spec("0000:40:00.0", n));
                }
                if next(2) == 0 {
                    config.devices.push(by_ids("vfs", 0x8086, 0x1520));
                }
            }
            let names: Vec<String> = config.devices.iter().map(|d| d.name.clone()).collect();
            for u in ["alice", "bob"] {
                let mine: Vec<&str> = names
                    .iter()
                    .filter(|_| next(3) == 0)
                    .map(|s| s.as_str())
                    .collect();
                if !mine.is_empty() {
                    config.users.push(user(u, 0o600, &mine));
                }
            }
            let mut accounts = Accounts::default();
            accounts.users.insert(
                "alice".into(),
                Account {
                    uid: 1000,
                    gid: 1000,
                    memlock_limit: None,
                },
            );
            accounts.users.insert(
                "bob".into(),
                Account {
                    uid: 1001,
                    gid: 1001,
                    memlock_limit: None,
                },
            );
            // vfioctl changed the PF's VF count earlier (from 0, 1 or 2).
            let taken_vfs: Vec<TakenVfs> = match vfs_now {
                Some(_) if next(2) == 0 => vec![TakenVfs {
                    pf: "0000:40:00.0".parse().unwrap(),
                    original_num_vfs: next(3) as u32,
                }],
                _ => Vec::new(),
            };
            let mut taken: Vec<Taken> = Vec::new();
            for d in &snap.devices {
                if next(4) == 0 {
                    // The fourth kind: claimed early, before any driver probed it.
                    let kind = next(4) as usize;
                    let driver_unknown = kind == 3;
                    taken.push(Taken {
                        address: d.address,
                        original_driver: [None, Some("e1000e"), Some("snd_hda_intel"), None][kind]
                            .map(str::to_string),
                        original_override: (driver_unknown && next(3) == 0)
                            .then(|| "e1000e".to_string()),
                        driver_unknown,
                    });
                }
            }
            Case {
                snap,
                config,
                ctx: Context {
                    taken,
                    accounts,
                    scope: None,
                    taken_vfs,
                },
            }
        })
}

/// What the config declares, computed independently of the planner: the functions its
/// selectors name (now, or as VFs the SR-IOV entry creates), their companions, the released
/// functions, and SR-IOV PFs.
fn declared_closure(c: &Case) -> BTreeSet<PciAddress> {
    let mut out = BTreeSet::new();
    let mut future = Vec::new();
    for s in &c.config.sriov {
        out.insert(s.pf);
        if let Some(sr) = c.snap.device(s.pf).and_then(|d| d.sriov.as_ref()) {
            for i in 0..s.num_vfs {
                future.push(sr.vf_address(s.pf, i));
            }
        }
    }
    // A PF the config dropped goes back to its original count: those VFs may come back.
    for t in &c.ctx.taken_vfs {
        if c.config.sriov.iter().any(|s| s.pf == t.pf) {
            continue;
        }
        if let Some(sr) = c.snap.device(t.pf).and_then(|d| d.sriov.as_ref()) {
            for i in 0..t.original_num_vfs {
                future.push(sr.vf_address(t.pf, i));
            }
        }
    }
    for d in &c.config.devices {
        match &d.selector {
            Selector::Address(a) => {
                out.insert(*a);
            }
            Selector::Ids { vendor, device, .. } => {
                for f in &c.snap.devices {
                    if f.vendor == *vendor && f.device == *device {
                        out.insert(f.address);
                    }
                }
                if *vendor == PciId(0x8086) && *device == PciId(0x1520) {
                    out.extend(future.iter().copied());
                }
            }
        }
        out.extend(d.companions.iter().copied());
    }
    out.extend(c.ctx.taken.iter().map(|t| t.address));
    out.extend(c.ctx.taken_vfs.iter().map(|t| t.pf));
    out
}

fn touched(p: &Plan) -> BTreeSet<PciAddress> {
    p.actions.iter().filter_map(|s| s.action.device()).collect()
}

fn state(s: &Snapshot) -> Vec<(PciAddress, Option<String>, Option<String>)> {
    s.devices
        .iter()
        .map(|d| (d.address, d.driver.clone(), d.driver_override.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plan_stays_inside_the_declared_closure(c in case()) {
        let p = plan::plan_with(&c.config, &c.snap, &c.ctx);
        let allowed = declared_closure(&c);
        let outside: Vec<_> = touched(&p).difference(&allowed).copied().collect();
        prop_assert!(outside.is_empty(), "touched {:?} outside {:?}\n{}", outside, allowed, plan::render::text(&p));
    }

    #[test]
    fn replanning_the_simulated_result_is_empty(c in case()) {
        let p = plan::plan_with(&c.config, &c.snap, &c.ctx);
        let after = plan::simulate(&c.snap, &p);
        // Like apply's journal: a VF count change removes the old VFs, and their records.
        let mut ctx = c.ctx.clone();
        let changed: BTreeSet<PciAddress> = p.actions.iter().filter_map(|s| match s.action {
            Action::SetNumVfs { device, .. } => Some(device),
            _ => None,
        }).collect();
        ctx.taken.retain(|t| !c.snap.device(t.address).and_then(|d| d.physfn).is_some_and(|pf| changed.contains(&pf)));
        let again = plan::plan_with(&c.config, &after, &ctx);
        prop_assert!(again.is_empty(), "first:\n{}\nsecond:\n{}", plan::render::text(&p), plan::render::text(&again));
        if p.is_realisable() {
            prop_assert!(again.is_realisable(), "{}", plan::render::text(&again));
        }
    }

    #[test]
    fn steps_are_ordered_and_batches_disjoint(c in case()) {
        let p = plan::plan_with(&c.config, &c.snap, &c.ctx);
        let mut batches: Vec<usize> = p.actions.iter().map(|s| s.batch).collect();
        let sorted = { let mut b = batches.clone(); b.sort(); b };
        prop_assert_eq!(&batches, &sorted);
        batches.dedup();
        prop_assert_eq!(batches, (1..=p.batches()).collect::<Vec<_>>());
        for (i, s) in p.actions.iter().enumerate() {
            if let Action::Bind { device, .. } = &s.action {
                // Nothing later touches the override of a function just bound.
                let later = p.actions[i + 1..].iter().any(|t| matches!(&t.action,
                    Action::SetOverride { device: d, .. } | Action::ClearOverride { device: d, .. } if d == device));
                prop_assert!(!later, "override of {} changed after its bind", device);
            }
        }
        for b in 1..=p.batches() {
            let units = p.batch(b);
            let mut seen = BTreeSet::new();
            for (_, steps) in &units {
                let devs: BTreeSet<PciAddress> = steps.iter().filter(|s| !matches!(s.action, Action::SetNumVfs { .. })).filter_map(|s| s.action.device()).collect();
                for d in devs {
                    prop_assert!(seen.insert(d), "{} in two units of batch {}", d, b);
                }
            }
        }
    }

    #[test]
    fn undoing_in_reverse_restores_drivers_and_overrides(c in case()) {
        let p = plan::plan_with(&c.config, &c.snap, &c.ctx);
        // VF counts recreate functions; the undo of those is apply's journal business.
        if p.actions.iter().any(|s| matches!(s.action, Action::SetNumVfs { .. } | Action::Unbind { from: None, .. })) {
            return Ok(());
        }
        let after = plan::simulate(&c.snap, &p);
        let undo: Vec<Step> = p.actions.iter().rev().filter_map(|s| {
            s.action.undo().map(|action| Step { action, ..s.clone() })
        }).collect();
        let back = plan::simulate(&after, &Plan { actions: undo, ..Default::default() });
        prop_assert_eq!(state(&back), state(&c.snap));
        let nodes = |s: &Snapshot| s.groups.iter().map(|g| (g.id, g.node.clone())).collect::<Vec<_>>();
        prop_assert_eq!(nodes(&back), nodes(&c.snap));
    }
}

#[test]
fn generated_cases_exercise_every_kind_of_step() {
    // Guard against a generator that never produces the interesting cases.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut kinds = BTreeSet::new();
    let mut problems = 0;
    for _ in 0..400 {
        let c = case().new_tree(&mut runner).unwrap().current();
        let p = plan::plan_with(&c.config, &c.snap, &c.ctx);
        problems += p.problems.len();
        kinds.extend(p.actions.iter().map(|s| s.action.kind()));
    }
    for k in [
        "set-override",
        "clear-override",
        "unbind",
        "bind",
        "set-num-vfs",
        "set-node-owner",
        "probe",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
    assert!(problems > 0);
    let _ = UserRef::Uid(0);
    let _: Option<&DeviceSpec> = None;
}
