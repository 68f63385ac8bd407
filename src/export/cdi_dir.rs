//! The CDI directory vfioctl keeps its spec in (`--cdi-dir`, default `/var/run/cdi`, the dynamic
//! directory container runtimes read): `DIR/vfioctl.json`, written atomically and durably with
//! [`crate::files::write_atomic_simple`] only when its content changes (so runtimes that watch
//! the directory see no needless events), removed with [`crate::files::remove_durable`] when
//! nothing is handed out or on `rollback`.

use std::path::Path;

use crate::files::{self, FileError};

use super::cdi::Spec;

/// The spec's file name in the CDI directory.
pub const FILE_NAME: &str = "vfioctl.json";
/// The CDI default for dynamically generated specs.
pub const DEFAULT_DIR: &str = "/var/run/cdi";
/// A spec larger than this is not one vfioctl wrote.
const READ_LIMIT: u64 = 16 << 20;

/// What [`keep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The file was written (it was absent or different).
    Written,
    /// The file already had this content; it was not touched.
    Unchanged,
    /// Nothing is handed out: the file was removed.
    Removed,
    /// Nothing is handed out and there was no file.
    Absent,
}

/// Makes `DIR/vfioctl.json` hold `spec`; with no devices in it, removes the file (an empty
/// spec names nothing a runtime could inject).
pub fn keep(dir: &Path, spec: &Spec) -> Result<Kept, FileError> {
    if spec.devices.is_empty() {
        return Ok(if remove(dir)? {
            Kept::Removed
        } else {
            Kept::Absent
        });
    }
    let bytes = spec.to_json().into_bytes();
    match files::read_bounded(&dir.join(FILE_NAME), READ_LIMIT, "CDI spec") {
        Ok(old) if old == bytes => return Ok(Kept::Unchanged),
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        // Anything else there (a directory, a FIFO, an unreadable file) is not ours to
        // overwrite blindly: say so.
        Err(e @ FileError::NotRegular { .. }) => return Err(e),
        Err(_) => {}
    }
    // Runtimes (and rootless podman) read the directory: world-readable, not the 0700 of
    // vfioctl's private state directories.
    files::write_atomic_public(dir, FILE_NAME, &bytes)?;
    Ok(Kept::Written)
}

/// Removes `DIR/vfioctl.json`; returns whether it existed.
pub fn remove(dir: &Path) -> Result<bool, FileError> {
    files::remove_durable(dir, FILE_NAME)
}
