//! Files vfioctl does not control, and files it keeps: this module owns how both are touched.
//!
//! - [`read_bounded`] reads a file someone else wrote (the config, a `--host` snapshot, a state
//!   record): only a regular file, opened without blocking (a FIFO or a device never hangs the
//!   read), at most a stated number of bytes (`/dev/zero` or a huge file never exhausts memory).
//! - [`write_atomic`] writes a state file (the journal, in-flight and early-claim records, the
//!   broker's ledger, published domains, status and metrics files, CDI specs): a temp file created
//!   exclusively and without following links in the same directory, written, fsynced, renamed over
//!   the target, then the directory fsynced. A crash at any point leaves the old content or the new,
//!   never a mix, and the rename is durable before the function returns.
//! - [`create_atomic`] does the same for a file whose first version must win (early-claim
//!   records): it never replaces an existing one.
//! - [`remove_durable`] removes such a file and fsyncs its directory.
//!
//! It sits at the bottom of the module order: it knows nothing of vfioctl's types.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be read or written; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: is {kind}, not a regular file; give the path of a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{path}: is larger than {limit} bytes, more than a {what} can sensibly be; \
         check that this is the right file"
    )]
    TooLarge {
        path: PathBuf,
        limit: u64,
        what: &'static str,
    },
    #[error("{path}: interrupted at {step:?} (injected crash)")]
    Interrupted { path: PathBuf, step: WriteStep },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::Interrupted { path, .. } => path,
        }
    }

    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { message, .. } if message == NOT_FOUND)
    }
}

const NOT_FOUND: &str = "no such file or directory";

fn io_err(path: &Path, e: &io::Error) -> FileError {
    let message = match e.kind() {
        io::ErrorKind::NotFound => NOT_FOUND.to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    FileError::Io {
        path: path.to_path_buf(),
        message,
    }
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads a regular file of at most `limit` bytes. `what` names the file's role for the error
/// ("config file", "host snapshot"). Symlinks are followed (a ConfigMap's `..data` link is
/// normal); what they lead to must be a regular file. The open never blocks: `O_NONBLOCK` keeps a
/// FIFO from waiting for a writer, and the type is checked on the opened descriptor, so a file
/// swapped between check and read cannot slip through.
pub fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_err(path, &e))?;
    let meta = file.metadata().map_err(|e| io_err(path, &e))?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        limit,
        what,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since the stat.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, &e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The steps of an atomic write, for crash-injection tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteStep {
    Created,
    HalfWritten,
    Written,
    Synced,
    Renamed,
}

/// Writes `DIR/NAME` atomically and durably with file mode `mode` (see the module comment),
/// creating `DIR` (mode 0700) when missing. `at` is called after each step; an `Err` there
/// stops the write as a crash would, leaving the temp file behind as a crash does.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    at: &mut dyn FnMut(WriteStep) -> Result<(), ()>,
) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, &e))?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let crashed = |step| FileError::Interrupted {
        path: target.clone(),
        step,
    };
    // A temp file left by an earlier crash of this pid (pids are reused across boots).
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp, &e)),
    }
    let mut f: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, &e))?;
    at(WriteStep::Created).map_err(|_| crashed(WriteStep::Created))?;
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half]).map_err(|e| io_err(&tmp, &e))?;
    at(WriteStep::HalfWritten).map_err(|_| crashed(WriteStep::HalfWritten))?;
    f.write_all(&bytes[half..]).map_err(|e| io_err(&tmp, &e))?;
    at(WriteStep::Written).map_err(|_| crashed(WriteStep::Written))?;
    f.sync_all().map_err(|e| io_err(&tmp, &e))?;
    drop(f);
    at(WriteStep::Synced).map_err(|_| crashed(WriteStep::Synced))?;
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&target, &e));
    }
    at(WriteStep::Renamed).map_err(|_| crashed(WriteStep::Renamed))?;
    sync_dir(dir)
}

/// [`write_atomic`] with no crash hook.
pub fn write_atomic_simple(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<(), FileError> {
    write_atomic(dir, name, bytes, mode, &mut |_| Ok(()))
}

/// Writes `path` atomically ([`write_atomic`] in its parent directory).
pub fn write_atomic_path(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let (dir, name) = split(path)?;
    write_atomic_simple(dir, name, bytes, mode)
}

/// Creates `DIR/NAME` atomically and durably unless it exists: the first writer wins. The bytes
/// go to a temp file (as [`write_atomic`] writes one), which is then hard-linked to the target
/// (the link fails when the target exists, so a second writer never replaces the first) and
/// removed. A crash leaves no target or the whole one. Returns whether it was created.
pub fn create_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<bool, FileError> {
    let staged = format!(".{name}.new.{}", std::process::id());
    write_atomic_simple(dir, &staged, bytes, mode)?;
    let staged = dir.join(staged);
    let target = dir.join(name);
    let linked = fs::hard_link(&staged, &target);
    let _ = fs::remove_file(&staged);
    match linked {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(&target, &e)),
    }
}

/// [`write_atomic`] for a file other programs read (a CDI spec for container runtimes, a
/// metrics textfile for node_exporter): a missing `DIR` is created 0755, not 0700, and the
/// file is written 0644.
pub fn write_atomic_public(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| io_err(dir, &e))?;
    write_atomic_simple(dir, name, bytes, 0o644)
}

/// Removes `DIR/NAME` (absent is fine) and fsyncs the directory. Returns whether it existed.
pub fn remove_durable(dir: &Path, name: &str) -> Result<bool, FileError> {
    let target = dir.join(name);
    match fs::remove_file(&target) {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&target, &e)),
    }
}

fn split(path: &Path) -> Result<(&Path, &str), FileError> {
    let name = path.file_name().and_then(|n| n.to_str());
    match (path.parent(), name) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            Ok((dir, name))
        }
        _ => Err(FileError::Io {
            path: path.to_path_buf(),
            message: "not a file path".to_string(),
        }),
    }
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        fs::write(&p, b"version = 1\n").unwrap();
        assert_eq!(
            read_bounded(&p, 100, "config file").unwrap(),
            b"version = 1\n"
        );
    }

    #[test]
    fn refuses_a_file_over_the_limit_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        fs::write(&p, vec![b'#'; 101]).unwrap();
        let e = read_bounded(&p, 100, "config file").unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit: 100, .. }), "{e}");
        assert!(e.to_string().contains("big"), "{e}");
    }

    #[test]
    fn refuses_a_fifo_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_bounded(&p, 100, "config file").unwrap_err();
        assert!(
            matches!(e, FileError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_character_device_and_a_directory() {
        let e = read_bounded(Path::new("/dev/zero"), 100, "config file").unwrap_err();
        assert!(matches!(e, FileError::NotRegular { .. }), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 100, "config file").unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = read_bounded(Path::new("/nonexistent/x"), 100, "config file").unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn an_atomic_write_replaces_the_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic_simple(dir.path(), "s.json", b"old", 0o600).unwrap();
        write_atomic_simple(dir.path(), "s.json", b"new", 0o644).unwrap();
        assert_eq!(fs::read(dir.path().join("s.json")).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_crash_before_the_rename_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic_simple(dir.path(), "s.json", b"old", 0o600).unwrap();
        for step in [
            WriteStep::Created,
            WriteStep::HalfWritten,
            WriteStep::Written,
            WriteStep::Synced,
        ] {
            let e = write_atomic(dir.path(), "s.json", b"new", 0o600, &mut |s| {
                if s == step {
                    Err(())
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
            assert!(matches!(e, FileError::Interrupted { .. }));
            assert_eq!(fs::read(dir.path().join("s.json")).unwrap(), b"old");
        }
        // The next write cleans the temp file the "crash" left.
        write_atomic_simple(dir.path(), "s.json", b"new", 0o600).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_temp_file_is_not_followed_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        // A link planted where a different process's temp would be must not matter to us, and
        // one at our own temp name is removed, not written through.
        let tmp = dir
            .path()
            .join(format!(".s.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic_simple(dir.path(), "s.json", b"new", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(dir.path().join("s.json")).unwrap(), b"new");
    }

    #[test]
    fn remove_durable_reports_whether_the_file_was_there() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic_simple(dir.path(), "s.json", b"x", 0o600).unwrap();
        assert!(remove_durable(dir.path(), "s.json").unwrap());
        assert!(!remove_durable(dir.path(), "s.json").unwrap());
    }
}
