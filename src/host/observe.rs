//! Where the observed state comes from: the live host under the roots, or a snapshot file
//! given with `--host`. Every command that reads a host goes through [`observe`].

use std::path::{Path, PathBuf};

use crate::host::scan::{scan, ScanError};
use crate::host::snapshot::{Snapshot, SNAPSHOT_FORMAT};
use crate::host::Roots;

/// Why the observed state could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("cannot read host snapshot {0}")]
    Read(#[from] crate::files::FileError),
    #[error(
        "host snapshot {path} is not a vfioctl snapshot: {source} (write one with `vfioctl snapshot -o FILE`)"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "host snapshot {path} has format {found}, this build reads format {SNAPSHOT_FORMAT} \
         (take a new snapshot with this vfioctl)"
    )]
    Format { path: PathBuf, found: u32 },
    #[error(
        "host snapshot {path} is damaged: {source} (take a new snapshot with `vfioctl snapshot -o FILE`)"
    )]
    Damaged {
        path: PathBuf,
        #[source]
        source: crate::host::snapshot::Damaged,
    },
}

/// The largest snapshot file read, 64 MiB: a snapshot of a host with thousands of functions and
/// its accounts is a few MiB; anything larger is not a snapshot, and would be held in memory
/// whole.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// Loads a snapshot written by `vfioctl snapshot`: only a regular file (a FIFO never blocks)
/// of at most [`MAX_SNAPSHOT_BYTES`].
pub fn load_snapshot(path: &Path) -> Result<Snapshot, HostError> {
    let bytes = crate::files::read_bounded(path, MAX_SNAPSHOT_BYTES, "host snapshot")?;
    let mut snap: Snapshot = serde_json::from_slice(&bytes).map_err(|source| HostError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    if snap.format != SNAPSHOT_FORMAT {
        return Err(HostError::Format {
            path: path.to_path_buf(),
            found: snap.format,
        });
    }
    snap.validate().map_err(|source| HostError::Damaged {
        path: path.to_path_buf(),
        source,
    })?;
    snap.normalize();
    Ok(snap)
}

/// The observed host: the snapshot file when one is given, otherwise a scan of `roots`.
pub fn observe(roots: &Roots, host_file: Option<&Path>) -> Result<Snapshot, HostError> {
    match host_file {
        Some(p) => load_snapshot(p),
        None => Ok(scan(roots)?),
    }
}

/// The snapshot as the JSON `vfioctl snapshot` writes (pretty, newline-terminated).
pub fn snapshot_json(snap: &Snapshot) -> String {
    let mut s = serde_json::to_string_pretty(snap).unwrap_or_else(|e| {
        // Serialising plain data cannot fail; keep the error visible if it ever does.
        format!("{{\"error\": \"cannot serialise snapshot: {e}\"}}")
    });
    s.push('\n');
    s
}
