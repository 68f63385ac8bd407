//! The VFIO layer: loaded vfio modules (`/sys/module/*vfio*`), `dma_entry_limit`, unsafe
//! no-IOMMU mode, `/dev/vfio/vfio`, the group nodes `/dev/vfio/N` (owner, group, mode),
//! `/dev/iommu` (with its owner and mode) and `/dev/vfio/devices/*`, and each vfio-bound
//! function's device cdev (`<function>/vfio-dev/vfioN`, its `major:minor`, its node).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::host::snapshot::{DeviceCdev, NodeInfo, PciDevice, VfioState};
use crate::host::Roots;

use super::read::{Need, Reader};

/// The VFIO state and the group nodes found in `/dev/vfio`, by group id.
pub fn scan_vfio(r: &mut Reader, roots: &Roots) -> (VfioState, BTreeMap<u32, NodeInfo>) {
    let module_dir = roots.sysfs.join("module");
    let mut modules: Vec<String> = r
        .list(&module_dir, Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.contains("vfio"))
        .collect();
    modules.sort();
    let dma_entry_limit = r.decimal(
        &module_dir.join("vfio_iommu_type1/parameters/dma_entry_limit"),
        Need::Optional,
        "count",
    );
    let unsafe_noiommu = r
        .text(
            &module_dir.join("vfio/parameters/enable_unsafe_noiommu_mode"),
            Need::Optional,
        )
        .is_some_and(|s| s == "Y" || s == "1");

    let dev_vfio = roots.dev_vfio();
    let mut state = VfioState {
        modules,
        dma_entry_limit,
        noiommu: unsafe_noiommu,
        iommufd: exists(r, &roots.iommufd()),
        ..VfioState::default()
    };
    if state.iommufd {
        state.iommufd_node = node_info(r, &roots.iommufd());
    }
    let mut nodes = BTreeMap::new();
    let mut names: Vec<String> = r
        .list(&dev_vfio, Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let path = dev_vfio.join(&name);
        if name == "vfio" {
            state.container_node = true;
        } else if name == "devices" {
            let mut cdevs: Vec<String> = r
                .list(&path, Need::Optional)
                .into_iter()
                .filter_map(|n| n.into_string().ok())
                .collect();
            cdevs.sort();
            state.device_cdevs = cdevs;
        } else if name.starts_with("noiommu-") {
            state.noiommu = true;
        } else if let Ok(id) = name.parse::<u32>() {
            if let Some(n) = node_info(r, &path) {
                nodes.insert(id, n);
            }
        }
    }
    (state, nodes)
}

fn node_info(r: &mut Reader, path: &Path) -> Option<NodeInfo> {
    match fs::metadata(path) {
        Ok(m) => Some(NodeInfo {
            path: path.display().to_string(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        }),
        Err(e) => {
            r.warn(path, format!("cannot stat: {e}"));
            None
        }
    }
}

/// Fills [`PciDevice::vfio_cdev`] of every function on a vfio driver: the `vfio-dev/vfioN`
/// entry of its sysfs directory, the number in its `dev` file, and the `/dev/vfio/devices`
/// node. A kernel without device cdevs has no `vfio-dev` directory: nothing is filled and
/// nothing is reported.
pub fn attach_cdevs(r: &mut Reader, roots: &Roots, devices: &mut [PciDevice]) {
    for d in devices.iter_mut() {
        if !d.driver.as_deref().is_some_and(crate::host::is_vfio_driver) {
            continue;
        }
        d.vfio_cdev = read_cdev(r, roots, &roots.pci_device(&d.address).join("vfio-dev"));
    }
}

fn read_cdev(r: &mut Reader, roots: &Roots, dir: &Path) -> Option<DeviceCdev> {
    let mut names: Vec<String> = r
        .list(dir, Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| {
            n.strip_prefix("vfio")
                .is_some_and(|k| k.parse::<u32>().is_ok())
        })
        .collect();
    names.sort();
    if names.len() > 1 {
        r.warn(
            dir,
            format!(
                "more than one device cdev ({}); using the first",
                names.join(", ")
            ),
        );
    }
    let name = names.into_iter().next()?;
    let dev_file = dir.join(&name).join("dev");
    // Kernels 6.1-6.5 (and any without CONFIG_VFIO_DEVICE_CDEV) have the `vfio-dev` class
    // entry but no character device: no `dev` file, no cdev, nothing to report.
    if !exists(r, &dev_file) {
        return None;
    }
    let (major, minor) = r.value(&dev_file, Need::Required, "major:minor", |s| {
        let (a, b) = s.split_once(':')?;
        Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
    })?;
    let path = roots.device_cdev(&name);
    let node = if exists(r, &path) {
        let node = node_info(r, &path)?;
        if let Ok(m) = fs::metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if m.file_type().is_char_device() {
                let rdev = m.rdev();
                let (ma, mi) = (nix::libc::major(rdev), nix::libc::minor(rdev));
                if (ma, mi) != (major, minor) {
                    r.warn(
                        &path,
                        format!(
                            "is {ma}:{mi}, but sysfs says {name} is {major}:{minor}: a stale node"
                        ),
                    );
                    return Some(DeviceCdev {
                        path: path.display().to_string(),
                        name,
                        major,
                        minor,
                        node: None,
                    });
                }
            }
        }
        Some(node)
    } else {
        None
    };
    Some(DeviceCdev {
        path: path.display().to_string(),
        name,
        major,
        minor,
        node,
    })
}

fn exists(r: &mut Reader, path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            r.warn(path, format!("cannot stat: {e}"));
            false
        }
    }
}
