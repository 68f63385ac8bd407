//! Scans every host tree under `tests/fixtures/hosts/NAME/` (`sys/`, `dev/`, `proc/`, as
//! captured from a real machine or VM, or written by the fixtures) and compares the result
//! with `NAME/expected.json` when present. Paths under the tree read `<root>` there.
//! `UPDATE_EXPECT=1` (re)writes the expected files: review the diff before committing.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vfioctl::fixtures::vm;
use vfioctl::host::{scan, Roots, Snapshot};

fn hosts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts")
}

fn normalized(snap: &Snapshot, root: &Path) -> Value {
    let text = serde_json::to_string(snap).unwrap();
    let root = serde_json::to_string(&root.display().to_string()).unwrap();
    serde_json::from_str(&text.replace(root.trim_matches('"'), "<root>")).unwrap()
}

/// Invariants any real host satisfies, checked even without expected data.
fn check_consistent(name: &str, snap: &Snapshot) {
    for g in &snap.groups {
        assert!(!g.devices.is_empty(), "{name}: group {} is empty", g.id);
        for a in &g.devices {
            let d = snap
                .device(*a)
                .unwrap_or_else(|| panic!("{name}: group {} lists unknown {a}", g.id));
            assert_eq!(d.iommu_group, Some(g.id), "{name}: {a} group link");
        }
    }
    for d in &snap.devices {
        if let Some(p) = d.parent {
            let b = snap
                .device(p)
                .unwrap_or_else(|| panic!("{name}: parent {p} of {} missing", d.address));
            assert!(b.bridge, "{name}: parent {p} of {} is no bridge", d.address);
        }
        if let Some(g) = d.iommu_group {
            assert!(
                snap.group(g).is_some(),
                "{name}: {} in missing group {g}",
                d.address
            );
        }
    }
}

#[test]
fn every_host_tree_scans_as_expected() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(hosts_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("sys").is_dir())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no host trees under {}",
        hosts_dir().display()
    );
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let snap = scan(&Roots::under(&dir)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!snap.devices.is_empty(), "{name}: no PCI functions found");
        check_consistent(&name, &snap);
        let actual = normalized(&snap, &dir);
        let expected_path = dir.join("expected.json");
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            fs::write(
                &expected_path,
                serde_json::to_string_pretty(&actual).unwrap() + "\n",
            )
            .unwrap();
        }
        if let Ok(text) = fs::read_to_string(&expected_path) {
            let expected: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                expected,
                actual,
                "{name}: scan differs from {}",
                expected_path.display()
            );
        }
    }
}

/// The committed `q35` tree is exactly what the q35 fixture writes (so the generic test
/// above also covers it). `REWRITE_Q35_TREE=1` rewrites the committed tree (then run the
/// test above with `UPDATE_EXPECT=1`).
#[test]
fn committed_q35_tree_matches_the_fixture() {
    let committed = hosts_dir().join("q35");
    if std::env::var_os("REWRITE_Q35_TREE").is_some() {
        for sub in ["sys", "dev", "proc"] {
            let _ = fs::remove_dir_all(committed.join(sub));
        }
        vm::q35().write(&committed).unwrap();
    }
    let fresh = tempfile::tempdir().unwrap();
    vm::q35().write(fresh.path()).unwrap();
    let a = normalized(&scan(&Roots::under(&committed)).unwrap(), &committed);
    let b = normalized(&scan(&Roots::under(fresh.path())).unwrap(), fresh.path());
    assert_eq!(a, b);
}
