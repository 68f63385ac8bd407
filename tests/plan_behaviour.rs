//! The planner's rules, one behaviour per test, on hand-built hosts and configs.

mod common;

use common::*;
use vfioctl::config::{DomainSpec, Origin, Placement, WindowSpec};
use vfioctl::host::{NetInterface, ReservedRegion, Snapshot};
use vfioctl::plan::{
    self, Account, Accounts, Action, Context, Mode, Ownership, Plan, ProblemKind, Taken, TakenVfs,
    Unit,
};

fn kinds(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|s| match s.action.device() {
            Some(d) => format!("{} {d}", s.action.kind()),
            None => s.action.kind().to_string(),
        })
        .collect()
}

fn problem_kinds(p: &Plan) -> Vec<ProblemKind> {
    p.problems.iter().map(|p| p.kind).collect()
}

/// Applies the plan in the pure model and re-plans: must be empty and problem-free.
fn assert_converges(config: &vfioctl::config::Config, snap: &Snapshot, ctx: &Context) {
    let p = plan::plan_with(config, snap, ctx);
    let after = plan::simulate(snap, &p);
    let again = plan::plan_with(config, &after, ctx);
    assert!(
        again.is_empty(),
        "re-plan not empty:\n{}",
        plan::render::text(&again)
    );
}

#[test]
fn single_device_is_overridden_unbound_and_bound() {
    let snap = host(vec![func(
        "0000:03:00.0",
        0x8086,
        0x10d3,
        NIC,
        Some("e1000e"),
        12,
    )]);
    let cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert_eq!(
        kinds(&p),
        [
            "set-override 0000:03:00.0",
            "unbind 0000:03:00.0",
            "bind 0000:03:00.0"
        ]
    );
    assert!(p
        .actions
        .iter()
        .all(|s| s.unit == Unit::Group { group: 12 }));
    assert_eq!(
        p.actions[1].action,
        Action::Unbind {
            device: addr("0000:03:00.0"),
            from: Some("e1000e".into())
        }
    );
    assert_converges(&cfg, &snap, &Context::default());
}

#[test]
fn converged_host_has_nothing_to_do() {
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("vfio-pci"), 12);
    d.driver_override = Some("vfio-pci".into());
    let snap = host(vec![d]);
    let cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert!(
        p.is_empty() && p.is_realisable(),
        "{}",
        plan::render::text(&p)
    );
    assert!(plan::render::text(&p).contains("nothing to do"));
}

#[test]
fn bound_but_without_override_only_sets_the_override() {
    let snap = host(vec![func(
        "0000:03:00.0",
        0x8086,
        0x10d3,
        NIC,
        Some("vfio-pci"),
        12,
    )]);
    let cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert_eq!(kinds(&p), ["set-override 0000:03:00.0"]);
}

#[test]
fn sibling_on_a_host_driver_is_an_error_with_the_line_to_add() {
    let snap = host(vec![
        func("0000:01:00.0", 0x10de, 0x1b80, VGA, Some("nouveau"), 7),
        func(
            "0000:01:00.1",
            0x10de,
            0x10f0,
            AUDIO,
            Some("snd_hda_intel"),
            7,
        ),
    ]);
    let cfg = config(vec![by_address("gpu", "0000:01:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::Sibling]);
    let msg = &p.problems[0].message;
    for needle in [
        "0000:01:00.1",
        "10de:10f0",
        "Audio device",
        "040300",
        "snd_hda_intel",
        "[[device]] `gpu`",
        "companions = [\"0000:01:00.1\"]",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }
    assert!(p.is_empty(), "a group that cannot be viable is not touched");
}

#[test]
fn companions_take_the_sibling_to_vfio_pci() {
    let snap = host(vec![
        func("0000:01:00.0", 0x10de, 0x1b80, VGA, Some("nouveau"), 7),
        func(
            "0000:01:00.1",
            0x10de,
            0x10f0,
            AUDIO,
            Some("snd_hda_intel"),
            7,
        ),
    ]);
    let mut gpu = by_address("gpu", "0000:01:00.0");
    gpu.companions = vec![addr("0000:01:00.1")];
    let cfg = config(vec![gpu]);
    let p = plan::plan(&cfg, &snap);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert!(p.actions.iter().any(|s| s.action
        == Action::Bind {
            device: addr("0000:01:00.1"),
            driver: "vfio-pci".into()
        }));
    assert_converges(&cfg, &snap, &Context::default());
}

#[test]
fn driverless_sibling_and_pcieport_bridge_are_left_alone() {
    let snap = host(vec![
        func("0000:00:1c.0", 0x8086, 0xa110, BRIDGE, Some("pcieport"), 5),
        func("0000:02:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 5),
        func("0000:02:00.1", 0x8086, 0x10d3, NIC, None, 5),
    ]);
    let cfg = config(vec![by_address("nic", "0000:02:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert!(p
        .actions
        .iter()
        .all(|s| s.action.device() == Some(addr("0000:02:00.0"))));
}

#[test]
fn bridge_on_another_driver_is_an_error_like_a_sibling() {
    let snap = host(vec![
        func("0000:00:1c.0", 0x8086, 0xa110, BRIDGE, Some("shpchp"), 5),
        func("0000:02:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 5),
    ]);
    let cfg = config(vec![by_address("nic", "0000:02:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::Sibling]);
    let m = &p.problems[0].message;
    assert!(m.contains("bridge 0000:00:1c.0"));
    assert!(
        m.contains("bind it to pcieport or unbind it from shpchp"),
        "{m}"
    );
    assert!(
        !m.contains("companions = "),
        "a bridge cannot be a companion: {m}"
    );
}

#[test]
fn selecting_a_bridge_is_an_error_and_a_bridge_companion_is_left_alone() {
    let snap = host(vec![
        func("0000:00:1c.0", 0x8086, 0xa110, BRIDGE, Some("pcieport"), 5),
        func("0000:02:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 5),
    ]);
    let p = plan::plan(&config(vec![by_address("port", "0000:00:1c.0")]), &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::Bridge]);
    assert!(p.is_empty());
    let mut nic = by_address("nic", "0000:02:00.0");
    nic.companions = vec![addr("0000:00:1c.0")];
    let p = plan::plan(&config(vec![nic]), &snap);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert!(p
        .actions
        .iter()
        .all(|s| s.action.device() == Some(addr("0000:02:00.0"))));
    assert!(p.notes.iter().any(|n| n.contains("is a bridge")));
}

fn busy_nic() -> Snapshot {
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 12);
    d.usage.interfaces.push(NetInterface {
        name: "eth0".into(),
        up: true,
        addresses: vec!["192.0.2.7/24".into()],
        routes: 1,
    });
    host(vec![
        d,
        func("0000:04:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 13),
    ])
}

#[test]
fn device_in_use_is_refused_without_force() {
    let cfg = config(vec![by_ids("nics", 0x8086, 0x10d3)]);
    let p = plan::plan(&cfg, &busy_nic());
    assert_eq!(problem_kinds(&p), [ProblemKind::InUse]);
    assert!(p.problems[0]
        .message
        .contains("eth0 is up with addresses 192.0.2.7/24"));
    assert!(p.problems[0].message.contains("force = true"));
    // The entry is refused as a whole: the idle match is not taken either.
    assert!(p.is_empty());
}

#[test]
fn device_in_use_is_taken_with_force() {
    let mut spec = by_ids("nics", 0x8086, 0x10d3);
    spec.force = true;
    let cfg = config(vec![spec]);
    let snap = busy_nic();
    let p = plan::plan(&cfg, &snap);
    assert!(p.is_realisable());
    assert_eq!(
        p.actions
            .iter()
            .filter(|s| s.action.kind() == "bind")
            .count(),
        2
    );
    assert!(p.notes.iter().any(|n| n.contains("force = true")));
    // Two independent groups in the same batch.
    assert_eq!(p.batches(), 1);
    assert_eq!(p.batch(1).len(), 2);
    assert_converges(&cfg, &snap, &Context::default());
}

fn sriov_host(num: u32) -> Snapshot {
    let mut pf = func("0000:05:00.0", 0x8086, 0x1521, NIC, Some("igb"), 20);
    pf.sriov = Some(sriov(7, num, 128, 4, 0x1520));
    let mut devices = vec![pf];
    let mut s = sriov(7, num, 128, 4, 0x1520);
    for i in 0..num {
        let a = s.vf_address(addr("0000:05:00.0"), i);
        let mut vf = func(&a.to_string(), 0x8086, 0x1520, NIC, Some("igbvf"), 30 + i);
        vf.physfn = Some(addr("0000:05:00.0"));
        devices.push(vf);
        s.vfs.push(a);
    }
    devices[0].sriov = Some(s);
    host(devices)
}

#[test]
fn sriov_grow_creates_vfs_then_binds_them_with_pending_groups() {
    let snap = sriov_host(0);
    let mut cfg = config(vec![by_ids("vfs", 0x8086, 0x1520)]);
    cfg.sriov.push(sriov_spec("0000:05:00.0", 2));
    let p = plan::plan(&cfg, &snap);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert_eq!(p.actions[0].action.kind(), "set-num-vfs");
    assert_eq!(p.actions[0].batch, 1);
    // VF 0 at PF + 128, VF 1 at + 128 + 4.
    let vf_units: Vec<&Unit> = p
        .actions
        .iter()
        .filter(|s| s.batch == 2)
        .map(|s| &s.unit)
        .collect();
    assert!(vf_units.contains(&&Unit::Pending {
        device: addr("0000:05:10.0")
    }));
    assert!(vf_units.contains(&&Unit::Pending {
        device: addr("0000:05:10.4")
    }));
    assert_converges(&cfg, &snap, &Context::default());
}

#[test]
fn sriov_shrink_goes_through_zero() {
    let snap = sriov_host(4);
    let mut cfg = config(vec![]);
    cfg.sriov.push(sriov_spec("0000:05:00.0", 2));
    let p = plan::plan(&cfg, &snap);
    let counts: Vec<(u32, u32)> = p
        .actions
        .iter()
        .filter_map(|s| match s.action {
            Action::SetNumVfs { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(counts, [(4, 0), (0, 2)]);
    assert_converges(&cfg, &snap, &Context::default());
}

fn released_vfs(original: u32) -> Context {
    Context {
        taken_vfs: vec![TakenVfs {
            pf: addr("0000:05:00.0"),
            original_num_vfs: original,
        }],
        ..Context::default()
    }
}

fn vf_counts(p: &Plan) -> Vec<(u32, u32)> {
    p.actions
        .iter()
        .filter_map(|s| match s.action {
            Action::SetNumVfs { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pf_dropped_from_sriov_goes_back_to_its_original_vf_count() {
    let snap = sriov_host(2);
    let cfg = config(vec![]);
    let ctx = released_vfs(0);
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert_eq!(vf_counts(&p), [(2, 0)]);
    assert!(
        p.actions[0].reason.contains("no longer in [[sriov]]"),
        "{}",
        p.actions[0].reason
    );
    assert_converges(&cfg, &snap, &ctx);

    // An original count other than 0 goes through 0.
    let snap = sriov_host(4);
    let ctx = released_vfs(2);
    assert_eq!(
        vf_counts(&plan::plan_with(&cfg, &snap, &ctx)),
        [(4, 0), (0, 2)]
    );
    assert_converges(&cfg, &snap, &ctx);
}

#[test]
fn a_pf_still_in_sriov_or_already_back_is_left_to_the_config() {
    let snap = sriov_host(2);
    let mut cfg = config(vec![]);
    cfg.sriov.push(sriov_spec("0000:05:00.0", 2));
    assert!(plan::plan_with(&cfg, &snap, &released_vfs(0)).is_empty());
    let cfg = config(vec![]);
    assert!(plan::plan_with(&cfg, &snap, &released_vfs(2)).is_empty());
}

#[test]
fn vfs_still_named_by_a_device_entry_keep_their_pf_count() {
    let snap = sriov_host(2);
    let cfg = config(vec![by_ids("vfs", 0x8086, 0x1520)]);
    let p = plan::plan_with(&cfg, &snap, &released_vfs(0));
    assert!(vf_counts(&p).is_empty(), "{}", plan::render::text(&p));
    let problem = p
        .problems
        .iter()
        .find(|x| x.kind == ProblemKind::Sriov)
        .expect("the kept VFs are explained");
    assert!(
        problem.message.contains("0000:05:10.0"),
        "{}",
        problem.message
    );
    // The VFs themselves are still planned (taken to vfio-pci as their entry says).
    assert!(
        kinds(&p).iter().any(|k| k.starts_with("bind ")),
        "{:?}",
        kinds(&p)
    );
}

#[test]
fn sriov_beyond_total_is_refused() {
    let snap = sriov_host(0);
    let mut cfg = config(vec![]);
    cfg.sriov.push(sriov_spec("0000:05:00.0", 9));
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::Sriov]);
    assert!(p.problems[0].message.contains("at most 7"));
}

fn accounts() -> Accounts {
    let mut a = Accounts::default();
    for (n, uid) in [("alice", 1000), ("bob", 1001)] {
        a.users.insert(
            n.into(),
            Account {
                uid,
                gid: uid,
                memlock_limit: Some(64 << 20),
            },
        );
    }
    a.groups.insert("kvm".into(), 36);
    a
}

#[test]
fn user_gets_the_group_node() {
    let snap = host(vec![func(
        "0000:03:00.0",
        0x8086,
        0x10d3,
        NIC,
        Some("e1000e"),
        12,
    )]);
    let mut cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let mut u = user("alice", 0o660, &["nic"]);
    u.group = Some(vfioctl::config::UserRef::Name("kvm".into()));
    u.memlock = Some(1 << 30);
    cfg.users.push(u);
    let ctx = Context {
        accounts: accounts(),
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    let last = p.actions.last().unwrap();
    assert_eq!(
        last.action,
        Action::SetNodeOwner {
            device: addr("0000:03:00.0"),
            group: Some(12),
            from: None,
            to: Ownership {
                uid: 1000,
                gid: 36,
                mode: Mode(0o660)
            }
        }
    );
    assert!(p.notes.iter().any(|n| n.contains("memlock")));
    assert_converges(&cfg, &snap, &ctx);
}

#[test]
fn two_users_on_one_group_is_an_error() {
    let snap = host(vec![
        func("0000:01:00.0", 0x10de, 0x1b80, VGA, Some("vfio-pci"), 7),
        func("0000:01:00.1", 0x10de, 0x10f0, AUDIO, Some("vfio-pci"), 7),
    ]);
    let mut cfg = config(vec![
        by_address("gpu", "0000:01:00.0"),
        by_address("audio", "0000:01:00.1"),
    ]);
    cfg.users.push(user("alice", 0o600, &["gpu"]));
    cfg.users.push(user("bob", 0o600, &["audio"]));
    let ctx = Context {
        accounts: accounts(),
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert_eq!(problem_kinds(&p), [ProblemKind::OwnerConflict]);
    assert!(p.problems[0].message.contains("`alice`") && p.problems[0].message.contains("`bob`"));
    assert!(!p
        .actions
        .iter()
        .any(|s| s.action.kind() == "set-node-owner"));
}

#[test]
fn unknown_user_is_a_problem() {
    let snap = host(vec![func("0000:03:00.0", 0x8086, 0x10d3, NIC, None, 12)]);
    let mut cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    cfg.users.push(user("mallory", 0o600, &["nic"]));
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::UnknownAccount]);
    assert!(!p.is_empty(), "binding is still planned");
}

#[test]
fn window_over_the_msi_region_is_an_error() {
    let mut snap = host(vec![func("0000:03:00.0", 0x8086, 0x10d3, NIC, None, 12)]);
    snap.groups[0].reserved_regions.push(ReservedRegion {
        start: 0xfee0_0000,
        end: 0xfeef_ffff,
        kind: "msi".into(),
    });
    let mut cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    cfg.domains.push(DomainSpec {
        name: "dma".into(),
        devices: vec!["nic".into()],
        placement: Placement::Shared,
        backend: vfioctl::config::model::BackendChoice::Auto,
        windows: vec![
            WindowSpec {
                name: Some("low".into()),
                iova: 0x1000_0000,
                size: 1 << 20,
                hugepages: false,
                origin: Origin::default(),
            },
            WindowSpec {
                name: Some("high".into()),
                iova: 0xfe00_0000,
                size: 0x0100_0000,
                hugepages: false,
                origin: Origin::default(),
            },
        ],
        origin: Origin::default(),
    });
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::Window]);
    let m = &p.problems[0].message;
    assert!(m.contains("window `high`") && m.contains("msi") && m.contains("0xfee00000"));
}

#[test]
fn missing_device_is_reported_and_the_rest_planned() {
    let snap = host(vec![func("0000:03:00.0", 0x8086, 0x10d3, NIC, None, 12)]);
    let cfg = config(vec![
        by_address("gone", "0000:09:00.0"),
        by_address("nic", "0000:03:00.0"),
    ]);
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::Missing]);
    assert!(p.problems[0].message.contains("0000:09:00.0"));
    assert_eq!(
        kinds(&p),
        ["set-override 0000:03:00.0", "bind 0000:03:00.0"]
    );
}

#[test]
fn missing_vfio_module_is_loaded_first() {
    let mut snap = host(vec![func("0000:03:00.0", 0x8086, 0x10d3, NIC, None, 12)]);
    snap.pci_drivers.clear();
    snap.vfio.modules.clear();
    let cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let p = plan::plan(&cfg, &snap);
    assert_eq!(p.actions[0].action.kind(), "load-module");
    assert_eq!(p.actions[0].batch, 1);
    assert!(p.actions[1..].iter().all(|s| s.batch == 2));
    assert_converges(&cfg, &snap, &Context::default());
}

#[test]
fn released_device_goes_back_to_its_original_driver() {
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("vfio-pci"), 12);
    d.driver_override = Some("vfio-pci".into());
    let mut snap = host(vec![d]);
    snap.pci_drivers.push("e1000e".into());
    snap.normalize();
    let cfg = config(vec![]);
    // Without the journal nothing is released.
    assert!(plan::plan(&cfg, &snap).is_empty());
    let ctx = Context {
        taken: vec![Taken {
            address: addr("0000:03:00.0"),
            original_driver: Some("e1000e".into()),
            original_override: None,
            driver_unknown: false,
        }],
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert_eq!(
        kinds(&p),
        [
            "clear-override 0000:03:00.0",
            "unbind 0000:03:00.0",
            "bind 0000:03:00.0"
        ]
    );
    assert!(p.actions.iter().any(|s| s.action
        == Action::Bind {
            device: addr("0000:03:00.0"),
            driver: "e1000e".into()
        }));
    assert_converges(&cfg, &snap, &ctx);
    // An original driver that is no longer registered is loaded first.
    snap.pci_drivers.retain(|d| d != "e1000e");
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert_eq!(
        p.actions[0].action,
        Action::LoadModule {
            module: "e1000e".into(),
            driver: "e1000e".into()
        }
    );
}

/// A function claimed before any driver probed it (an early claim), as the journal holds it.
fn early(a: &str, original_override: Option<&str>) -> Taken {
    Taken {
        address: addr(a),
        original_driver: None,
        original_override: original_override.map(str::to_string),
        driver_unknown: true,
    }
}

#[test]
fn early_claimed_device_removed_from_the_config_is_probed_with_no_override() {
    // The kernel bound it to vfio-pci straight from the early override.
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("vfio-pci"), 12);
    d.driver_override = Some("vfio-pci".into());
    let snap = host(vec![d]);
    let ctx = Context {
        taken: vec![early("0000:03:00.0", None)],
        ..Default::default()
    };
    let p = plan::plan_with(&config(vec![]), &snap, &ctx);
    assert_eq!(
        kinds(&p),
        [
            "clear-override 0000:03:00.0",
            "unbind 0000:03:00.0",
            "probe 0000:03:00.0"
        ]
    );
    assert_eq!(
        p.actions[1].action,
        Action::Unbind {
            device: addr("0000:03:00.0"),
            from: Some("vfio-pci".into())
        }
    );
    assert!(p.actions.iter().all(|s| s.reason.contains("kernel picks")));
    assert!(plan::render::text(&p).contains("the kernel's pick"));
    let json: serde_json::Value = serde_json::from_str(&plan::render::json(&p)).unwrap();
    assert_eq!(json["actions"][2]["action"], "probe");
    assert_eq!(json["actions"][2]["device"], "0000:03:00.0");
    assert_converges(&config(vec![]), &snap, &ctx);

    // Claimed but never bound (vfio-pci was not loaded): the override goes, then a probe.
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, None, 12);
    d.driver_override = Some("vfio-pci".into());
    let p = plan::plan_with(&config(vec![]), &host(vec![d]), &ctx);
    assert_eq!(
        kinds(&p),
        ["clear-override 0000:03:00.0", "probe 0000:03:00.0"]
    );

    // A recorded original override is put back instead of cleared.
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("vfio-pci"), 12);
    d.driver_override = Some("vfio-pci".into());
    let ctx = Context {
        taken: vec![early("0000:03:00.0", Some("e1000e"))],
        ..Default::default()
    };
    let p = plan::plan_with(&config(vec![]), &host(vec![d]), &ctx);
    assert_eq!(
        p.actions[0].action,
        Action::SetOverride {
            device: addr("0000:03:00.0"),
            from: Some("vfio-pci".into()),
            to: "e1000e".into()
        }
    );
    assert_eq!(p.actions.last().unwrap().action.kind(), "probe");
}

#[test]
fn early_claimed_device_still_configured_or_already_back_plans_nothing() {
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("vfio-pci"), 12);
    d.driver_override = Some("vfio-pci".into());
    let snap = host(vec![d]);
    let ctx = Context {
        taken: vec![early("0000:03:00.0", None)],
        ..Default::default()
    };
    let cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert!(
        p.actions
            .iter()
            .all(|s| s.action.kind() == "set-node-owner" || s.action.kind() == "load-module"),
        "{}",
        plan::render::text(&p)
    );
    assert!(!kinds(&p).iter().any(|k| k.starts_with("probe")));
    // Back on the kernel's pick with no override: nothing to give back.
    let snap = host(vec![func(
        "0000:03:00.0",
        0x8086,
        0x10d3,
        NIC,
        Some("e1000e"),
        12,
    )]);
    assert!(plan::plan_with(&config(vec![]), &snap, &ctx).is_empty());
}

#[test]
fn kernel_pick_release_in_a_claimed_group_counts_as_a_dma_driver() {
    let mut a = func("0000:01:00.0", 0x10de, 0x1b80, VGA, Some("vfio-pci"), 7);
    a.driver_override = Some("vfio-pci".into());
    let mut b = func("0000:01:00.1", 0x10de, 0x10f0, AUDIO, Some("vfio-pci"), 7);
    b.driver_override = Some("vfio-pci".into());
    let snap = host(vec![a, b]);
    let cfg = config(vec![by_address("gpu", "0000:01:00.0")]);
    let ctx = Context {
        taken: vec![early("0000:01:00.1", None)],
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert_eq!(problem_kinds(&p), [ProblemKind::Sibling]);
    assert!(p.problems[0].message.contains("whatever the kernel picks"));
    assert!(p.is_empty());
}

#[test]
fn release_that_would_break_a_claimed_group_is_an_error() {
    let mut a = func("0000:01:00.0", 0x10de, 0x1b80, VGA, Some("vfio-pci"), 7);
    a.driver_override = Some("vfio-pci".into());
    let mut b = func("0000:01:00.1", 0x10de, 0x10f0, AUDIO, Some("vfio-pci"), 7);
    b.driver_override = Some("vfio-pci".into());
    let snap = host(vec![a, b]);
    let cfg = config(vec![by_address("gpu", "0000:01:00.0")]);
    let ctx = Context {
        taken: vec![Taken {
            address: addr("0000:01:00.1"),
            original_driver: Some("snd_hda_intel".into()),
            original_override: None,
            driver_unknown: false,
        }],
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert_eq!(problem_kinds(&p), [ProblemKind::Sibling]);
    assert!(p.problems[0].message.contains("goes back there"));
    assert!(p.is_empty());
}

#[test]
fn scoped_plan_keeps_only_the_devices_group() {
    let snap = host(vec![
        func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 12),
        func("0000:04:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 13),
    ]);
    let cfg = config(vec![
        by_address("a", "0000:03:00.0"),
        by_address("b", "0000:04:00.0"),
        by_address("gone", "0000:09:00.0"),
    ]);
    let p = plan::plan_with(
        &cfg,
        &snap,
        &Context::default().scoped_to(addr("0000:04:00.0")),
    );
    assert!(
        p.is_realisable(),
        "unrelated problems are left out: {:?}",
        p.problems
    );
    assert!(!p.is_empty());
    assert!(p
        .actions
        .iter()
        .all(|s| s.action.device() == Some(addr("0000:04:00.0"))));
    let absent = plan::plan_with(
        &cfg,
        &snap,
        &Context::default().scoped_to(addr("0000:0a:00.0")),
    );
    assert_eq!(problem_kinds(&absent), [ProblemKind::Missing]);
}

#[test]
fn conflicting_drivers_for_one_function_are_an_error() {
    let snap = host(vec![func("0000:03:00.0", 0x8086, 0x10d3, NIC, None, 12)]);
    let mut b = by_ids("all", 0x8086, 0x10d3);
    b.driver = "igb_vfio_pci".into();
    let cfg = config(vec![by_address("nic", "0000:03:00.0"), b]);
    let p = plan::plan(&cfg, &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::DriverConflict]);
    assert!(p.is_empty());
}

#[test]
fn json_has_the_fixed_field_names() {
    let snap = host(vec![func(
        "0000:03:00.0",
        0x8086,
        0x10d3,
        NIC,
        Some("e1000e"),
        12,
    )]);
    let cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    let p = plan::plan(&cfg, &snap);
    let v: serde_json::Value = serde_json::from_str(&plan::render::json(&p)).unwrap();
    let actions = v["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3);
    for a in actions {
        assert_eq!(a["device"], "0000:03:00.0");
        assert!(a["action"].is_string());
    }
    assert_eq!(actions[2]["action"], "bind");
    assert_eq!(actions[2]["driver"], "vfio-pci");
}

#[test]
fn without_an_iommu_nothing_is_planned_and_the_fix_is_named() {
    let mut d = func("0000:03:00.0", 0x8086, 0x10d3, NIC, Some("e1000e"), 12);
    d.iommu_group = None;
    let snap = host(vec![d]);
    let p = plan::plan(&config(vec![by_address("nic", "0000:03:00.0")]), &snap);
    assert_eq!(problem_kinds(&p), [ProblemKind::NoIommu]);
    assert!(p.problems[0].message.contains("intel_iommu=on"));
    assert!(p.is_empty());
}

#[test]
fn a_domain_device_keeps_a_root_only_node_even_when_a_user_lists_it() {
    let snap = host(vec![func(
        "0000:03:00.0",
        0x8086,
        0x10d3,
        NIC,
        Some("e1000e"),
        12,
    )]);
    let mut cfg = config(vec![by_address("nic", "0000:03:00.0")]);
    cfg.users.push(user("alice", 0o600, &["nic"]));
    cfg.domains.push(DomainSpec {
        name: "dp".into(),
        devices: vec!["nic".into()],
        placement: Placement::PerGroup,
        backend: vfioctl::config::model::BackendChoice::Auto,
        windows: Vec::new(),
        origin: Origin::default(),
    });
    let ctx = Context {
        accounts: accounts(),
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    assert!(p.is_realisable(), "{:?}", p.problems);
    assert!(!p
        .actions
        .iter()
        .any(|s| s.action.kind() == "set-node-owner"));
    assert!(p.notes.iter().any(|n| n.contains("[[domain]] `dp`")));
    // And a node someone else chowned goes back to root-only.
    let mut owned = plan::simulate(&snap, &p);
    owned.groups[0].node.as_mut().unwrap().uid = 1000;
    let again = plan::plan_with(&cfg, &owned, &ctx);
    assert_eq!(
        again
            .actions
            .iter()
            .map(|s| s.action.kind())
            .collect::<Vec<_>>(),
        ["set-node-owner"]
    );
}
