//! The scanner on fake trees with the kernel's real layout (the VM suite's q35 guest and
//! variants), compared with expected data; broken files give warnings, never crashes.

use std::fs;
use std::path::Path;

use serde_json::Value;
use vfioctl::fixtures::{vm, Function};
use vfioctl::host::{self, scan, ScanError};
use vfioctl::pci::PciAddress;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// The snapshot as JSON with the temporary root replaced by `<root>`.
fn normalized(snap: &host::Snapshot, root: &Path) -> Value {
    let text = serde_json::to_string(snap).unwrap();
    let root = serde_json::to_string(&root.display().to_string()).unwrap();
    let root = root.trim_matches('"');
    serde_json::from_str(&text.replace(root, "<root>")).unwrap()
}

/// Compares with `tests/fixtures/NAME`; `UPDATE_EXPECT=1` rewrites it (review the diff!).
fn expect_json(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        fs::write(&path, &pretty).unwrap();
    }
    let expected: Value = serde_json::from_str(
        &fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    assert_eq!(
        &expected,
        actual,
        "scan differs from {}; actual:\n{pretty}",
        path.display()
    );
}

#[test]
fn q35_matches_expected_data() {
    let dir = tempfile::tempdir().unwrap();
    let roots = vm::q35().write(dir.path()).unwrap();
    let snap = scan(&roots).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    expect_json("q35.expected.json", &normalized(&snap, dir.path()));
}

#[test]
fn q35_groups_topology_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let snap = scan(&vm::q35().write(dir.path()).unwrap()).unwrap();

    let ids: Vec<u32> = snap.groups.iter().map(|g| g.id).collect();
    assert_eq!(ids, (0..=8).collect::<Vec<_>>());
    let g4 = snap.group(4).unwrap();
    assert_eq!(
        g4.devices,
        vec![addr("00:04.0"), addr("02:01.0"), addr("02:02.0")]
    );
    let v4 = snap.viability(4).unwrap();
    assert!(!v4.viable);
    assert_eq!(
        v4.blockers,
        vec![
            (addr("02:01.0"), "e1000".to_string()),
            (addr("02:02.0"), "virtio-pci".to_string())
        ]
    );
    // Unbound multifunction slot: viable. Root port on pcieport: viable.
    assert!(snap.viability(5).unwrap().viable);
    assert!(snap.viability(3).unwrap().viable);
    // Chipset group carries the direct-relaxable region first (sorted by start).
    let g7 = snap.group(7).unwrap();
    assert_eq!(g7.reserved_regions.len(), 2);
    assert_eq!(g7.reserved_regions[0].kind, "direct-relaxable");
    assert_eq!(g7.reserved_regions[0].end, 0xff_ffff);
    assert_eq!(g7.reserved_regions[1].start, 0xfee0_0000);

    // Topology from canonical paths, whatever the link depth.
    let e1000 = snap.device(addr("02:01.0")).unwrap();
    assert_eq!(e1000.parent, Some(addr("00:04.0")));
    assert_eq!(e1000.iommu_group, Some(4));
    assert_eq!(e1000.iommu.as_deref(), Some("dmar0"));
    assert!(snap.device(addr("00:04.0")).unwrap().bridge);
    assert!(
        !snap.device(addr("00:1f.0")).unwrap().bridge,
        "ISA bridge is no bridge"
    );
    assert!(
        !snap.device(addr("00:00.0")).unwrap().bridge,
        "host bridge is no bridge"
    );
    assert_eq!(
        snap.device(addr("01:00.0")).unwrap().parent,
        Some(addr("00:03.0"))
    );

    // virtio-net: the interface hangs off virtio0, attributed to the PCI function.
    let vnet = snap.device(addr("00:02.0")).unwrap();
    assert_eq!(vnet.usage.interfaces.len(), 1);
    assert_eq!(vnet.usage.interfaces[0].name, "eth1");
    assert!(!vnet.usage.in_use());
    let e1000e = snap.device(addr("00:01.0")).unwrap();
    let eth0 = &e1000e.usage.interfaces[0];
    assert!(eth0.up);
    assert_eq!(eth0.addresses, vec!["10.0.2.15/24", "fd00::15/64"]);
    assert_eq!(eth0.routes, 3);
    assert!(e1000e.usage.in_use());
    // NVMe namespace under nvme/nvme0, partition mounted.
    let nvme = snap.device(addr("01:00.0")).unwrap();
    assert_eq!(nvme.usage.block_devices.len(), 1);
    assert_eq!(nvme.usage.block_devices[0].name, "nvme0n1");
    assert_eq!(nvme.usage.block_devices[0].mounts, vec!["/mnt/data"]);
    assert_eq!(
        snap.device(addr("02:02.0")).unwrap().usage.interfaces[0].name,
        "eth2"
    );
    assert_eq!(snap.kernel.as_deref(), Some("6.1.0-56-amd64"));
}

#[test]
fn device_on_vfio_pci_with_group_node() {
    let mut h = vm::q35();
    for f in &mut h.functions {
        if f.address == addr("02:01.0") {
            f.driver = Some("vfio-pci".into());
            f.driver_override = Some("vfio-pci".into());
        }
    }
    h.vfio_loaded().group_node(4, 0o600);
    let dir = tempfile::tempdir().unwrap();
    let snap = scan(&h.write(dir.path()).unwrap()).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    let d = snap.device(addr("02:01.0")).unwrap();
    assert_eq!(d.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(d.driver_override.as_deref(), Some("vfio-pci"));
    // Only the virtio sibling blocks now.
    let v = snap.viability(4).unwrap();
    assert_eq!(
        v.blockers,
        vec![(addr("02:02.0"), "virtio-pci".to_string())]
    );
    let node = snap.group(4).unwrap().node.clone().unwrap();
    assert_eq!(node.mode, 0o600);
    assert_eq!(node.uid, nix::unistd::getuid().as_raw());
    assert!(node.path.ends_with("dev/vfio/4"));
    assert!(snap.group(5).unwrap().node.is_none());
    assert_eq!(
        snap.vfio.modules,
        vec!["vfio", "vfio_iommu_type1", "vfio_pci", "vfio_pci_core"]
    );
    assert!(snap.vfio.container_node);
    assert_eq!(snap.vfio.dma_entry_limit, Some(65535));
    assert!(!snap.vfio.iommufd);
    assert!(snap.pci_drivers.contains(&"vfio-pci".to_string()));
}

#[test]
fn sriov_and_boot_vga() {
    let mut h = vfioctl::fixtures::FakeHost::new();
    let pf = addr("0000:05:00.0");
    let vfs: Vec<PciAddress> = (0..3u16)
        .map(|i| PciAddress::from_routing_id(0, pf.routing_id() + 0x80 + 2 * i))
        .collect();
    h.add(
        Function::new("0000:00:01.0", 0x8086, 0x1901, 0x060400)
            .driver("pcieport")
            .group(1),
    )
    .add(
        Function::new("0000:05:00.0", 0x8086, 0x1572, 0x020000)
            .driver("i40e")
            .group(2)
            .behind("0000:00:01.0")
            .sriov(vfioctl::fixtures::SriovSpec {
                total_vfs: 64,
                offset: 0x80,
                stride: 2,
                vf_device: 0x154c,
                vfs: vfs.clone(),
            }),
    );
    for (i, vf) in vfs.iter().enumerate() {
        h.add(
            Function::new(&vf.to_string(), 0x8086, 0x154c, 0x020000)
                .group(3 + i as u32)
                .behind("0000:00:01.0")
                .physfn(pf),
        );
    }
    h.add(
        Function::new("0000:00:02.0", 0x1234, 0x1111, 0x030000)
            .driver("bochs-drm")
            .group(9)
            .boot_vga(true),
    );
    let dir = tempfile::tempdir().unwrap();
    let snap = scan(&h.write(dir.path()).unwrap()).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    let s = snap.device(pf).unwrap().sriov.clone().unwrap();
    assert_eq!(
        (s.total_vfs, s.num_vfs, s.offset, s.stride),
        (64, 3, 0x80, 2)
    );
    assert_eq!(s.vf_device.unwrap().to_string(), "154c");
    assert_eq!(s.vfs, vfs);
    for (i, vf) in vfs.iter().enumerate() {
        assert_eq!(s.vf_address(pf, i as u32), *vf);
        assert_eq!(snap.device(*vf).unwrap().physfn, Some(pf));
    }
    assert_eq!(vfs[1].to_string(), "0000:05:10.2");
    let vga = snap.device(addr("00:02.0")).unwrap();
    assert_eq!(vga.boot_vga, Some(true));
    assert!(vga.usage.boot_console);
    assert_eq!(snap.device(pf).unwrap().boot_vga, None);
}

#[test]
fn broken_files_become_precise_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let roots = vm::q35().write(dir.path()).unwrap();
    let dev = |a: &str| fs::canonicalize(roots.sysfs.join("bus/pci/devices").join(a)).unwrap();
    // Unreadable identity: the function is skipped, the rest is scanned.
    fs::remove_file(dev("0000:00:05.1").join("vendor")).unwrap();
    // An attribute that cannot be read (a directory where a file should be).
    let ov = dev("0000:00:01.0").join("driver_override");
    fs::remove_file(&ov).unwrap();
    fs::create_dir(&ov).unwrap();
    // Garbage values.
    fs::write(dev("0000:00:02.0").join("class"), "banana\n").unwrap();
    fs::write(
        roots.sysfs.join("kernel/iommu_groups/7/reserved_regions"),
        "0x0 0xffffff direct-relaxable\nnonsense\n",
    )
    .unwrap();
    // A group whose devices/ directory vanished.
    fs::remove_dir_all(roots.sysfs.join("kernel/iommu_groups/6/devices")).unwrap();
    // A proc file replaced by a directory.
    fs::remove_file(roots.proc.join("net/if_inet6")).unwrap();
    fs::create_dir(roots.proc.join("net/if_inet6")).unwrap();

    let snap = scan(&roots).unwrap();
    let w: Vec<(String, String)> = snap
        .warnings
        .iter()
        .map(|w| {
            (
                w.path.replace(&dir.path().display().to_string(), "<root>"),
                w.message.clone(),
            )
        })
        .collect();
    let has = |path_end: &str, msg: &str| {
        assert!(
            w.iter()
                .any(|(p, m)| p.ends_with(path_end) && m.contains(msg)),
            "no warning for {path_end} containing `{msg}` in {w:#?}"
        )
    };
    has("0000:00:05.1/vendor", "cannot read");
    has("0000:00:05.1", "function skipped");
    has("0000:00:01.0/driver_override", "cannot read");
    has("0000:00:02.0/class", "unexpected value `banana`");
    has(
        "kernel/iommu_groups/7/reserved_regions",
        "line 2: `nonsense`",
    );
    has("kernel/iommu_groups/6/devices", "cannot list");
    has("proc/net/if_inet6", "cannot read");
    assert!(snap.device(addr("00:05.1")).is_none());
    assert!(snap.device(addr("00:02.0")).is_none());
    assert!(snap.device(addr("00:05.0")).is_some());
    assert_eq!(snap.device(addr("00:01.0")).unwrap().driver_override, None);
    assert_eq!(snap.group(7).unwrap().reserved_regions.len(), 1);
    assert_eq!(snap.devices.len(), 12);
    // Warnings name the real file under the fixture root.
    assert!(w.iter().all(|(p, _)| p.starts_with("<root>/")), "{w:#?}");
}

#[test]
fn no_iommu_tree_scans_without_groups() {
    let mut h = vm::q35();
    for f in &mut h.functions {
        f.group = None;
        f.iommu = None;
    }
    h.groups.clear();
    let dir = tempfile::tempdir().unwrap();
    let roots = h.write(dir.path()).unwrap();
    // The kernel keeps both directories, empty.
    assert!(roots.sysfs.join("kernel/iommu_groups").is_dir());
    assert!(roots.sysfs.join("class/iommu").is_dir());
    let snap = scan(&roots).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    assert!(!snap.iommu_active());
    assert_eq!(snap.devices.len(), 14);
    assert!(snap.devices.iter().all(|d| d.iommu_group.is_none()));
    let text = host::status::render(&snap);
    assert!(text.contains("No IOMMU groups"), "{text}");
    assert!(text.contains("intel_iommu=on"), "{text}");
    assert!(text.contains("0000:02:01.0"), "{text}");
}

#[test]
fn unusable_sysfs_root_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = host::Roots::under(&dir.path().join("nothing"));
    assert!(matches!(scan(&missing), Err(ScanError::SysfsRoot { .. })));
    fs::create_dir_all(dir.path().join("empty/sys")).unwrap();
    let empty = host::Roots::under(&dir.path().join("empty"));
    let e = scan(&empty).unwrap_err();
    assert!(matches!(e, ScanError::NoPciBus { .. }));
    assert!(e.to_string().contains("--sysfs-root"), "{e}");
}
