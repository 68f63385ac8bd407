//! Issue 15, "Safety fails open": on fake sysfs trees, a function whose use cannot be read
//! (mountinfo and mounts unreadable, `/proc/net/route` unreadable, a `root=` that cannot be
//! traced) counts as "cannot tell": refused unless `force = true`, with the reason in the
//! plan's text and JSON; and the scanner's warnings appear in plans.

use std::fs;
use std::path::Path;

use serde_json::Value;
use vfioctl::fixtures::{Disk, FakeHost, Function, Net};
use vfioctl::host::{scan, Roots};
use vfioctl::plan::{self, render, ProblemKind};

const NVME: &str = "0000:01:00.0";
const NIC: &str = "0000:02:00.0";

/// An NVMe whose partition is the mounted root, and a NIC up with an address and a route.
fn host(dir: &Path) -> Roots {
    let mut h = FakeHost::new();
    h.add(
        Function::new(NVME, 0x1b36, 0x0010, 0x010802)
            .driver("nvme")
            .group(1),
    )
    .add(
        Function::new(NIC, 0x8086, 0x10d3, 0x020000)
            .driver("e1000e")
            .group(2),
    )
    .disk(Disk::nvme(NVME, 0, 1, (259, 0)).partitions(1))
    .net(Net::new("eth0", NIC, 2).up())
    .proc_file(
        "self/mountinfo",
        "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n",
    )
    .proc_file(
        "net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
    )
    .vfio_loaded();
    h.write(dir).unwrap()
}

fn config(force: bool) -> vfioctl::config::Config {
    let text = format!(
        "version = 1\n\n[[device]]\nname = \"disk\"\naddress = \"{NVME}\"\nforce = {force}\n\n\
         [[device]]\nname = \"nic\"\naddress = \"{NIC}\"\nforce = {force}\n"
    );
    vfioctl::config::parse_str(&text, Path::new("t.toml")).unwrap()
}

/// Makes a `/proc` file unreadable (a directory in its place: reading it fails with EISDIR).
fn unreadable(roots: &Roots, rel: &str) {
    let p = roots.proc.join(rel);
    let _ = fs::remove_file(&p);
    fs::create_dir_all(&p).unwrap();
}

fn in_use_entries(p: &plan::Plan) -> Vec<String> {
    p.problems
        .iter()
        .filter(|p| p.kind == ProblemKind::InUse)
        .filter_map(|p| p.entry.clone())
        .collect()
}

#[test]
fn readable_evidence_refuses_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let roots = host(dir.path());
    let p = plan::plan(&config(false), &scan(&roots).unwrap());
    assert_eq!(in_use_entries(&p), vec!["disk", "nic"]);
    assert!(p.actions.is_empty());
}

#[test]
fn unreadable_mounts_count_as_cannot_tell() {
    let dir = tempfile::tempdir().unwrap();
    let roots = host(dir.path());
    unreadable(&roots, "self/mountinfo");
    unreadable(&roots, "self/mounts");
    let snap = scan(&roots).unwrap();
    let p = plan::plan(&config(false), &snap);
    // Before: the root NVMe was planned (nothing said it was mounted).
    assert!(in_use_entries(&p).contains(&"disk".to_string()), "{p:#?}");
    assert!(
        !p.actions
            .iter()
            .any(|s| s.action.device() == Some(NVME.parse().unwrap())),
        "{:#?}",
        p.actions
    );
    let text = render::text(&p);
    assert!(
        text.contains("cannot tell whether the host uses it"),
        "{text}"
    );
    assert!(text.contains("mountinfo"), "{text}");
    // The scanner's warnings are in the plan, text and JSON.
    assert!(
        text.contains("warning: ") && text.contains("self/mountinfo"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&render::json(&p)).unwrap();
    let disk = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["entry"] == "disk")
        .unwrap();
    assert_eq!(disk["kind"], "in-use");
    assert!(disk["cannot_tell"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("{NVME}: ")));
    assert!(json["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["path"].as_str().unwrap().ends_with("self/mountinfo")));
    // force = true takes it, with a note.
    let forced = plan::plan(&config(true), &snap);
    assert!(!in_use_entries(&forced).contains(&"disk".to_string()));
    assert!(forced.notes.iter().any(|n| n.contains("cannot tell")));
}

#[test]
fn unreadable_routes_count_as_cannot_tell_for_an_up_interface() {
    let dir = tempfile::tempdir().unwrap();
    let roots = host(dir.path());
    unreadable(&roots, "net/route");
    let p = plan::plan(&config(false), &scan(&roots).unwrap());
    assert!(in_use_entries(&p).contains(&"nic".to_string()), "{p:#?}");
    let text = render::text(&p);
    assert!(text.contains("net/route cannot be read"), "{text}");
    assert!(text.contains("eth0"), "{text}");
}

#[test]
fn a_root_that_cannot_be_traced_makes_storage_cannot_tell() {
    let dir = tempfile::tempdir().unwrap();
    let roots = host(dir.path());
    // Nothing is mounted on / from a PCI disk, and root=UUID has no /dev/disk/by-uuid link.
    fs::write(roots.proc.join("self/mountinfo"), "").unwrap();
    fs::write(roots.proc.join("cmdline"), "root=UUID=0b1c ro\n").unwrap();
    let snap = scan(&roots).unwrap();
    let nvme = snap.device(NVME.parse().unwrap()).unwrap();
    assert!(
        nvme.usage.unknown[0].contains("root=UUID=0b1c"),
        "{:?}",
        nvme.usage
    );
    // The NIC is no storage controller: not affected by root=.
    let nic = snap.device(NIC.parse().unwrap()).unwrap();
    assert!(nic.usage.unknown.is_empty(), "{:?}", nic.usage);
    // Traced by name: the NVMe holds the root filesystem.
    fs::write(roots.proc.join("cmdline"), "root=/dev/nvme0n1p1 ro\n").unwrap();
    let snap = scan(&roots).unwrap();
    let nvme = snap.device(NVME.parse().unwrap()).unwrap();
    assert_eq!(
        nvme.usage.root_device.as_deref(),
        Some("root=/dev/nvme0n1p1")
    );
    assert!(nvme.usage.unknown.is_empty());
    let p = plan::plan(&config(false), &snap);
    assert!(render::text(&p).contains("it holds the root filesystem"));
}
