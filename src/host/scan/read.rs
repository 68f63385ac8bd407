//! Reading sysfs and procfs files for the scanner: small text values, symlinks and directory
//! listings, each failure turned into a [`ScanWarning`] naming the exact path and reason, so
//! one bad file never stops a scan.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::host::snapshot::ScanWarning;

/// Whether a missing file is expected (optional attribute) or worth a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Absence is normal (e.g. `sriov_totalvfs` on a non-SR-IOV function); only other errors
    /// are reported.
    Optional,
    /// Absence is itself a problem worth reporting.
    Required,
}

/// Collects warnings while reading.
#[derive(Debug, Default)]
pub struct Reader {
    pub warnings: Vec<ScanWarning>,
}

impl Reader {
    pub fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.warnings.push(ScanWarning {
            path: path.display().to_string(),
            message: message.into(),
        });
    }

    fn io_failure(&mut self, path: &Path, e: &io::Error, need: Need, what: &str) {
        if need == Need::Optional && e.kind() == io::ErrorKind::NotFound {
            return;
        }
        self.warn(path, format!("cannot {what}: {e}"));
    }

    /// A file's content with trailing whitespace removed.
    pub fn text(&mut self, path: &Path, need: Need) -> Option<String> {
        match fs::read_to_string(path) {
            Ok(mut s) => {
                let len = s.trim_end().len();
                s.truncate(len);
                Some(s)
            }
            Err(e) => {
                self.io_failure(path, &e, need, "read");
                None
            }
        }
    }

    /// A file parsed with `parse`; an unparsable value is reported with what was expected.
    pub fn value<T>(
        &mut self,
        path: &Path,
        need: Need,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let text = self.text(path, need)?;
        let v = parse(&text);
        if v.is_none() {
            self.warn(
                path,
                format!(
                    "unexpected value `{}`: expected {expected}",
                    text.escape_debug()
                ),
            );
        }
        v
    }

    /// A decimal attribute (`sriov_numvfs`, `numa_node`, a module parameter); `what` names it
    /// in the warning an unexpected value gets ("count", "node").
    pub fn decimal<T: std::str::FromStr>(
        &mut self,
        path: &Path,
        need: Need,
        what: &str,
    ) -> Option<T> {
        self.value(path, need, &format!("a decimal {what}"), decimal)
    }

    /// The target of a symlink, as stored.
    pub fn link(&mut self, path: &Path, need: Need) -> Option<PathBuf> {
        match fs::read_link(path) {
            Ok(t) => Some(t),
            Err(e) => {
                self.io_failure(path, &e, need, "read link");
                None
            }
        }
    }

    /// The last component of a symlink's target (a driver's name, a group's number).
    pub fn link_name(&mut self, path: &Path, need: Need) -> Option<String> {
        let t = self.link(path, need)?;
        match t.file_name() {
            Some(n) => Some(n.to_string_lossy().into_owned()),
            None => {
                self.warn(path, format!("link target `{}` has no name", t.display()));
                None
            }
        }
    }

    /// The names in a directory, unsorted.
    pub fn list(&mut self, dir: &Path, need: Need) -> Vec<OsString> {
        match fs::read_dir(dir) {
            Ok(rd) => {
                let mut out = Vec::new();
                for entry in rd {
                    match entry {
                        Ok(e) => out.push(e.file_name()),
                        Err(e) => self.warn(dir, format!("cannot list: {e}")),
                    }
                }
                out
            }
            Err(e) => {
                self.io_failure(dir, &e, need, "list");
                Vec::new()
            }
        }
    }

    /// Resolves the symlink at `link` whose parent directory is canonical (a real directory
    /// reached without symlinks): joins the stored target to that directory and folds `..`.
    /// Falls back to `link` itself when it is not a symlink (a copied tree).
    pub fn resolve(&mut self, link: &Path, need: Need) -> Option<PathBuf> {
        match fs::read_link(link) {
            Ok(t) => {
                let base = link.parent().unwrap_or(Path::new("/"));
                Some(fold(&base.join(t)))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Some(link.to_path_buf()),
            Err(e) => {
                self.io_failure(link, &e, need, "read link");
                None
            }
        }
    }
}

/// Folds `.` and `..` components lexically. Correct for paths whose directories are real
/// (sysfs directories are; only its links are symlinks).
pub fn fold(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Parses a decimal number (`sriov_numvfs`, `numa_node`).
pub fn decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.trim().parse().ok()
}

/// Parses a hexadecimal number with or without `0x` (`flags`, `revision`).
pub fn hex_u32(s: &str) -> Option<u32> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    u32::from_str_radix(t, 16).ok()
}

/// The account files are read like any other optional file: absence is normal, any other
/// failure is a warning in the snapshot.
impl crate::host::accounts::FileSource for Reader {
    fn text(&mut self, path: &Path) -> Option<String> {
        Reader::text(self, path, Need::Optional)
    }
    fn list(&mut self, dir: &Path) -> Vec<PathBuf> {
        Reader::list(self, dir, Need::Optional)
            .into_iter()
            .map(|n| dir.join(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_parent_components() {
        assert_eq!(
            fold(Path::new(
                "/r/sys/bus/pci/devices/../../../devices/pci0000:00/0000:00:01.0"
            )),
            PathBuf::from("/r/sys/devices/pci0000:00/0000:00:01.0")
        );
        assert_eq!(
            fold(Path::new("/r/sys/devices/a/b/net/eth0/../../../virtio0")),
            PathBuf::from("/r/sys/devices/a/virtio0")
        );
    }

    #[test]
    fn missing_optional_is_silent_required_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reader::default();
        assert_eq!(r.text(&dir.path().join("nope"), Need::Optional), None);
        assert!(r.warnings.is_empty());
        assert_eq!(r.text(&dir.path().join("nope"), Need::Required), None);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].path.ends_with("/nope"));
        // A directory where a file is expected: an error other than "not found".
        std::fs::create_dir(dir.path().join("vendor")).unwrap();
        assert_eq!(r.text(&dir.path().join("vendor"), Need::Optional), None);
        assert_eq!(r.warnings.len(), 2);
        std::fs::write(dir.path().join("class"), "zz\n").unwrap();
        let v = r.value(
            &dir.path().join("class"),
            Need::Required,
            "a hex class",
            crate::pci::PciClass::parse,
        );
        assert_eq!(v, None);
        assert!(
            r.warnings[2].message.contains("`zz`"),
            "{:?}",
            r.warnings[2]
        );
    }

    #[test]
    fn account_files_that_exist_but_cannot_be_read_are_warnings_not_silence() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("1/root/etc");
        // A directory where /etc/passwd should be: it exists, and reading it fails.
        std::fs::create_dir_all(etc.join("passwd")).unwrap();
        std::fs::write(etc.join("group"), "kvm:x:994:\n").unwrap();
        let mut r = Reader::default();
        let a = crate::host::accounts::files::scan_accounts(dir.path(), &mut r);
        assert_eq!(a.groups.get("kvm"), Some(&994));
        assert!(a.users.is_empty());
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].path.ends_with("etc/passwd"),
            "{:?}",
            r.warnings
        );
        // Absent files (no limits.conf, no limits.d) stay silent.
        let mut quiet = Reader::default();
        let empty = tempfile::tempdir().unwrap();
        crate::host::accounts::files::scan_accounts(empty.path(), &mut quiet);
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    }
}
