//! What a host looks like after a plan, computed without a host: drivers and overrides as the
//! plan sets them, VFs created at the addresses their PF's offset and stride give (each in a new
//! group, like the PF's, unbound), group nodes appearing root:root 0600 when a member goes to a
//! vfio driver and vanishing with the last one. Owns only this pure model; it exists so that
//! "re-planning after a successful apply gives nothing to do" can be tested over generated
//! hosts. (The simulated *kernel*, with its refusals and faults, belongs to apply.)

use crate::host::{is_vfio_driver, IommuGroup, NodeInfo, PciDevice, Snapshot, Usage};
use crate::pci::PciAddress;

use super::action::Action;
use super::Plan;

/// The host `snap` becomes when every step of `plan` succeeds.
pub fn simulate(snap: &Snapshot, plan: &Plan) -> Snapshot {
    let mut s = snap.clone();
    s.normalize();
    for step in &plan.actions {
        apply(&mut s, &step.action);
    }
    s
}

fn device_mut(s: &mut Snapshot, a: PciAddress) -> Option<&mut PciDevice> {
    let i = s.devices.binary_search_by(|d| d.address.cmp(&a)).ok()?;
    s.devices.get_mut(i)
}

fn group_mut(s: &mut Snapshot, g: u32) -> Option<&mut IommuGroup> {
    let i = s.groups.binary_search_by(|x| x.id.cmp(&g)).ok()?;
    s.groups.get_mut(i)
}

/// Gives group `g` its node when a member is on a vfio driver; removes it when none is.
fn refresh_node(s: &mut Snapshot, g: u32) {
    let vfio = s.group(g).is_some_and(|grp| {
        grp.devices.iter().any(|a| {
            s.device(*a)
                .and_then(|d| d.driver.as_deref())
                .is_some_and(is_vfio_driver)
        })
    });
    if let Some(grp) = group_mut(s, g) {
        match (vfio, &grp.node) {
            (true, None) => {
                grp.node = Some(NodeInfo {
                    path: format!("/dev/vfio/{g}"),
                    uid: 0,
                    gid: 0,
                    mode: 0o600,
                })
            }
            (false, Some(_)) => grp.node = None,
            _ => {}
        }
    }
}

/// On a kernel with device cdevs (`/dev/iommu` present), a function on a vfio driver has one
/// (a fresh one, root:root 0600, the lowest free number) and one off it has none.
fn refresh_cdev(s: &mut Snapshot, device: PciAddress) {
    if !s.vfio.iommufd {
        return;
    }
    let used: std::collections::BTreeSet<u32> = s
        .devices
        .iter()
        .filter_map(|d| d.vfio_cdev.as_ref().map(|c| c.minor))
        .collect();
    let Some(d) = device_mut(s, device) else {
        return;
    };
    let on_vfio = d.driver.as_deref().is_some_and(is_vfio_driver);
    match (on_vfio, d.vfio_cdev.is_some()) {
        (true, false) => {
            let n = (0u32..).find(|n| !used.contains(n)).unwrap_or(0);
            let path = format!("/dev/vfio/devices/vfio{n}");
            d.vfio_cdev = Some(crate::host::DeviceCdev {
                name: format!("vfio{n}"),
                path: path.clone(),
                major: 0,
                minor: n,
                node: Some(NodeInfo {
                    path,
                    uid: 0,
                    gid: 0,
                    mode: 0o600,
                }),
            });
        }
        (false, true) => d.vfio_cdev = None,
        _ => {}
    }
}

fn apply(s: &mut Snapshot, action: &Action) {
    match action {
        Action::LoadModule { module, driver } => {
            if !s.pci_drivers.contains(driver) {
                s.pci_drivers.push(driver.clone());
                s.pci_drivers.sort();
            }
            if is_vfio_driver(driver) && !s.vfio.modules.contains(module) {
                s.vfio.modules.push(module.clone());
                s.vfio.modules.sort();
            }
        }
        Action::SetOverride { device, to, .. } => {
            if let Some(d) = device_mut(s, *device) {
                d.driver_override = Some(to.clone());
            }
        }
        Action::ClearOverride { device, .. } => {
            if let Some(d) = device_mut(s, *device) {
                d.driver_override = None;
            }
        }
        Action::Unbind { device, .. } | Action::Bind { device, .. } => {
            let to = match action {
                Action::Bind { driver, .. } => Some(driver.clone()),
                _ => None,
            };
            // A PF leaving its driver loses its VFs: the driver's remove disables SR-IOV.
            if s.device(*device)
                .and_then(|d| d.sriov.as_ref())
                .is_some_and(|sr| sr.num_vfs > 0)
            {
                set_num_vfs(s, *device, 0);
            }
            let Some(d) = device_mut(s, *device) else {
                return;
            };
            d.driver = to;
            // Leaving a driver takes its interfaces and disks with it.
            d.usage = Usage::default();
            let group = d.iommu_group;
            refresh_cdev(s, *device);
            if let Some(g) = group {
                refresh_node(s, g);
            }
        }
        // Which driver the kernel picks is the kernel's business: the pure model cannot know
        // it and leaves the function as it is (unbound, after the unbind before the probe).
        // Either way the release is done: on no vfio driver, with its original override.
        Action::Probe { .. } => {}
        Action::SetNumVfs { device, to, .. } => set_num_vfs(s, *device, *to),
        Action::SetNodeOwner {
            device, group, to, ..
        } => {
            let Some(g) = group.or_else(|| s.device(*device).and_then(|d| d.iommu_group)) else {
                return;
            };
            if let Some(grp) = group_mut(s, g) {
                grp.node = Some(NodeInfo {
                    path: format!("/dev/vfio/{g}"),
                    uid: to.uid,
                    gid: to.gid,
                    mode: to.mode.0,
                });
            }
            // The node step sets the members' device cdevs too.
            for d in s.devices.iter_mut().filter(|d| d.iommu_group == Some(g)) {
                if let Some(c) = d.vfio_cdev.as_mut() {
                    c.node = Some(NodeInfo {
                        path: c.path.clone(),
                        uid: to.uid,
                        gid: to.gid,
                        mode: to.mode.0,
                    });
                }
            }
        }
    }
}

fn set_num_vfs(s: &mut Snapshot, pf: PciAddress, to: u32) {
    let Some(pfdev) = s.device(pf).cloned() else {
        return;
    };
    let Some(sriov) = pfdev.sriov.clone() else {
        return;
    };
    // Remove every existing VF and the groups they leave empty.
    let gone: Vec<PciAddress> = s
        .devices
        .iter()
        .filter(|d| d.physfn == Some(pf) || sriov.vfs.contains(&d.address))
        .map(|d| d.address)
        .collect();
    s.devices.retain(|d| !gone.contains(&d.address));
    for g in &mut s.groups {
        g.devices.retain(|a| !gone.contains(a));
    }
    s.groups.retain(|g| !g.devices.is_empty());
    for u in &mut s.iommus {
        u.devices.retain(|a| !gone.contains(a));
    }

    let pf_group = pfdev.iommu_group.and_then(|g| s.group(g)).cloned();
    let mut next = s.groups.iter().map(|g| g.id + 1).max().unwrap_or(0);
    let mut vfs = Vec::new();
    for i in 0..to {
        let a = sriov.vf_address(pf, i);
        if s.device(a).is_some() {
            continue;
        }
        let group = pf_group.as_ref().map(|pg| {
            let id = next;
            next += 1;
            s.groups.push(IommuGroup {
                id,
                devices: vec![a],
                domain_type: pg.domain_type.clone(),
                reserved_regions: pg.reserved_regions.clone(),
                node: None,
            });
            id
        });
        s.devices.push(PciDevice {
            address: a,
            vendor: pfdev.vendor,
            device: sriov.vf_device.unwrap_or(pfdev.device),
            subsystem_vendor: None,
            subsystem_device: None,
            class: pfdev.class,
            revision: pfdev.revision,
            driver: None,
            driver_override: None,
            iommu_group: group,
            iommu: pfdev.iommu.clone(),
            numa_node: pfdev.numa_node,
            bridge: false,
            parent: pfdev.parent,
            sriov: None,
            physfn: Some(pf),
            boot_vga: None,
            reset_method: pfdev.reset_method.clone(),
            usage: Usage::default(),
            vfio_cdev: None,
        });
        if let Some(unit) = s
            .iommus
            .iter_mut()
            .find(|u| Some(&u.name) == pfdev.iommu.as_ref())
        {
            unit.devices.push(a);
            unit.devices.sort();
        }
        vfs.push(a);
    }
    s.normalize();
    if let Some(d) = device_mut(s, pf) {
        if let Some(sr) = &mut d.sriov {
            sr.num_vfs = to;
            sr.vfs = vfs;
        }
    }
}
