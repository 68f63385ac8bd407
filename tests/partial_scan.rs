//! Partial snapshots: the scoped scanner reads exactly the closure that `partial::restrict`
//! defines, and a plan scoped to a function decides the same from the partial snapshot as from
//! the whole host. Checked for every function of every fixture host (the captured q35 trees,
//! the VM layout, a generated host with SR-IOV and bridges) and every example config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vfioctl::fixtures::tree::{FakeHost, Function, SriovSpec};
use vfioctl::fixtures::{synthetic::SyntheticHost, vm};
use vfioctl::host::partial::{closure, restrict, same_slot};
use vfioctl::host::{scan, scan_closure, Roots, Snapshot};
use vfioctl::pci::PciAddress;
use vfioctl::plan::{plan_with, Context};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every fixture host as (name, roots); the tempdirs live as long as the returned guard.
fn hosts() -> (Vec<tempfile::TempDir>, Vec<(String, Roots)>) {
    let mut dirs = Vec::new();
    let mut out = Vec::new();
    for name in ["q35", "vm-q35"] {
        out.push((
            name.to_string(),
            Roots::under(&repo().join("tests/fixtures/hosts").join(name)),
        ));
    }
    for (name, host) in [
        ("vm layout", vm::q35()),
        ("synthetic", SyntheticHost::new(60, 14).describe()),
        ("sriov, VFs in groups of their own", sriov_host()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        out.push((name.to_string(), host.write(dir.path()).unwrap()));
        dirs.push(dir);
    }
    (dirs, out)
}

/// An igb PF with two VFs at its offset (another slot), each VF in a group of its own (an
/// ACS-capable port), as on the VM suite's SR-IOV layout: only the `physfn`/`virtfn` links tie
/// a VF's closure to its PF.
fn sriov_host() -> FakeHost {
    let pf: PciAddress = "0000:01:00.0".parse().unwrap();
    let vfs: Vec<PciAddress> = ["0000:01:10.0", "0000:01:10.2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let mut h = FakeHost::new();
    h.add(Function::new("0000:00:00.0", 0x8086, 0x29c0, 0x060000).group(0));
    h.add(
        Function::new("0000:01:00.0", 0x8086, 0x10c9, 0x020000)
            .driver("igb")
            .group(1)
            .sriov(SriovSpec {
                total_vfs: 7,
                offset: 128,
                stride: 2,
                vf_device: 0x10ca,
                vfs: vfs.clone(),
            }),
    );
    for (i, vf) in vfs.iter().enumerate() {
        h.add(
            Function::new(&vf.to_string(), 0x8086, 0x10ca, 0x020000)
                .driver("igbvf")
                .group(2 + i as u32)
                .physfn(pf),
        );
    }
    h
}

fn without_warnings(mut s: Snapshot) -> Snapshot {
    s.warnings.clear();
    s
}

#[test]
fn closures_are_whole_groups_with_slots_and_sriov_relatives() {
    let (_dirs, hosts) = hosts();
    let mut with_vfs = 0;
    let mut split_vfs = 0;
    for (name, roots) in hosts {
        let snap = scan(&roots).unwrap();
        for d in &snap.devices {
            let c = closure(&snap, &[d.address]);
            assert!(c.contains(&d.address), "{name}: {}", d.address);
            for a in &c {
                let member = snap.device(*a).unwrap();
                if let Some(g) = member.iommu_group.and_then(|g| snap.group(g)) {
                    for m in &g.devices {
                        assert!(c.contains(m), "{name}: {a}'s group member {m} not in {c:?}");
                    }
                }
            }
            for o in snap
                .devices
                .iter()
                .filter(|o| same_slot(&o.address, &d.address))
            {
                assert!(c.contains(&o.address), "{name}: slot sibling {}", o.address);
            }
            if let Some(pf) = d.physfn {
                assert!(c.contains(&pf), "{name}: PF {pf} of {}", d.address);
                split_vfs += usize::from(
                    snap.device(pf).and_then(|p| p.iommu_group) != d.iommu_group
                        && !same_slot(&pf, &d.address),
                );
            }
            if let Some(s) = &d.sriov {
                with_vfs += usize::from(!s.vfs.is_empty());
                assert!(
                    s.vfs.iter().all(|vf| c.contains(vf)),
                    "{name}: VFs of {}",
                    d.address
                );
            }
        }
        let absent: PciAddress = "ffff:ff:1f.7".parse().unwrap();
        assert!(closure(&snap, &[absent]).is_empty());
        assert!(
            snap.covered(absent),
            "{name}: a whole snapshot covers everything"
        );
    }
    assert!(
        with_vfs > 0,
        "no fixture has a PF with VFs: the SR-IOV case went untested"
    );
    assert!(
        split_vfs > 0,
        "no fixture has a VF outside its PF's slot and group: the physfn rule went untested"
    );
}

#[test]
fn the_scoped_scan_reads_exactly_the_restricted_snapshot() {
    let (_dirs, hosts) = hosts();
    for (name, roots) in hosts {
        let full = scan(&roots).unwrap();
        for d in &full.devices {
            let want = without_warnings(restrict(&full, &[d.address]));
            let got = without_warnings(scan_closure(&roots, &[d.address]).unwrap());
            assert_eq!(got, want, "{name}: closure of {}", d.address);
            let covered: BTreeSet<PciAddress> = got.devices.iter().map(|x| x.address).collect();
            assert_eq!(got.covers.as_ref(), Some(&covered), "{name}: {}", d.address);
            assert!(
                covered.len() < full.devices.len() || full.groups.len() <= 1,
                "{name}: the closure of {} is the whole host",
                d.address
            );
        }
        // Several seeds at once: the union of their closures.
        let seeds: Vec<PciAddress> = full.devices.iter().step_by(3).map(|d| d.address).collect();
        assert_eq!(
            without_warnings(scan_closure(&roots, &seeds).unwrap()),
            without_warnings(restrict(&full, &seeds)),
            "{name}: several seeds"
        );
    }
}

#[test]
fn a_scoped_plan_decides_the_same_from_the_partial_snapshot() {
    let (_dirs, hosts) = hosts();
    let configs: Vec<(String, vfioctl::config::Config)> =
        std::fs::read_dir(repo().join("examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| (p.display().to_string(), vfioctl::config::load(&p).unwrap()))
            .collect();
    assert!(!configs.is_empty());
    let mut planned = 0;
    for (name, roots) in hosts {
        let full = scan(&roots).unwrap();
        // A config naming every function of the host (each one, alone) too, so that every
        // device gets a plan with actions, not only the few the examples name.
        let mut all = configs.clone();
        for (i, d) in full.devices.iter().enumerate().step_by(2) {
            let text = format!(
                "version = 1\n[[device]]\nname = \"d{i}\"\naddress = \"{}\"\n",
                d.address
            );
            let path = std::env::temp_dir()
                .join(format!("vfioctl-partial-{}-{i}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            all.push((
                format!("just {}", d.address),
                vfioctl::config::load(&path).unwrap(),
            ));
            let _ = std::fs::remove_file(&path);
        }
        for (cname, config) in &all {
            for d in &full.devices {
                let ctx = Context::default().scoped_to(d.address);
                let whole = plan_with(config, &full, &ctx);
                let part = plan_with(config, &restrict(&full, &[d.address]), &ctx);
                assert_eq!(
                    part.actions, whole.actions,
                    "{name}, {cname}: actions scoped to {}",
                    d.address
                );
                assert_eq!(
                    part.problems, whole.problems,
                    "{name}, {cname}: problems scoped to {}",
                    d.address
                );
                planned += usize::from(!whole.actions.is_empty());
            }
        }
    }
    assert!(
        planned > 20,
        "only {planned} scoped plans had actions: the check says little"
    );
}
