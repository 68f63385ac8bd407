//! Planning speed on the synthetic 4096-function host (issue 6 target: under 20 ms for a config
//! claiming 512 devices). Also measures re-planning a converged host (what every `watch` pass
//! and every post-apply verification costs) and a scoped plan (`reconcile --device`, udev).
//!
//! Run: `cargo bench --bench plan`.

use std::collections::BTreeSet;

use criterion::{criterion_group, criterion_main, Criterion};
use vfioctl::config::{Config, DeviceSpec, Origin, Selector, UserRef, UserSpec};
use vfioctl::fixtures::synthetic::SyntheticHost;
use vfioctl::host::Snapshot;
use vfioctl::pci::PciAddress;
use vfioctl::plan::{self, Account, Accounts, Context};

const FUNCTIONS: usize = 4096;
const GROUPS: usize = 1024;
const CLAIMED: usize = 512;

fn host() -> Snapshot {
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = SyntheticHost::new(FUNCTIONS, GROUPS)
        .write(dir.path())
        .expect("write synthetic host");
    vfioctl::host::scan(&roots).expect("scan synthetic host")
}

/// Claims whole groups (every member but bridges and PFs with VFs, each as its own `[[device]]` by address) in
/// address order until `CLAIMED` functions are claimed; every other claimed group goes to one of four
/// users.
fn config(snap: &Snapshot) -> Config {
    let mut devices: Vec<DeviceSpec> = Vec::new();
    let mut owned: Vec<Vec<String>> = vec![Vec::new(); 4];
    for (gi, g) in snap.groups.iter().enumerate() {
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
        // Groups whose other members stay on DMA drivers would only produce errors.
        let blocked = g.devices.iter().filter_map(|a| snap.device(*a)).any(|d| {
            !members.contains(&d.address)
                && d.driver
                    .as_deref()
                    .is_some_and(|x| !vfioctl::host::driver_keeps_group_viable(x))
        });
        if members.is_empty() || blocked || devices.len() + members.len() > CLAIMED {
            continue;
        }
        for a in members {
            // Every other claimed group belongs to one of four users.
            if gi % 2 == 0 {
                owned[(gi / 2) % 4].push(format!("dev-{}", devices.len()));
            }
            devices.push(DeviceSpec {
                name: format!("dev-{}", devices.len()),
                selector: Selector::Address(a),
                driver: "vfio-pci".into(),
                companions: Vec::new(),
                force: true,
                origin: Origin::default(),
            });
        }
        if devices.len() == CLAIMED {
            break;
        }
    }
    let users = owned
        .into_iter()
        .enumerate()
        .map(|(u, names)| UserSpec {
            user: UserRef::Name(format!("user{u}")),
            group: None,
            mode: 0o600,
            devices: names,
            memlock: None,
            origin: Origin::default(),
        })
        .collect();
    Config {
        version: 1,
        devices,
        users,
        ..Default::default()
    }
}

fn accounts() -> Accounts {
    let mut a = Accounts::default();
    for u in 0..4 {
        a.users.insert(
            format!("user{u}"),
            Account {
                uid: 1000 + u,
                gid: 1000 + u,
                memlock_limit: None,
            },
        );
    }
    a
}

fn bench(c: &mut Criterion) {
    let snap = host();
    let cfg = config(&snap);
    let ctx = Context {
        accounts: accounts(),
        ..Default::default()
    };
    let p = plan::plan_with(&cfg, &snap, &ctx);
    let touched: BTreeSet<PciAddress> =
        p.actions.iter().filter_map(|s| s.action.device()).collect();
    eprintln!(
        "synthetic host: {} functions, {} groups; config claims {} devices; plan: {} actions on {} functions in {} batches, {} problems",
        snap.devices.len(),
        snap.groups.len(),
        cfg.devices.len(),
        p.actions.len(),
        touched.len(),
        p.batches(),
        p.problems.len()
    );
    assert!(p.is_realisable(), "{}", plan::render::text(&p));
    let converged = plan::simulate(&snap, &p);
    assert!(plan::plan_with(&cfg, &converged, &ctx).is_empty());

    c.bench_function("plan 4096 functions, 512 claimed", |b| {
        b.iter(|| plan::plan_with(&cfg, &snap, &ctx))
    });
    c.bench_function("re-plan converged 4096/512", |b| {
        b.iter(|| plan::plan_with(&cfg, &converged, &ctx))
    });
    let one = match &cfg.devices[CLAIMED / 2].selector {
        Selector::Address(a) => *a,
        Selector::Ids { .. } => unreachable!("bench config uses addresses"),
    };
    c.bench_function("scoped plan (--device) 4096/512", |b| {
        let scoped = ctx.clone().scoped_to(one);
        b.iter(|| plan::plan_with(&cfg, &snap, &scoped))
    });
    c.bench_function("render text + json 4096/512", |b| {
        b.iter(|| (plan::render::text(&p).len(), plan::render::json(&p).len()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
