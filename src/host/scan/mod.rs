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

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use crate::host::snapshot::{PciDevice, Snapshot, SNAPSHOT_FORMAT};
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
    scan_parts(roots, None, true)
}

/// [`scan`] without the host's account table (`/etc/passwd`, `/etc/group` and the memlock
/// limits under `/proc/1/root`), for views that do not show it (`vfioctl status`): read only
/// what the command needs.
pub fn scan_without_accounts(roots: &Roots) -> Result<Snapshot, ScanError> {
    scan_parts(roots, None, false)
}

/// Scans only the closure of `seeds` (see [`crate::host::partial`]): the same snapshot as
/// [`scan`] followed by [`crate::host::partial::restrict`], for a fraction of the reads. A
/// seed that is not present contributes nothing.
pub fn scan_closure(roots: &Roots, seeds: &[PciAddress]) -> Result<Snapshot, ScanError> {
    scan_parts(roots, Some(seeds), true)
}

/// [`scan_closure`] without the host's account table, for passes on the live host (which
/// resolve the accounts a config names through the system, not from the snapshot).
pub fn scan_closure_without_accounts(
    roots: &Roots,
    seeds: &[PciAddress],
) -> Result<Snapshot, ScanError> {
    scan_parts(roots, Some(seeds), false)
}

/// Reads one function as a scan would see it, with what the host uses it for (interfaces,
/// disks and their mounts, the boot console, the root device), for a decision about that
/// function alone ahead of a pass (the early claim). Cheap: a function without a driver has no
/// interfaces or disks, so only its own directory and the command line's root device are read.
/// `None` when the function is not present or its identity cannot be read.
pub fn scan_function(roots: &Roots, address: PciAddress) -> Option<PciDevice> {
    // Links resolve against a canonical sysfs, as in a whole scan.
    let roots = &Roots {
        sysfs: std::fs::canonicalize(&roots.sysfs).ok()?,
        ..roots.clone()
    };
    let mut r = Reader::default();
    let dir = r.resolve(&roots.pci_device(&address), Need::Optional)?;
    let mut device = pci::read_function(&mut r, address, &dir)?;
    vfio::attach_cdevs(&mut r, roots, std::slice::from_mut(&mut device));
    let cmdline = r.text(&roots.proc.join("cmdline"), Need::Optional);
    let only: BTreeSet<PciAddress> = [address].into();
    if device.driver.is_some() {
        fill_usage(
            &mut r,
            roots,
            std::slice::from_mut(&mut device),
            Some(&only),
            cmdline.as_deref(),
        );
    } else {
        root_usage(
            &mut r,
            roots,
            std::slice::from_mut(&mut device),
            cmdline.as_deref(),
        );
    }
    Some(device)
}

/// Fills every device's [`Usage`](crate::host::Usage) (of those in `only`): interfaces and
/// their addresses and routes, disks and their mounts and holders, the root device; and what
/// could not be read, as "cannot tell" ([`crate::host::Usage::unknown`]).
fn fill_usage(
    r: &mut Reader,
    roots: &Roots,
    devices: &mut [PciDevice],
    only: Option<&BTreeSet<PciAddress>>,
    cmdline: Option<&str>,
) {
    let index: BTreeMap<PciAddress, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.address, i))
        .collect();
    let proc_net = net::read_proc_net(r, &roots.proc);
    for (f, iface) in net::scan_interfaces(r, &roots.sysfs.join("class/net"), &proc_net, only) {
        if let Some(&i) = index.get(&f) {
            devices[i].usage.interfaces.push(iface);
        }
    }
    let mounts = block::read_mounts(r, &roots.proc);
    for (f, disk) in block::scan_block(r, &roots.sysfs.join("class/block"), &mounts, only) {
        if let Some(&i) = index.get(&f) {
            devices[i].usage.block_devices.push(disk);
        }
    }
    for d in devices.iter_mut() {
        let up: Vec<&str> = d
            .usage
            .interfaces
            .iter()
            .filter(|i| i.up)
            .map(|i| i.name.as_str())
            .collect();
        if !up.is_empty() && !proc_net.unreadable.is_empty() {
            let why = format!(
                "{} cannot be read, so whether {} {} addresses or routes is not known",
                proc_net.unreadable.join(" and "),
                up.join(", "),
                if up.len() == 1 { "has" } else { "have" }
            );
            d.usage.unknown.push(why);
        }
        if let (Some(why), false) = (&mounts.unreadable, d.usage.block_devices.is_empty()) {
            d.usage.unknown.push(why.clone());
        }
    }
    root_usage(r, roots, devices, cmdline);
}

/// Reads only a function's identity ([`pci::read_identity`]): a handful of small files in
/// its own directory, nothing about interfaces, disks, mounts or `root=`. With
/// [`usage::needs_usage_read`] false, that is everything [`scan_function`] would find the
/// host using it for. `None` when the function is not present or its identity cannot be read.
pub fn identify_function(roots: &Roots, address: PciAddress) -> Option<PciDevice> {
    let mut r = Reader::default();
    pci::read_identity(&mut r, address, &roots.pci_device(&address))
}

/// Marks the functions holding the root device `cmdline`'s `root=` names; when it cannot be
/// traced and no disk is mounted on `/`, every storage controller counts as "cannot tell".
fn root_usage(r: &mut Reader, roots: &Roots, devices: &mut [PciDevice], cmdline: Option<&str>) {
    let Some(arg) = cmdline.and_then(usage::root_arg) else {
        return;
    };
    match usage::trace_root(r, &roots.dev, &roots.sysfs.join("class/block"), arg) {
        usage::RootTrace::Functions(fs) => {
            for d in devices.iter_mut().filter(|d| fs.contains(&d.address)) {
                d.usage.root_device = Some(arg.to_string());
            }
        }
        usage::RootTrace::Untraced(why) => {
            // A root filesystem already mounted from a PCI-backed disk is traced by its mount
            // (then an unbound storage controller is not the one holding it).
            let mounts = block::read_mounts(r, &roots.proc);
            let by_mount = mounts.root_sources().into_iter().any(|(devno, source)| {
                let by_devno = devno.is_some_and(|n| {
                    usage::block_has_function(r, &roots.sysfs.join("dev/block").join(n))
                });
                by_devno
                    || source.is_some_and(|s| {
                        let arg = format!("root={s}");
                        matches!(
                            usage::trace_root(
                                r,
                                &roots.dev,
                                &roots.sysfs.join("class/block"),
                                &arg
                            ),
                            usage::RootTrace::Functions(_)
                        )
                    })
            });
            if by_mount {
                return;
            }
            for d in devices.iter_mut().filter(|d| d.class.is_storage()) {
                d.usage.unknown.push(format!(
                    "the kernel command line's {arg} cannot be traced to a PCI function ({why}), \
                     and this storage controller may hold the root filesystem"
                ));
            }
        }
    }
}

fn scan_parts(
    roots: &Roots,
    seeds: Option<&[PciAddress]>,
    with_accounts: bool,
) -> Result<Snapshot, ScanError> {
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
    vfio::attach_cdevs(&mut r, &roots, &mut devices);
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
    groups::join_members(
        &mut r,
        &pci_devices,
        &roots.iommu_groups(),
        &mut devices,
        &groups,
        covers.as_ref().map(|c| &c.groups),
    );

    let cmdline = r.text(&roots.proc.join("cmdline"), Need::Optional);
    fill_usage(
        &mut r,
        &roots,
        &mut devices,
        covers.as_ref().map(|c| &c.functions),
        cmdline.as_deref(),
    );

    let mut pci_drivers: Vec<String> = r
        .list(&roots.pci_drivers(), Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect();
    pci_drivers.sort();
    let kernel = r.text(&roots.proc.join("sys/kernel/osrelease"), Need::Optional);

    let accounts = if with_accounts {
        crate::host::accounts::files::scan_accounts(&roots.proc, &mut r)
    } else {
        Default::default()
    };
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
