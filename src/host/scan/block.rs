//! Block devices backed by PCI functions (NVMe namespaces, virtio-blk and SCSI disks, and
//! their partitions), with their mounts and holders.
//!
//! Every `/sys/class/block/X` is resolved to its device directory and attributed to the
//! nearest PCI function above it; a partition (it has a `partition` file) is folded into its
//! disk. Mounts come from `/proc/self/mountinfo`, matched by `major:minor` (the `dev` file) or
//! by the source `/dev/X`; `/proc/mounts` is the fallback when mountinfo is unreadable.
//! Holders are the names in `holders/` (device-mapper, md).

use std::collections::BTreeMap;
use std::path::Path;

use crate::host::snapshot::BlockDevice;
use crate::pci::PciAddress;

use super::read::{Need, Reader};
use super::usage::function_above;

/// Mount points by `major:minor` and by source device path.
#[derive(Debug, Default)]
pub struct Mounts {
    /// What is mounted on `/`: (`major:minor`, source), from mountinfo or mounts.
    root: Vec<(Option<String>, Option<String>)>,
    by_devno: BTreeMap<String, Vec<String>>,
    by_source: BTreeMap<String, Vec<String>>,
    /// Neither `mountinfo` nor `mounts` could be read: which disks are mounted is not known.
    pub unreadable: Option<String>,
}

impl Mounts {
    fn of(&self, devno: Option<&str>, name: &str) -> Vec<String> {
        let mut v: Vec<String> = devno
            .and_then(|d| self.by_devno.get(d))
            .cloned()
            .unwrap_or_default();
        if let Some(s) = self.by_source.get(&format!("/dev/{name}")) {
            v.extend(s.iter().cloned());
        }
        v.sort();
        v.dedup();
        v
    }
}

/// Undoes the octal escapes the kernel uses in mount paths (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `/proc/self/mountinfo` (or `/proc/mounts`) under `proc`.
pub fn read_mounts(r: &mut Reader, proc: &Path) -> Mounts {
    let mut m = Mounts::default();
    let info = proc.join("self/mountinfo");
    if let Some(text) = r.text(&info, Need::Optional) {
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let sep = f.iter().position(|x| *x == "-");
            let (Some(sep), true) = (sep, f.len() >= 5) else {
                if !line.trim().is_empty() {
                    r.warn(&info, format!("line {}: unreadable `{line}`", i + 1));
                }
                continue;
            };
            let target = unescape(f[4]);
            if target == "/" {
                m.root
                    .push((Some(f[2].to_string()), f.get(sep + 2).map(|s| unescape(s))));
            }
            m.by_devno
                .entry(f[2].to_string())
                .or_default()
                .push(target.clone());
            if let Some(src) = f.get(sep + 2) {
                m.by_source.entry(unescape(src)).or_default().push(target);
            }
        }
        return m;
    }
    if let Some(text) = r.text(&proc.join("mounts"), Need::Optional) {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 2 && unescape(f[1]) == "/" {
                m.root.push((None, Some(unescape(f[0]))));
            }
            if f.len() >= 2 {
                m.by_source
                    .entry(unescape(f[0]))
                    .or_default()
                    .push(unescape(f[1]));
            }
        }
        return m;
    }
    m.unreadable = Some(format!(
        "neither {} nor {} can be read, so whether its disks are mounted is not known",
        info.display(),
        proc.join("mounts").display()
    ));
    m
}

impl Mounts {
    /// What is mounted on `/`: (`major:minor`, source device), newest last.
    pub fn root_sources(&self) -> Vec<(Option<&str>, Option<&str>)> {
        self.root
            .iter()
            .map(|(d, s)| {
                (
                    d.as_deref(),
                    s.as_deref().filter(|s| s.starts_with("/dev/")),
                )
            })
            .collect()
    }
}

/// Every disk backed by a PCI function, partitions folded in: (function, disk).
pub fn scan_block(
    r: &mut Reader,
    class_block: &Path,
    mounts: &Mounts,
    only: Option<&std::collections::BTreeSet<PciAddress>>,
) -> Vec<(PciAddress, BlockDevice)> {
    let mut disks: BTreeMap<(PciAddress, String), BlockDevice> = BTreeMap::new();
    let mut names: Vec<String> = r
        .list(class_block, Need::Optional)
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let Some(dir) = r.resolve(&class_block.join(&name), Need::Required) else {
            continue;
        };
        let Some(function) = function_above(&dir) else {
            continue;
        };
        if only.is_some_and(|o| !o.contains(&function)) {
            continue;
        }
        let is_partition = dir.join("partition").exists();
        let disk = if is_partition {
            dir.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.clone())
        } else {
            name.clone()
        };
        let devno = r.text(&dir.join("dev"), Need::Required);
        let mut holders: Vec<String> = r
            .list(&dir.join("holders"), Need::Optional)
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .collect();
        holders.sort();
        let entry = disks
            .entry((function, disk.clone()))
            .or_insert_with(|| BlockDevice {
                name: disk,
                ..BlockDevice::default()
            });
        entry.mounts.extend(mounts.of(devno.as_deref(), &name));
        entry.holders.extend(holders);
    }
    disks
        .into_iter()
        .map(|((f, _), mut d)| {
            d.mounts.sort();
            d.mounts.dedup();
            d.holders.sort();
            d.holders.dedup();
            (f, d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mount_paths() {
        assert_eq!(unescape("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn mountinfo_matches_by_devno_and_source() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("self")).unwrap();
        std::fs::write(
            d.path().join("self/mountinfo"),
            "31 1 259:1 / /mnt/data rw - ext4 /dev/nvme0n1p1 rw\n40 1 0:45 / /srv rw - btrfs /dev/vda2 rw\n",
        )
        .unwrap();
        let mut r = Reader::default();
        let m = read_mounts(&mut r, d.path());
        assert!(r.warnings.is_empty());
        assert_eq!(m.of(Some("259:1"), "nvme0n1p1"), vec!["/mnt/data"]);
        // btrfs reports an anonymous device number: the source name still matches.
        assert_eq!(m.of(Some("252:2"), "vda2"), vec!["/srv"]);
        assert!(m.of(Some("259:0"), "nvme0n1").is_empty());
    }
}
