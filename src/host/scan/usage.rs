//! Attributing host resources (interfaces, disks, the root filesystem the kernel command line
//! names) to PCI functions by their place in the device tree: the nearest ancestor directory
//! named like a PCI address.
//!
//! The root device: `root=` as the kernel reads it (the last one wins), as `/dev/NAME`,
//! `UUID=`, `PARTUUID=`, `LABEL=` or `PARTLABEL=`. The tags are looked up in udev's
//! `/dev/disk/by-*` links (sysfs has no filesystem UUIDs), the name in `/sys/class/block`, and
//! a device-mapper or md device is followed through its `slaves/` to the disks under it. Before
//! udev has made the links, or before the disk's driver has probed it, the root device cannot
//! be traced: then [`RootTrace::Untraced`] says so, and the scanner counts every storage
//! controller as "cannot tell" (fail closed).

use std::collections::BTreeSet;
use std::path::Path;

use crate::pci::PciAddress;

use super::read::{Need, Reader};

/// Whether what the host uses `function` for can go beyond what its identity shows (the boot
/// console, [`super::pci::read_identity`]), so a decision must read it in full
/// ([`super::scan_function`]). Interfaces, disks, their mounts and holders, and a traced
/// `root=` all exist only through a bound driver; an unbound storage controller can still
/// hold the root filesystem before its driver probes (an untraced `root=` counts every
/// storage controller as "cannot tell"). So: a driver is bound, or it is a storage
/// controller. Anything else unbound has nothing more to find.
pub fn needs_usage_read(function: &crate::host::PciDevice) -> bool {
    function.driver.is_some() || function.class.is_storage()
}

/// The `root=` argument of a kernel command line when it names a block device (as written,
/// `root=UUID=...`); `None` without one, and for a root that is not a local block device
/// (`/dev/nfs`, a ramdisk, a `root=` that is empty).
pub fn root_arg(cmdline: &str) -> Option<&str> {
    let arg = cmdline
        .split_ascii_whitespace()
        .rfind(|a| a.starts_with("root="))?;
    let value = &arg["root=".len()..];
    let special = value.is_empty()
        || value == "/dev/nfs"
        || value.starts_with("/dev/ram")
        || value == "/dev/root";
    (!special).then_some(arg)
}

/// Where `root=` leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootTrace {
    /// The functions holding the root device (several under a RAID or a volume group).
    Functions(BTreeSet<PciAddress>),
    /// The root device is not found (yet): why.
    Untraced(String),
}

/// Traces `arg` (from [`root_arg`]) to PCI functions, under `dev` and `class_block`.
pub fn trace_root(r: &mut Reader, dev: &Path, class_block: &Path, arg: &str) -> RootTrace {
    let value = &arg["root=".len()..];
    let link = match value.split_once('=') {
        Some(("UUID", v)) => dev.join("disk/by-uuid").join(v),
        Some(("PARTUUID", v)) => dev.join("disk/by-partuuid").join(v.to_ascii_lowercase()),
        Some(("LABEL", v)) => dev.join("disk/by-label").join(v),
        Some(("PARTLABEL", v)) => dev.join("disk/by-partlabel").join(v),
        _ => match value.strip_prefix("/dev/") {
            Some(rest) => dev.join(rest),
            None => return RootTrace::Untraced(format!("{arg} is not a form vfioctl can trace")),
        },
    };
    // `/dev/NAME` may be a node (its name is the block device's) or a link (by-uuid,
    // mapper): follow links to the node's name.
    let name = match std::fs::canonicalize(&link) {
        Ok(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        Err(_) if value.starts_with("/dev/") && !value[5..].contains('/') => {
            Some(value[5..].to_string())
        }
        Err(_) => None,
    };
    let Some(name) = name else {
        return RootTrace::Untraced(format!("{} does not exist (yet)", link.display()));
    };
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    functions_of_block(r, class_block, &name, &mut found, &mut seen);
    if found.is_empty() {
        return RootTrace::Untraced(format!(
            "{} is not a block device backed by a PCI function (yet)",
            class_block.join(&name).display()
        ));
    }
    RootTrace::Functions(found)
}

/// Whether the block device at `link` (`/sys/dev/block/MAJ:MIN`, `/sys/class/block/NAME`) is
/// backed by a PCI function, directly or through its `slaves/`.
pub fn block_has_function(r: &mut Reader, link: &Path) -> bool {
    let Some(dir) = r.resolve(link, Need::Optional) else {
        return false;
    };
    let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
        return false;
    };
    if function_above(&dir).is_some() {
        return true;
    }
    let class_block = dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "devices"))
        .and_then(|p| p.parent())
        .map(|sys| sys.join("class/block"));
    let Some(class_block) = class_block else {
        return false;
    };
    let mut found = BTreeSet::new();
    functions_of_block(r, &class_block, &name, &mut found, &mut BTreeSet::new());
    !found.is_empty()
}

/// The functions under block device `name`: its own, or through `slaves/` (dm, md) theirs.
fn functions_of_block(
    r: &mut Reader,
    class_block: &Path,
    name: &str,
    found: &mut BTreeSet<PciAddress>,
    seen: &mut BTreeSet<String>,
) {
    if !seen.insert(name.to_string()) || seen.len() > 64 {
        return;
    }
    let Some(dir) = r.resolve(&class_block.join(name), Need::Optional) else {
        return;
    };
    if let Some(f) = function_above(&dir) {
        found.insert(f);
        return;
    }
    let slaves = r.list(&dir.join("slaves"), Need::Optional);
    for s in slaves.into_iter().filter_map(|s| s.into_string().ok()) {
        functions_of_block(r, class_block, &s, found, seen);
    }
}

/// The PCI function `dir` (a canonical sysfs device directory) belongs to: itself or its
/// nearest ancestor whose name is a PCI address (`.../0000:01:00.0/nvme/nvme0` ->
/// `0000:01:00.0`). `None` for virtual devices.
pub fn function_above(dir: &Path) -> Option<PciAddress> {
    dir.ancestors()
        .filter_map(|p| p.file_name()?.to_str())
        .find_map(|n| n.parse::<PciAddress>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_arg_is_the_last_block_device_root() {
        assert_eq!(
            root_arg("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro root=UUID=ab-cd quiet"),
            Some("root=UUID=ab-cd")
        );
        assert_eq!(root_arg("console=ttyS0 intel_iommu=on"), None);
        assert_eq!(root_arg("root=/dev/nfs nfsroot=10.0.0.1:/srv"), None);
        assert_eq!(root_arg("root="), None);
    }

    #[test]
    fn root_is_traced_by_uuid_name_and_through_device_mapper() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path();
        let nvme = base.join("sys/devices/pci0000:00/0000:00:03.0/0000:01:00.0/nvme/nvme0/nvme0n1");
        std::fs::create_dir_all(nvme.join("nvme0n1p2")).unwrap();
        let dm = base.join("sys/devices/virtual/block/dm-0");
        std::fs::create_dir_all(dm.join("slaves")).unwrap();
        std::fs::write(dm.join("slaves/nvme0n1p2"), "").unwrap();
        let class = base.join("sys/class/block");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(nvme.join("nvme0n1p2"), class.join("nvme0n1p2")).unwrap();
        std::os::unix::fs::symlink(&dm, class.join("dm-0")).unwrap();
        let dev = base.join("dev");
        std::fs::create_dir_all(dev.join("disk/by-uuid")).unwrap();
        std::fs::create_dir_all(dev.join("mapper")).unwrap();
        std::fs::write(dev.join("nvme0n1p2"), "").unwrap();
        std::fs::write(dev.join("dm-0"), "").unwrap();
        std::os::unix::fs::symlink("../../nvme0n1p2", dev.join("disk/by-uuid/ab-cd")).unwrap();
        std::os::unix::fs::symlink("../dm-0", dev.join("mapper/vg-root")).unwrap();
        let nvme_fn: BTreeSet<PciAddress> = [PciAddress::new(0, 1, 0, 0)].into();
        let mut r = Reader::default();
        for arg in [
            "root=UUID=ab-cd",
            "root=/dev/nvme0n1p2",
            "root=/dev/mapper/vg-root",
        ] {
            assert_eq!(
                trace_root(&mut r, &dev, &class, arg),
                RootTrace::Functions(nvme_fn.clone()),
                "{arg}"
            );
        }
        // Before udev made the link (or before the disk's driver probed it): untraced.
        for arg in ["root=UUID=ef-01", "root=PARTUUID=1234", "root=/dev/vda1"] {
            assert!(
                matches!(
                    trace_root(&mut r, &dev, &class, arg),
                    RootTrace::Untraced(_)
                ),
                "{arg}"
            );
        }
    }

    #[test]
    fn walks_up_from_children() {
        let p = Path::new("/s/devices/pci0000:00/0000:00:03.0/0000:01:00.0/nvme/nvme0/nvme0n1");
        assert_eq!(function_above(p), Some(PciAddress::new(0, 1, 0, 0)));
        let v = Path::new("/s/devices/pci0000:00/0000:00:02.0/virtio0");
        assert_eq!(function_above(v), Some(PciAddress::new(0, 0, 2, 0)));
        assert_eq!(function_above(Path::new("/s/devices/virtual/net/lo")), None);
        // `pci0000:00` is a root bus, not a function.
        assert_eq!(function_above(Path::new("/s/devices/pci0000:00")), None);
    }
}
