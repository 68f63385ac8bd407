//! `[[user]]` ownership of VFIO device cdevs (`/dev/vfio/devices/vfioN`) on a kernel with
//! iommufd: planned with the group node (the node step sets both), applied through the `Host`
//! seam, re-resolved on every pass (the number changes on rebind), undone by rollback; and
//! `/dev/iommu` is never changed, only noted when the user cannot open it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use vfioctl::apply::{self, rollback, Options};
use vfioctl::config::model::{Origin, UserRef, UserSpec};
use vfioctl::host::{DeviceCdev, NodeInfo, Snapshot};
use vfioctl::kernel::simulated::{fixtures::vm_layout, SimKernel};
use vfioctl::kernel::Host;
use vfioctl::plan::{self, Action, Mode, Ownership};

const NVME: &str = "0000:01:00.0";

fn opts(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("state"), dir.join("run"));
    o.lock_timeout = Duration::from_millis(100);
    o
}

fn node(path: &str, uid: u32, mode: u32) -> NodeInfo {
    NodeInfo {
        path: path.to_string(),
        uid,
        gid: 0,
        mode,
    }
}

/// The VM layout on a kernel with iommufd and device cdevs.
fn cdev_host() -> Snapshot {
    let mut s = vm_layout();
    s.vfio.iommufd = true;
    s.vfio.iommufd_node = Some(node("/dev/iommu", 0, 0o660));
    s
}

fn nvme_for_uid_1000() -> vfioctl::config::Config {
    let mut cfg = config(vec![by_address("nvme", NVME)]);
    cfg.users.push(UserSpec {
        user: UserRef::Uid(1000),
        group: None,
        mode: 0o600,
        devices: vec!["nvme".to_string()],
        memlock: None,
        origin: Origin::default(),
    });
    cfg
}

fn cdev_of(k: &SimKernel, a: &str) -> Option<DeviceCdev> {
    k.snapshot().unwrap().cdev(addr(a)).cloned()
}

fn owner_of(c: &DeviceCdev) -> (u32, u32) {
    let n = c.node.as_ref().unwrap();
    (n.uid, n.mode)
}

#[test]
fn a_users_device_cdev_gets_its_owner_and_a_rerun_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&cdev_host());
    let cfg = nvme_for_uid_1000();
    let out = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    assert!(out.verification.unwrap().converged());
    let c = cdev_of(&k, NVME).expect("nvme on vfio-pci has a cdev");
    assert_eq!(c.name, "vfio0");
    assert_eq!(owner_of(&c), (1000, 0o600));
    assert_eq!(k.node_owner(8).unwrap().unwrap().uid, 1000);
    // /dev/iommu is not touched.
    assert_eq!(
        k.snapshot().unwrap().vfio.iommufd_node,
        Some(node("/dev/iommu", 0, 0o660))
    );
    let writes = k.call_count();
    let again = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    assert!(again.plan.is_empty(), "{}", plan::render::text(&again.plan));
    assert_eq!(k.call_count(), writes);
}

#[test]
fn a_rebind_gives_a_new_cdev_number_and_the_next_pass_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    let k = SimKernel::from_snapshot(&cdev_host());
    let cfg = nvme_for_uid_1000();
    apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    assert_eq!(cdev_of(&k, NVME).unwrap().name, "vfio0");
    // Someone rebinds it while another function took vfio0 meanwhile.
    k.unbind(addr(NVME)).unwrap();
    k.set_driver_override(addr("0000:00:05.0"), Some("vfio-pci"))
        .unwrap();
    k.bind(addr("0000:00:05.0"), "vfio-pci").unwrap();
    k.bind(addr(NVME), "vfio-pci").unwrap();
    let c = cdev_of(&k, NVME).unwrap();
    assert_eq!(c.name, "vfio1");
    assert_eq!(owner_of(&c), (0, 0o600));

    let out = apply::reconcile(&k, &cfg, &opts(dir.path())).unwrap();
    assert!(out
        .plan
        .actions
        .iter()
        .any(|s| matches!(s.action, Action::SetNodeOwner { group: Some(8), .. })));
    assert_eq!(owner_of(&cdev_of(&k, NVME).unwrap()), (1000, 0o600));
    // The other function's cdev is not the user's.
    assert_eq!(owner_of(&cdev_of(&k, "0000:00:05.0").unwrap()), (0, 0o600));
}

#[test]
fn rollback_gives_the_host_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let before = cdev_host();
    let k = SimKernel::from_snapshot(&before);
    apply::reconcile(&k, &nvme_for_uid_1000(), &opts(dir.path())).unwrap();
    assert!(cdev_of(&k, NVME).is_some());
    let o = opts(dir.path());
    let (out, _) = rollback::rollback(&k, &o.state_dir, &o.run_dir, o.lock_timeout, false).unwrap();
    assert!(out.report.complete(), "{:?}", out.report.lines());
    assert!(cdev_of(&k, NVME).is_none());
    assert_eq!(
        k.snapshot().unwrap(),
        SimKernel::from_snapshot(&before).snapshot().unwrap()
    );
}

/// The VM layout with the NVMe already on vfio-pci, its group node already the user's, and its
/// cdev owned by `cdev_owner`.
fn bound_host(cdev_owner: Option<(u32, u32)>) -> Snapshot {
    let mut s = cdev_host();
    for d in &mut s.devices {
        if d.address == addr(NVME) {
            d.driver = Some("vfio-pci".into());
            d.driver_override = Some("vfio-pci".into());
            d.vfio_cdev = Some(DeviceCdev {
                name: "vfio3".into(),
                path: "/dev/vfio/devices/vfio3".into(),
                major: 237,
                minor: 3,
                node: cdev_owner.map(|(uid, mode)| node("/dev/vfio/devices/vfio3", uid, mode)),
            });
        }
    }
    for g in &mut s.groups {
        if g.id == 8 {
            g.node = Some(node("/dev/vfio/8", 1000, 0o600));
        }
    }
    s
}

#[test]
fn the_plan_sets_a_cdev_whose_owner_is_wrong_even_when_the_group_node_is_right() {
    let cfg = nvme_for_uid_1000();
    let p = plan::plan(&cfg, &bound_host(Some((0, 0o600))));
    let steps: Vec<&Action> = p.actions.iter().map(|s| &s.action).collect();
    assert_eq!(steps.len(), 1, "{}", plan::render::text(&p));
    match steps[0] {
        Action::SetNodeOwner { group, to, .. } => {
            assert_eq!(*group, Some(8));
            assert_eq!(
                *to,
                Ownership {
                    uid: 1000,
                    gid: 0,
                    mode: Mode(0o600)
                }
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(plan::render::text(&p).contains("cdevs"));
    // Right already: nothing to do.
    assert!(plan::plan(&cfg, &bound_host(Some((1000, 0o600)))).is_empty());
    // The same host on a kernel without cdevs: nothing about cdevs either.
    let mut legacy = bound_host(None);
    legacy.vfio.iommufd = false;
    legacy.vfio.iommufd_node = None;
    for d in &mut legacy.devices {
        d.vfio_cdev = None;
    }
    assert!(plan::plan(&cfg, &legacy).is_empty());
}

#[test]
fn dev_iommu_closed_to_the_user_is_noted_never_changed() {
    let cfg = nvme_for_uid_1000();
    let p = plan::plan(&cfg, &cdev_host());
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("/dev/iommu") && n.contains("add the user to group 0")),
        "{:?}",
        p.notes
    );
    let note = p.notes.iter().find(|n| n.contains("/dev/iommu")).unwrap();
    assert!(!note.contains("  "), "no runs of spaces: {note:?}");
    assert!(!note.contains('\n'), "{note:?}");
    assert!(
        note.contains("mode 0660) is not open to it")
            && note.contains("`vfioctl iommufd open`")
            && note.contains("`vfioctl domain open`"),
        "{note}"
    );
    assert!(p.actions.iter().all(|s| match &s.action {
        Action::SetNodeOwner { device, .. } => *device == addr(NVME),
        _ => true,
    }));
    // Open to everyone in mode (never done by vfioctl, but if the admin did it): no note.
    let mut open = cdev_host();
    open.vfio.iommufd_node = Some(node("/dev/iommu", 0, 0o666));
    assert!(!plan::plan(&cfg, &open)
        .notes
        .iter()
        .any(|n| n.contains("/dev/iommu")));
    // A legacy kernel: no note.
    assert!(!plan::plan(&cfg, &vm_layout())
        .notes
        .iter()
        .any(|n| n.contains("/dev/iommu")));
}

#[test]
fn a_dry_run_of_a_captured_host_plans_the_cdevs() {
    // A snapshot round trip keeps what the plan needs.
    let host = bound_host(Some((0, 0o600)));
    let text = vfioctl::host::snapshot_json(&host);
    let loaded: Snapshot = serde_json::from_str(&text).unwrap();
    let p = plan::plan(&nvme_for_uid_1000(), &loaded);
    assert_eq!(p.actions.len(), 1);
    // The pure model converges: re-planning after it is empty.
    let after = plan::simulate(&loaded, &p);
    assert!(plan::plan(&nvme_for_uid_1000(), &after).is_empty());
    // And from scratch: bind, then the node step, then nothing.
    let fresh = cdev_host();
    let p = plan::plan(&nvme_for_uid_1000(), &fresh);
    let after = plan::simulate(&fresh, &p);
    assert_eq!(
        owner_of(after.cdev(addr(NVME)).unwrap()),
        (1000, 0o600),
        "{}",
        plan::render::text(&p)
    );
    assert!(plan::plan(&nvme_for_uid_1000(), &after).is_empty());
}

#[test]
fn the_linux_host_sets_the_group_node_and_its_members_cdevs_on_a_fake_tree() {
    use std::os::unix::fs::MetadataExt;
    use vfioctl::kernel::linux::{LinuxHost, Timeouts};
    use vfioctl::kernel::NodeOwner;
    let dir = tempfile::tempdir().unwrap();
    let mut h = vfioctl::fixtures::vm::q35();
    h.vfio_loaded()
        .with_cdevs()
        .group_node(5, 0o600)
        .group_node(8, 0o600);
    for f in &mut h.functions {
        if (f.address.bus == 0 && f.address.device == 5) || f.address == addr(NVME) {
            f.driver = Some("vfio-pci".into());
        }
    }
    let roots = h.write(dir.path()).unwrap();
    let numbers = h.cdev_numbers();
    let host = LinuxHost::new(roots.clone(), Timeouts::default());
    // Owned by whoever runs the test (no root needed); the mode is what changes.
    let owner = NodeOwner {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mode: 0o640,
    };
    host.set_node_owner(5, owner, Duration::from_secs(1))
        .unwrap();
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(roots.group_node(5)), 0o640);
    for a in ["0000:00:05.0", "0000:00:05.1"] {
        let n = numbers[&addr(a)];
        assert_eq!(mode(roots.device_cdev(&format!("vfio{n}"))), 0o640, "{a}");
    }
    // Another group's node and cdev stay as they were.
    assert_eq!(mode(roots.group_node(8)), 0o600);
    let nvme = numbers[&addr(NVME)];
    assert_eq!(mode(roots.device_cdev(&format!("vfio{nvme}"))), 0o600);
}

/// Linux 6.1-6.5 (Debian bookworm's kernel) give a vfio-bound function a `vfio-dev/vfioN`
/// class entry but no character device: no `dev` file, no `/dev/vfio/devices/vfioN`. That is
/// no cdev: the scan reports none and warns about nothing, and setting the group node's owner
/// does not wait for a node devtmpfs will never create (it waited 5 s and failed the pass).
#[test]
fn a_class_entry_without_a_dev_file_is_no_cdev() {
    use vfioctl::kernel::linux::{LinuxHost, Timeouts};
    use vfioctl::kernel::NodeOwner;
    let dir = tempfile::tempdir().unwrap();
    let mut h = vfioctl::fixtures::vm::q35();
    h.vfio_loaded().with_cdevs().group_node(5, 0o600);
    for f in &mut h.functions {
        if f.address.bus == 0 && f.address.device == 5 {
            f.driver = Some("vfio-pci".into());
        }
    }
    let roots = h.write(dir.path()).unwrap();
    // Make it the 6.1 shape: keep the class entries, drop their dev files and the nodes.
    for (a, n) in h.cdev_numbers() {
        let entry = roots.pci_device(&a).join(format!("vfio-dev/vfio{n}"));
        std::fs::remove_file(entry.join("dev")).unwrap();
        let _ = std::fs::remove_file(roots.device_cdev(&format!("vfio{n}")));
    }
    let snap = vfioctl::host::scan(&roots).unwrap();
    assert!(snap.devices.iter().all(|d| d.vfio_cdev.is_none()));
    assert!(
        !snap
            .warnings
            .iter()
            .any(|w| format!("{w:?}").contains("vfio-dev")),
        "{:?}",
        snap.warnings
    );
    let host = LinuxHost::new(roots.clone(), Timeouts::default());
    let owner = NodeOwner {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mode: 0o640,
    };
    // The old code waited for /dev/vfio/devices/vfioN here and failed.
    host.set_node_owner(5, owner, Duration::from_secs(1))
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(roots.group_node(5)).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o640);
}
