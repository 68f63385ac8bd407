//! Reading the config file from disk: the one I/O step of `config`, and the check that the file
//! (which root acts on) cannot be changed by anyone but root.

use std::path::{Path, PathBuf};

use crate::config::diagnostic::{Diagnostic, Diagnostics, Reporter, Severity};
use crate::config::{check_str, Checked, Config};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads and checks the config at `path`: the config and its warnings, or why it could not be
/// read. Check `diagnostics.has_errors()`/`config` for validity.
pub fn load_checked(path: &Path) -> Result<Checked, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(source) => Ok(check_str(&source, path)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let source = String::from_utf8_lossy(e.as_bytes()).into_owned();
            // The lossy text has the same prefix, so `at` is a valid offset in it.
            let mut rep = Reporter::new(path, &source);
            rep.error(
                at..at + 1,
                "the file is not valid UTF-8",
                "TOML files are UTF-8 text; re-save the file as UTF-8",
            );
            Ok(Checked {
                config: None,
                diagnostics: rep.finish(),
            })
        }
    }
}

/// Reads and checks the config at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let checked = load_checked(path)?;
    checked
        .config
        .ok_or(LoadError::Invalid(checked.diagnostics))
}

/// The warning for a config that someone other than root can change, given the file's owner
/// and mode: vfioctl runs as root and acts on it. `None` when only root can write it.
pub fn file_permission_warning(path: &Path, owner_uid: u32, mode: u32) -> Option<Diagnostic> {
    let mut who = Vec::new();
    if owner_uid != 0 {
        who.push(format!("its owner (uid {owner_uid})"));
    }
    if mode & 0o020 != 0 {
        who.push("its group".to_string());
    }
    if mode & 0o002 != 0 {
        who.push("every user".to_string());
    }
    if who.is_empty() {
        return None;
    }
    Some(Diagnostic {
        severity: Severity::Warning,
        message: format!(
            "the config can be changed by {}, not only by root (mode {:04o})",
            who.join(" and "),
            mode & 0o7777
        ),
        file: path.to_path_buf(),
        location: None,
        hint: Some(format!(
            "vfioctl acts on this file as root; run `chown root:root {0} && chmod 0644 {0}`",
            path.display()
        )),
        related: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_writable_files_pass() {
        let p = Path::new("/etc/vfio.toml");
        assert!(file_permission_warning(p, 0, 0o644).is_none());
        assert!(file_permission_warning(p, 0, 0o600).is_none());
        assert!(file_permission_warning(p, 0, 0o100644).is_none());
        let w = file_permission_warning(p, 0, 0o666).unwrap();
        assert!(
            w.message.contains("its group and every user"),
            "{}",
            w.message
        );
        assert_eq!(w.severity, Severity::Warning);
        let w = file_permission_warning(p, 1000, 0o644).unwrap();
        assert!(w.message.contains("uid 1000"), "{}", w.message);
        assert!(file_permission_warning(p, 0, 0o664).is_some());
    }

    #[test]
    fn load_reports_io_and_utf8_problems() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(matches!(load(&missing), Err(LoadError::Io { .. })));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"version = 1\n# \xff\n").unwrap();
        let Err(LoadError::Invalid(d)) = load(&bad) else {
            panic!("non-UTF-8 file accepted");
        };
        let loc = d.items()[0].location.as_ref().unwrap();
        assert_eq!((loc.line, loc.column), (2, 3));
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "version = 1\n").unwrap();
        assert_eq!(load(&good).unwrap().version, 1);
    }
}
