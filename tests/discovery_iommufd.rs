//! Discovery of the iommufd side of VFIO on fake trees: `/dev/iommu`, each vfio-bound
//! function's device cdev (`vfio-dev/vfioN` in sysfs, `/dev/vfio/devices/vfioN`), in the scan,
//! the snapshot file (old files without the fields still load) and `status` (text and JSON).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use vfioctl::fixtures::{vm, FakeHost};
use vfioctl::host::{self, scan, Roots};
use vfioctl::pci::PciAddress;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// The q35 guest with the edu slot (00:05.0 edu, 00:05.1 pci-testdev) on vfio-pci.
fn q35_edu_on_vfio(cdevs: bool) -> FakeHost {
    let mut h = vm::q35();
    h.vfio_loaded().group_node(5, 0o600);
    if cdevs {
        h.with_cdevs();
    }
    for f in &mut h.functions {
        if f.address.bus == 0 && f.address.device == 5 {
            f.driver = Some("vfio-pci".into());
        }
    }
    h
}

fn vfioctl(roots: &Roots, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--sysfs-root")
        .arg(&roots.sysfs)
        .arg("--dev-root")
        .arg(&roots.dev)
        .arg("--proc-root")
        .arg(&roots.proc)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn under(root: &Path, rel: &str) -> String {
    root.join(rel).display().to_string()
}

#[test]
fn scan_finds_dev_iommu_and_each_vfio_functions_cdev() {
    let dir = tempfile::tempdir().unwrap();
    let roots = q35_edu_on_vfio(true).write(dir.path()).unwrap();
    let snap = scan(&roots).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    assert!(snap.vfio.iommufd);
    let iommu = snap.vfio.iommufd_node.clone().unwrap();
    assert_eq!(iommu.path, under(dir.path(), "dev/iommu"));
    assert_eq!(iommu.mode, 0o660);
    assert_eq!(snap.vfio.device_cdevs, vec!["vfio0", "vfio1"]);

    let edu = snap.cdev(addr("00:05.0")).unwrap();
    assert_eq!(edu.name, "vfio0");
    assert_eq!((edu.major, edu.minor), (511, 0));
    assert_eq!(edu.path, under(dir.path(), "dev/vfio/devices/vfio0"));
    let node = edu.node.clone().unwrap();
    assert_eq!(node.mode, 0o600);
    assert_eq!(node.uid, nix::unistd::getuid().as_raw());
    let testdev = snap.cdev(addr("00:05.1")).unwrap();
    assert_eq!(testdev.name, "vfio1");
    assert_eq!((testdev.major, testdev.minor), (511, 1));
    // Functions on host drivers, or unbound, have none.
    assert!(snap.cdev(addr("00:01.0")).is_none());
    assert!(snap.cdev(addr("02:01.0")).is_none());
}

#[test]
fn a_kernel_without_cdevs_has_none_and_no_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let roots = q35_edu_on_vfio(false).write(dir.path()).unwrap();
    let snap = scan(&roots).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    assert!(!snap.vfio.iommufd);
    assert!(snap.vfio.iommufd_node.is_none());
    assert!(snap.devices.iter().all(|d| d.vfio_cdev.is_none()));
    // The fields stay out of the JSON, so snapshots of such hosts read as before.
    let json = host::snapshot_json(&snap);
    assert!(!json.contains("vfio_cdev"), "{json}");
    assert!(!json.contains("iommufd_node"), "{json}");
}

#[test]
fn a_cdev_whose_node_is_missing_or_unreadable_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let roots = q35_edu_on_vfio(true).write(dir.path()).unwrap();
    std::fs::remove_file(roots.device_cdev("vfio1")).unwrap();
    let edu_dev = roots
        .pci_device(&addr("00:05.0"))
        .join("vfio-dev/vfio0/dev");
    std::fs::write(&edu_dev, "garbage\n").unwrap();
    let snap = scan(&roots).unwrap();
    // 00:05.1: sysfs has the cdev, /dev does not (yet): known, without a node.
    let testdev = snap.cdev(addr("00:05.1")).unwrap();
    assert_eq!(testdev.name, "vfio1");
    assert!(testdev.node.is_none());
    // 00:05.0: its number cannot be read: no cdev, and a warning naming the file.
    assert!(snap.cdev(addr("00:05.0")).is_none());
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.path.ends_with("vfio-dev/vfio0/dev") && w.message.contains("major:minor")),
        "{:?}",
        snap.warnings
    );
    let text = vfioctl::host::status::render(&snap);
    assert!(text.contains("vfio1 (511:1): node missing"), "{text}");
}

#[test]
fn snapshots_carry_the_cdevs_and_old_snapshots_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let roots = q35_edu_on_vfio(true)
        .write(&dir.path().join("host"))
        .unwrap();
    let snap = scan(&roots).unwrap();
    let file = dir.path().join("host.json");
    std::fs::write(&file, host::snapshot_json(&snap)).unwrap();
    let loaded = host::load_snapshot(&file).unwrap();
    assert_eq!(loaded, snap);
    assert_eq!(loaded.cdev(addr("00:05.0")).unwrap().name, "vfio0");

    // A snapshot written before the fields existed.
    let mut v: Value = serde_json::from_str(&host::snapshot_json(&snap)).unwrap();
    for d in v["devices"].as_array_mut().unwrap() {
        d.as_object_mut().unwrap().remove("vfio_cdev");
    }
    v["vfio"].as_object_mut().unwrap().remove("iommufd_node");
    let old = dir.path().join("old.json");
    std::fs::write(&old, serde_json::to_string(&v).unwrap()).unwrap();
    let loaded = host::load_snapshot(&old).unwrap();
    assert!(loaded.devices.iter().all(|d| d.vfio_cdev.is_none()));
    assert!(loaded.vfio.iommufd_node.is_none());
    assert!(loaded.vfio.iommufd);
}

#[test]
fn status_shows_dev_iommu_and_the_cdevs_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let roots = q35_edu_on_vfio(true).write(dir.path()).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();

    let text = stdout(&vfioctl(&roots, &["status"]));
    let iommu_line = format!(
        "iommufd {} present (owner uid {uid} gid {gid}, mode 0660)",
        under(dir.path(), "dev/iommu")
    );
    assert!(text.contains(&iommu_line), "{text}");
    let edu_line = format!(
        "cdev {} (511:0): owner uid {uid} gid {gid}, mode 0600",
        under(dir.path(), "dev/vfio/devices/vfio0")
    );
    assert!(text.contains(&edu_line), "{text}");
    // The cdev line follows its function's line.
    let edu_at = text.find("0000:00:05.0").unwrap();
    assert!(text[edu_at..].find(&edu_line).unwrap() < text[edu_at..].find("0000:00:05.1").unwrap());

    let v: Value = serde_json::from_str(&stdout(&vfioctl(&roots, &["status", "--json"]))).unwrap();
    assert_eq!(v["vfio"]["iommufd"], true);
    assert_eq!(v["vfio"]["iommufd_node"]["mode"], 0o660);
    let dev = |a: &str| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["address"] == a)
            .unwrap()
            .clone()
    };
    let edu = dev("0000:00:05.1");
    assert_eq!(edu["vfio_cdev"]["name"], "vfio1");
    assert_eq!(edu["vfio_cdev"]["major"], 511);
    assert_eq!(edu["vfio_cdev"]["minor"], 1);
    assert_eq!(
        edu["vfio_cdev"]["path"],
        under(dir.path(), "dev/vfio/devices/vfio1")
    );
    assert!(dev("0000:00:01.0").get("vfio_cdev").is_none());

    // `--host` shows the same view without reading the host.
    let file = dir.path().join("host.json");
    stdout(&vfioctl(
        &roots,
        &["snapshot", "-o", file.to_str().unwrap()],
    ));
    let nowhere = Roots::under(&dir.path().join("nowhere"));
    let from_file = stdout(&vfioctl(
        &nowhere,
        &["status", "--host", file.to_str().unwrap()],
    ));
    assert_eq!(text, from_file);
}
