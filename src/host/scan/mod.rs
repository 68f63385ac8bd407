//! The read-only host scanner: fills a [`Snapshot`] from sysfs, `/dev` and `/proc` under the
//! given [`Roots`], reading files directly (no forking), resolving links rather than
//! counting `../`.
//!
//! One bad file never fails a scan: it becomes a [`ScanWarning`](crate::host::ScanWarning) with its path and reason.
//! Only an unusable sysfs root is an error. Each part of the host has its own module:
//! [`pci`] functions, [`groups`] IOMMU groups and units, [`vfio`] the VFIO layer, [`net`] and
//! [`block`] what the host uses each function for.

pub mod block;
pub mod closure;
pub mod groups;
pub mod net;
pub mod pci;
pub mod read;
pub mod usage;
pub mod vfio;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::host::snapshot::{Snapshot, SNAPSHOT_FORMAT};
use crate::host::Roots;
use crate::pci::PciAddress;

use read::{Need, Reader};

/// Why a scan could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("sysfs root {path} is not usable: {source} (check --sysfs-root)")]
    SysfsRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "sysfs root {path} has no bus/pci/devices: it is not a sysfs tree, or the kernel has no \
         PCI support (check --sysfs-root)"
    )]
    NoPciBus { path: PathBuf },
}

/// Scans the host under `roots` into a snapshot.
pub fn scan(roots: &Roots) -> Result<Snapshot, ScanError> {
    scan_parts(roots, None)
}

/// Scans only the closure of `seeds` (see [`crate::host::partial`]): the same snapshot as
/// [`scan`] followed by [`crate::host::partial::restrict`], for a fraction of the reads. A
/// seed that is not present contributes nothing.
pub fn scan_closure(roots: &Roots, seeds: &[PciAddress]) -> Result<Snapshot, ScanError> {
    scan_parts(roots, Some(seeds))
}

fn scan_parts(roots: &Roots, seeds: Option<&[PciAddress]>) -> Result<Snapshot, ScanError> {
    let sysfs = std::fs::canonicalize(&roots.sysfs).map_err(|source| ScanError::SysfsRoot {
        path: roots.sysfs.clone(),
        source,
    })?;
    let pci_devices = sysfs.join("bus/pci/devices");
    match std::fs::metadata(&pci_devices) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ScanError::NoPciBus {
                path: roots.sysfs.clone(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ScanError::NoPciBus {
                path: roots.sysfs.clone(),
            })
        }
        Err(source) => {
            return Err(ScanError::SysfsRoot {
                path: pci_devices,
                source,
            })
        }
    }
    let roots = Roots {
        sysfs,
        ..roots.clone()
    };
    let mut r = Reader::default();

    let covers = seeds.map(|seeds| closure::read(&mut r, &roots, &pci_devices, seeds));
    let mut devices =
        pci::scan_functions(&mut r, &pci_devices, covers.as_ref().map(|c| &c.functions));
    let mut groups = groups::scan_groups(
        &mut r,
        &roots.iommu_groups(),
        covers.as_ref().map(|c| &c.groups),
    );
    let iommus = groups::scan_units(&mut r, &roots.iommu_class());
    let (vfio, nodes) = vfio::scan_vfio(&mut r, &roots);
    for g in &mut groups {
        g.node = nodes.get(&g.id).cloned();
    }

    let index: BTreeMap<PciAddress, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.address, i))
        .collect();
    for unit in &iommus {
        for a in &unit.devices {
            if let Some(&i) = index.get(a) {
                devices[i].iommu.get_or_insert_with(|| unit.name.clone());
            }
        }
    }
    for g in &groups {
        for a in &g.devices {
            match index.get(a) {
                Some(&i) if devices[i].iommu_group != Some(g.id) => r.warn(
                    &roots.iommu_groups().join(g.id.to_string()).join("devices"),
                    format!(
                        "lists {a}, whose iommu_group link says {}",
                        devices[i]
                            .iommu_group
                            .map_or("no group".to_string(), |x| x.to_string())
                    ),
                ),
                _ => {}
            }
        }
    }

    let proc_net = net::read_proc_net(&mut r, &roots.proc);
    for (f, iface) in net::scan_interfaces(
        &mut r,
        &roots.sysfs.join("class/net"),
        &proc_net,
        covers.as_ref().map(|c| &c.functions),
    ) {
        if let Some(&i) = index.get(&f) {
            devices[i].usage.interfaces.push(iface);
        }
    }
    let mounts = block::read_mounts(&mut r, &roots.proc);
    for (f, disk) in block::scan_block(
        &mut r,
        &roots.sysfs.join("class/block"),
        &mounts,
        covers.as_ref().map(|c| &c.functions),
    ) {
        if let Some(&i) = index.get(&f) {
            devices[i].usage.block_devices.push(disk);
        }
    }

    let mut pci_drivers: Vec<String> = r
        .list(&roots.pci_drivers(), Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect();
    pci_drivers.sort();
    let kernel = r.text(&roots.proc.join("sys/kernel/osrelease"), Need::Optional);
    let cmdline = r.text(&roots.proc.join("cmdline"), Need::Optional);

    let accounts = crate::host::accounts::files::scan_accounts(&roots.proc, &mut r);
    let mut snap = Snapshot {
        format: SNAPSHOT_FORMAT,
        kernel,
        cmdline,
        devices,
        groups,
        iommus,
        pci_drivers,
        vfio,
        accounts,
        warnings: Vec::new(),
        covers: covers.map(|c| c.functions),
    };
    snap.normalize();
    snap.warnings = r.warnings;
    snap.warnings
        .sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
    Ok(snap)
}
