//! PCI functions: one [`PciDevice`] per entry of `/sys/bus/pci/devices`, read from the
//! function's canonical directory (identity, driver, override, group, SR-IOV, topology).

use std::path::Path;

use crate::host::snapshot::{PciDevice, Sriov, Usage};
use crate::pci::{PciAddress, PciClass, PciId};

use super::read::{hex_u32, Need, Reader};

/// Scans every function under `devices_dir` (`/sys/bus/pci/devices`), or only those of
/// `only` (a scoped scan's closure), sorted by address.
pub fn scan_functions(
    r: &mut Reader,
    devices_dir: &Path,
    only: Option<&std::collections::BTreeSet<PciAddress>>,
) -> Vec<PciDevice> {
    let mut out = Vec::new();
    let names = match only {
        None => r.list(devices_dir, Need::Required),
        Some(functions) => functions.iter().map(|a| a.to_string().into()).collect(),
    };
    for name in names {
        let name_s = name.to_string_lossy();
        let link = devices_dir.join(&name);
        let Ok(address) = name_s.parse::<PciAddress>() else {
            r.warn(&link, "not a PCI address; entry skipped");
            continue;
        };
        let Some(dir) = r.resolve(&link, Need::Required) else {
            continue;
        };
        if let Some(device) = read_function(r, address, &dir) {
            out.push(device);
        }
    }
    out.sort_by_key(|d| d.address);
    out
}

fn id(r: &mut Reader, dir: &Path, file: &str, need: Need) -> Option<PciId> {
    r.value(
        &dir.join(file),
        need,
        "a 16-bit hex id like 0x8086",
        PciId::parse,
    )
}

/// Reads one function; `None` only when its identity (vendor, device, class) is unreadable.
pub fn read_function(r: &mut Reader, address: PciAddress, dir: &Path) -> Option<PciDevice> {
    let mut d = read_identity(r, address, dir)?;
    d.revision = r
        .value(&dir.join("revision"), Need::Optional, "a hex byte", hex_u32)
        .and_then(|v| u8::try_from(v).ok());
    d.iommu_group = r
        .link_name(&dir.join("iommu_group"), Need::Optional)
        .and_then(|n| {
            let g = n.parse::<u32>().ok();
            if g.is_none() {
                r.warn(
                    &dir.join("iommu_group"),
                    format!("link target `{n}` is not a group number"),
                );
            }
            g
        });
    d.iommu = r.link_name(&dir.join("iommu"), Need::Optional);
    d.numa_node = r.decimal(&dir.join("numa_node"), Need::Optional, "node");
    d.reset_method = r
        .text(&dir.join("reset_method"), Need::Optional)
        .filter(|s| !s.is_empty());
    d.parent = dir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<PciAddress>().ok());
    d.sriov = read_sriov(r, dir);
    d.physfn = r
        .link_name(&dir.join("physfn"), Need::Optional)
        .and_then(|n| n.parse::<PciAddress>().ok());
    Some(d)
}

/// Reads only what identifies a function and whether it is taken: vendor, device, class,
/// subsystem ids, the `driver` link, `driver_override` and `boot_vga` (the boot console, the
/// one use an unbound function can have). Everything else is left unset. `None` only when
/// the identity is unreadable.
pub fn read_identity(r: &mut Reader, address: PciAddress, dir: &Path) -> Option<PciDevice> {
    let vendor = id(r, dir, "vendor", Need::Required);
    let device = id(r, dir, "device", Need::Required);
    let class = r.value(
        &dir.join("class"),
        Need::Required,
        "a 24-bit hex class like 0x020000",
        PciClass::parse,
    );
    let (Some(vendor), Some(device), Some(class)) = (vendor, device, class) else {
        r.warn(
            dir,
            "function skipped: its vendor, device or class is unreadable",
        );
        return None;
    };
    let subsystem_vendor = id(r, dir, "subsystem_vendor", Need::Optional);
    let subsystem_device = id(r, dir, "subsystem_device", Need::Optional);
    let driver = r.link_name(&dir.join("driver"), Need::Optional);
    let driver_override = r
        .text(&dir.join("driver_override"), Need::Optional)
        .and_then(|s| crate::pci::parse_driver_override(&s));
    let boot_vga = if class.is_vga() {
        r.value(
            &dir.join("boot_vga"),
            Need::Optional,
            "0 or 1",
            |s| match s {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            },
        )
    } else {
        None
    };
    let ids = crate::pci::FunctionIds {
        vendor,
        device,
        subsystem_vendor,
        subsystem_device,
        class: Some(class),
    };
    identity_of(address, &ids, driver, driver_override, boot_vga)
}

/// A function's identity as [`read_identity`] makes it, from ids known otherwise (the kernel's
/// `add` uevent carries them: `PCI_ID`, `PCI_SUBSYS_ID`, `PCI_CLASS`) and its driver, override
/// and `boot_vga` (read only for a display controller). `None` without a class.
pub fn identity_of(
    address: PciAddress,
    ids: &crate::pci::FunctionIds,
    driver: Option<String>,
    driver_override: Option<String>,
    boot_vga: Option<bool>,
) -> Option<PciDevice> {
    let class = ids.class?;
    let usage = Usage {
        boot_console: boot_vga == Some(true)
            && !driver.as_deref().is_some_and(crate::host::is_vfio_driver),
        ..Usage::default()
    };
    Some(PciDevice {
        address,
        vendor: ids.vendor,
        device: ids.device,
        subsystem_vendor: ids.subsystem_vendor,
        subsystem_device: ids.subsystem_device,
        class,
        revision: None,
        driver,
        driver_override,
        iommu_group: None,
        iommu: None,
        numa_node: None,
        bridge: class.is_bridge(),
        parent: None,
        sriov: None,
        physfn: None,
        boot_vga,
        reset_method: None,
        usage,
        vfio_cdev: None,
    })
}

/// SR-IOV state of a PF; `None` when the function has no `sriov_totalvfs`.
fn read_sriov(r: &mut Reader, dir: &Path) -> Option<Sriov> {
    let total_vfs = r.decimal(&dir.join("sriov_totalvfs"), Need::Optional, "count")?;
    let num_vfs: u32 = r
        .decimal(&dir.join("sriov_numvfs"), Need::Required, "count")
        .unwrap_or(0);
    let offset = r
        .decimal(&dir.join("sriov_offset"), Need::Optional, "offset")
        .unwrap_or(0);
    let stride = r
        .decimal(&dir.join("sriov_stride"), Need::Optional, "stride")
        .unwrap_or(0);
    let vf_device = r.value(
        &dir.join("sriov_vf_device"),
        Need::Optional,
        "a hex device id",
        PciId::parse,
    );
    let vfs = virtfns(r, dir, num_vfs, Need::Required);
    Some(Sriov {
        total_vfs,
        num_vfs,
        offset,
        stride,
        vf_device,
        vfs,
    })
}

/// The first `num_vfs` VFs of the PF at `dir`, from its `virtfnN` links, in VF order.
pub fn virtfns(r: &mut Reader, dir: &Path, num_vfs: u32, need: Need) -> Vec<PciAddress> {
    let mut vfs = Vec::with_capacity(num_vfs as usize);
    for i in 0..num_vfs {
        let link = dir.join(format!("virtfn{i}"));
        if let Some(n) = r.link_name(&link, need) {
            match n.parse::<PciAddress>() {
                Ok(a) => vfs.push(a),
                Err(_) => r.warn(&link, format!("link target `{n}` is not a PCI address")),
            }
        }
    }
    vfs
}
