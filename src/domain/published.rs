//! The held domains as `watch` publishes them for other processes: `RUN_DIR/domains.json`,
//! rewritten atomically after every pass and removed on exit. `vfioctl status` reads it to
//! show the `domains` section, and a one-shot `reconcile` finds the running `watch` (its pid)
//! through it. A file left by a `watch` that died is recognised by its pid and ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// Writes the file atomically (temporary file + rename), creating the run directory.
pub fn write(run_dir: &Path, published: &Published) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let file = path(run_dir);
    let tmp = file.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(published).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, &file)
}

/// Removes the file (on exit).
pub fn remove(run_dir: &Path) {
    let _ = std::fs::remove_file(path(run_dir));
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

/// Reads the file; `alive` says whether a pid is a live process (`proc_root/PID` exists).
pub fn read(run_dir: &Path, proc_root: &Path) -> Result<Published, ReadError> {
    let file = path(run_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadError::Absent(file));
        }
        Err(e) => {
            return Err(ReadError::Unreadable {
                path: file,
                message: e.to_string(),
            })
        }
    };
    let published: Published = serde_json::from_str(&text).map_err(|e| ReadError::Unreadable {
        path: file.clone(),
        message: e.to_string(),
    })?;
    if !proc_root.join(published.pid.to_string()).exists() {
        return Err(ReadError::Stale {
            path: file,
            pid: published.pid,
        });
    }
    Ok(published)
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
