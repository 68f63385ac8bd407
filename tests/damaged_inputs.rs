//! Damaged inputs: a `--host` snapshot that contradicts itself is refused with an error naming
//! the item; a sysfs tree with a missing or dangling `iommu_group` link scans with a warning,
//! each function in exactly one place.

use std::fs;
use std::process::Command;

use vfioctl::fixtures::vm;
use vfioctl::host::scan;
use vfioctl::pci::PciAddress;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn vfioctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(args)
        .output()
        .unwrap()
}

/// The bundled example host with `edit` applied to its JSON.
fn damaged(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/hosts/workstation.json"
    );
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    let out = dir.join("host.json");
    fs::write(&out, serde_json::to_vec(&v).unwrap()).unwrap();
    out.display().to_string()
}

#[test]
fn a_damaged_snapshot_is_refused_naming_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gpu-passthrough.toml");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 4] = [
        (
            |v| {
                let d = v["devices"][1].clone();
                v["devices"].as_array_mut().unwrap().push(d);
            },
            "is listed more than once",
        ),
        (
            |v| {
                v["groups"][0]["reserved_regions"] = serde_json::json!([
                    { "start": 8192, "end": 4096, "kind": "direct" }
                ]);
            },
            "reserved region 0x2000-0x1000 (direct) starts after it ends",
        ),
        (
            |v| {
                v["groups"][0]["devices"]
                    .as_array_mut()
                    .unwrap()
                    .push("0000:7f:1f.7".into());
            },
            "lists function 0000:7f:1f.7, which is not among the functions",
        ),
        (
            |v| {
                let first = v["groups"][0]["devices"][0].clone();
                v["groups"][1]["devices"]
                    .as_array_mut()
                    .unwrap()
                    .push(first);
            },
            "is a member of both IOMMU group",
        ),
    ];
    for (edit, message) in cases {
        let host = damaged(dir.path(), edit);
        for args in [
            vec!["status", "--host", host.as_str()],
            vec![
                "reconcile",
                "--dry-run",
                "--config",
                config,
                "--host",
                host.as_str(),
            ],
        ] {
            let out = vfioctl(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains("is damaged"), "{args:?}: {stderr}");
            assert!(
                stderr.contains(message),
                "{args:?}: `{message}` not in {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    // The undamaged file is accepted.
    let host = damaged(dir.path(), |_| {});
    assert_eq!(vfioctl(&["status", "--host", &host]).status.code(), Some(0));
}

#[test]
fn a_missing_iommu_group_link_lists_the_function_once_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let roots = vm::q35().write(dir.path()).unwrap();
    let f = addr("0000:00:01.0");
    let dev = fs::canonicalize(roots.sysfs.join("bus/pci/devices").join(f.to_string())).unwrap();
    fs::remove_file(dev.join("iommu_group")).unwrap();
    let snap = scan(&roots).unwrap();
    let holders: Vec<u32> = snap
        .groups
        .iter()
        .filter(|g| g.devices.contains(&f))
        .map(|g| g.id)
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(snap.device(f).unwrap().iommu_group, Some(holders[0]));
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.path.ends_with("0000:00:01.0/iommu_group")
                && w.message.contains("link missing")),
        "{:?}",
        snap.warnings
    );
    assert_eq!(snap.validate(), Ok(()));
}

#[test]
fn a_dangling_iommu_group_link_is_warned_about_and_takes_no_group() {
    let dir = tempfile::tempdir().unwrap();
    let roots = vm::q35().write(dir.path()).unwrap();
    let f = addr("0000:00:01.0");
    let g = snapshot_group(&roots, f);
    // The group directory went away; the function's link now dangles.
    fs::remove_dir_all(roots.sysfs.join("kernel/iommu_groups").join(g.to_string())).unwrap();
    let snap = scan(&roots).unwrap();
    let d = snap.device(f).expect("the function is still listed");
    assert_eq!(d.iommu_group, None);
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.path.ends_with("0000:00:01.0/iommu_group")
                && w.message
                    .contains(&format!("IOMMU group {g}, which is not in"))),
        "{:?}",
        snap.warnings
    );
    assert_eq!(snap.validate(), Ok(()));
}

fn snapshot_group(roots: &vfioctl::host::Roots, f: PciAddress) -> u32 {
    scan(roots).unwrap().device(f).unwrap().iommu_group.unwrap()
}
