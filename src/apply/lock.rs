//! One pass at a time: an exclusive `flock` on `RUN_DIR/lock`, held for one reconcile or
//! rollback pass and released when the guard drops (or the process dies).
//!
//! A second caller polls for up to `--lock-timeout`, then gives up with a message naming the
//! holder's pid (which the holder writes into the lock file).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

const LOCK_FILE: &str = "lock";

/// Why the lock was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LockError {
    #[error("another vfioctl {} holds {path}; waited {waited:.1}s (--lock-timeout); try again when it has finished", holder.map_or("process".to_string(), |p| format!("(pid {p})")))]
    Busy {
        path: PathBuf,
        holder: Option<u32>,
        waited: f64,
    },
    #[error("cannot use lock file {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// The held lock; released on drop.
#[derive(Debug)]
pub struct PassLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl PassLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the pass lock in `run_dir`, waiting at most `timeout`.
pub fn acquire(run_dir: &Path, timeout: Duration) -> Result<PassLock, LockError> {
    let path = run_dir.join(LOCK_FILE);
    let io = |e: std::io::Error| LockError::Io {
        path: path.clone(),
        message: e.to_string(),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir)
        .map_err(io)?;
    let start = Instant::now();
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // Name ourselves as the holder for anyone who waits.
                lock.set_len(0).map_err(io)?;
                lock.rewind().map_err(io)?;
                writeln!(lock, "{}", std::process::id()).map_err(io)?;
                lock.flush().map_err(io)?;
                return Ok(PassLock { _lock: lock, path });
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                if start.elapsed() >= timeout {
                    return Err(LockError::Busy {
                        holder: read_holder(&path),
                        path,
                        waited: start.elapsed().as_secs_f64(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, e)) => return Err(io(std::io::Error::from(e))),
        }
    }
}

fn read_holder(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_caller_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Duration::ZERO).unwrap();
        let t0 = Instant::now();
        let e = acquire(dir.path(), Duration::from_millis(150)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(150));
        match &e {
            LockError::Busy { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
            other => panic!("unexpected {other:?}"),
        }
        assert!(e
            .to_string()
            .contains(&format!("(pid {})", std::process::id())));
        drop(held);
        // Released with the guard: the next caller gets it at once.
        let again = acquire(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(again.path(), dir.path().join(LOCK_FILE));
    }

    #[test]
    fn a_waiter_gets_the_lock_when_the_holder_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Duration::ZERO).unwrap();
        let p = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || acquire(&p, Duration::from_secs(5)).is_ok());
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
