//! The scanner on generated large hosts: every function and group found, SR-IOV, bridges
//! three levels deep, group nodes, no warnings.

use vfioctl::fixtures::synthetic::SyntheticHost;
use vfioctl::host::scan;

#[test]
fn synthetic_host_scans_completely() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SyntheticHost::new(300, 80);
    let described = spec.describe();
    let roots = described.write(dir.path()).unwrap();
    let snap = scan(&roots).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    assert_eq!(snap.devices.len(), 300);
    assert_eq!(snap.groups.len(), 80);
    let members: usize = snap.groups.iter().map(|g| g.devices.len()).sum();
    assert_eq!(members, 300);

    for f in &described.functions {
        let d = snap.device(f.address).expect("function scanned");
        assert_eq!(d.iommu_group, f.group, "{}", f.address);
        assert_eq!(d.parent, f.parent, "{}", f.address);
        assert_eq!(d.driver, f.driver, "{}", f.address);
        assert_eq!(d.physfn, f.physfn, "{}", f.address);
    }
    let pfs: Vec<_> = snap.devices.iter().filter(|d| d.sriov.is_some()).collect();
    assert!(!pfs.is_empty());
    for pf in pfs {
        let s = pf.sriov.as_ref().unwrap();
        assert_eq!(s.vfs.len(), s.num_vfs as usize);
        for (i, vf) in s.vfs.iter().enumerate() {
            assert_eq!(s.vf_address(pf.address, i as u32), *vf);
        }
    }
    // Functions behind a conventional bridge behind a root port: two bridge levels.
    let deep = snap
        .devices
        .iter()
        .find(|d| {
            d.parent
                .and_then(|p| snap.device(p))
                .is_some_and(|p| p.parent.is_some())
        })
        .expect("a function two bridges deep");
    assert!(snap.device(deep.parent.unwrap()).unwrap().bridge);
    // Groups holding a vfio-pci VF have their node.
    for g in &snap.groups {
        let on_vfio = g
            .devices
            .iter()
            .any(|a| snap.device(*a).unwrap().driver.as_deref() == Some("vfio-pci"));
        assert_eq!(g.node.is_some(), on_vfio, "group {}", g.id);
    }
    assert!(snap.devices.iter().any(|d| d.usage.boot_console));
    assert!(snap
        .devices
        .iter()
        .any(|d| !d.usage.block_devices.is_empty()));
    assert!(snap.devices.iter().any(|d| !d.usage.interfaces.is_empty()));
}
