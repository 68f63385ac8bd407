//! The VFIO layer: loaded vfio modules (`/sys/module/*vfio*`), `dma_entry_limit`, unsafe
//! no-IOMMU mode, `/dev/vfio/vfio`, the group nodes `/dev/vfio/N` (owner, group, mode),
//! `/dev/iommu` and `/dev/vfio/devices/*`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use crate::host::snapshot::{NodeInfo, VfioState};
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
        iommufd: exists(r, &roots.dev.join("iommu")),
        ..VfioState::default()
    };
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
            match fs::metadata(&path) {
                Ok(m) => {
                    nodes.insert(
                        id,
                        NodeInfo {
                            path: path.display().to_string(),
                            uid: m.uid(),
                            gid: m.gid(),
                            mode: m.mode() & 0o7777,
                        },
                    );
                }
                Err(e) => r.warn(&path, format!("cannot stat: {e}")),
            }
        }
    }
    (state, nodes)
}

fn exists(r: &mut Reader, path: &std::path::Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            r.warn(path, format!("cannot stat: {e}"));
            false
        }
    }
}
