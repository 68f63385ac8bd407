//! The held domains as `watch` publishes them for other processes: `RUN_DIR/domains.json`,
//! rewritten atomically after every pass and removed on exit. `vfioctl status` reads it to
//! show the `domains` section, and a one-shot `reconcile` finds the running `watch` (its pid)
//! through it. A file left by a `watch` that died is recognised by its pid and ignored.
//! This module owns such pid-stamped state files under the run directory (the broker's ledger
//! is the other): written through `files::write_atomic`, read back bounded.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::files::{self, FileError};

use super::status::DomainStatus;

/// The file name under the run directory.
pub const FILE_NAME: &str = "domains.json";

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The publishing `watch` process.
    pub pid: u32,
    /// Passes done since it started.
    pub pass: u64,
    pub domains: Vec<DomainStatus>,
}

pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE_NAME)
}

/// A state file a live process publishes under the run directory, stamped with its pid (this
/// file, and the broker's ledger).
pub trait Stamped: Serialize + DeserializeOwned {
    /// The publishing process.
    fn pid(&self) -> u32;
}

impl Stamped for Published {
    fn pid(&self) -> u32 {
        self.pid
    }
}

/// Largest state file read back (a few hundred domains or hand-overs fit many times over).
const STATE_LIMIT: u64 = 4 << 20;

/// Writes `RUN_DIR/NAME` atomically and durably (`files::write_atomic`), creating the run
/// directory (mode 0755: the broker's socket lives there too). Mode 0644: `status` reads it.
pub fn write_state<T: Serialize>(run_dir: &Path, name: &str, value: &T) -> Result<(), FileError> {
    std::fs::create_dir_all(run_dir).map_err(|e| FileError::Io {
        path: run_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| FileError::Io {
        path: run_dir.join(name),
        message: e.to_string(),
    })?;
    text.push(b'\n');
    files::write_atomic_simple(run_dir, name, &text, 0o644)
}

/// Removes `RUN_DIR/NAME` (on exit); absent is fine, other errors are logged.
pub fn remove_state(run_dir: &Path, name: &str) {
    if let Err(e) = files::remove_durable(run_dir, name) {
        tracing::warn!("cannot remove {e}");
    }
}

/// Reads `RUN_DIR/NAME` back; a file whose writer is no longer a live process
/// (`proc_root/PID` is gone) is [`ReadError::Stale`].
pub fn read_state<T: Stamped>(
    run_dir: &Path,
    name: &str,
    proc_root: &Path,
) -> Result<T, ReadError> {
    let file = run_dir.join(name);
    let bytes = match files::read_bounded(&file, STATE_LIMIT, "state file") {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(ReadError::Absent(file)),
        Err(e) => {
            return Err(ReadError::Unreadable {
                path: file,
                message: e.to_string(),
            })
        }
    };
    let value: T = serde_json::from_slice(&bytes).map_err(|e| ReadError::Unreadable {
        path: file.clone(),
        message: e.to_string(),
    })?;
    if !proc_root.join(value.pid().to_string()).exists() {
        return Err(ReadError::Stale {
            path: file,
            pid: value.pid(),
        });
    }
    Ok(value)
}

/// Writes the file (see [`write_state`]).
pub fn write(run_dir: &Path, published: &Published) -> Result<(), FileError> {
    write_state(run_dir, FILE_NAME, published)
}

/// Removes the file (on exit).
pub fn remove(run_dir: &Path) {
    remove_state(run_dir, FILE_NAME)
}

/// Why no published state could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no vfioctl watch is running (no {0})")]
    Absent(PathBuf),
    #[error("no vfioctl watch is running ({path} was left by pid {pid}, which has exited)")]
    Stale { path: PathBuf, pid: u32 },
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
}

/// Reads the file; a file left by a process that has exited is [`ReadError::Stale`].
pub fn read(run_dir: &Path, proc_root: &Path) -> Result<Published, ReadError> {
    read_state(run_dir, FILE_NAME, proc_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_state_reads_back_while_the_writer_lives() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(proc_root.join("4242")).unwrap();
        let p = Published {
            pid: 4242,
            pass: 3,
            domains: vec![],
        };
        write(&run, &p).unwrap();
        assert_eq!(read(&run, &proc_root), Ok(p));
    }

    #[test]
    fn a_dead_writer_or_no_file_means_no_watch() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert!(matches!(read(&run, dir.path()), Err(ReadError::Absent(_))));
        write(
            &run,
            &Published {
                pid: 7,
                pass: 1,
                domains: vec![],
            },
        )
        .unwrap();
        let err = read(&run, dir.path()).unwrap_err();
        assert!(err.to_string().contains("pid 7, which has exited"), "{err}");
        std::fs::write(path(&run), "{").unwrap();
        assert!(matches!(
            read(&run, dir.path()),
            Err(ReadError::Unreadable { .. })
        ));
    }
}
