//! The journal: what every object vfioctl changed was before it changed it, written to disk
//! *before* the change, so any change can be undone, even after a crash.
//!
//! Two files, both written atomically (temp file, fsync, rename, fsync of the directory):
//! - `STATE_DIR/journal.json` (persistent): the original state of every object vfioctl has
//!   taken and not yet given back: a function's driver and override, a PF's VF count, a
//!   group node's owner and mode. `vfioctl rollback` and releases restore from it.
//! - `RUN_DIR/inflight.json` (cleared at boot): the state at the start of the current pass of
//!   every object the pass touched, in order. A pass that fails undoes it in reverse; a pass
//!   that was killed leaves it behind, and the next run restores it first. A pass that ends
//!   writes what it will forget into it first ([`Commit`]), so a pass killed while ending is
//!   finished, not undone, by the next run (see `apply::commit`).
//!
//! Every write and removal of these files goes through `write_json`/[`remove_state_file`],
//! where tests can crash or fail them (`file_faults`, in test builds).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files;
use crate::kernel::{DeviceState, NodeOwner};
use crate::pci::PciAddress;

/// The journal file format written by this build.
pub const JOURNAL_FORMAT: u32 = 1;
const JOURNAL_FILE: &str = "journal.json";
const INFLIGHT_FILE: &str = "inflight.json";

/// One object vfioctl may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Object {
    /// A function's driver binding and `driver_override`.
    Device { device: PciAddress },
    /// A physical function's `sriov_numvfs`.
    Sriov { pf: PciAddress },
    /// The owner and mode of the group node (`/dev/vfio/N`) of this function's IOMMU group.
    /// Keyed by a member, not the group number: a re-created VF gets a new group number.
    Node { device: PciAddress },
}

impl Object {
    /// The function the object belongs to (a node by the member it is keyed by).
    pub fn function(&self) -> PciAddress {
        match *self {
            Object::Device { device } | Object::Node { device } => device,
            Object::Sriov { pf } => pf,
        }
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Device { device } => write!(f, "{device}"),
            Object::Sriov { pf } => write!(f, "{pf} (sriov_numvfs)"),
            Object::Node { device } => write!(f, "the group node of {device}"),
        }
    }
}

/// What an object was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Recorded {
    Device(DeviceState),
    Sriov {
        num_vfs: u32,
    },
    /// `None`: there was no node.
    Node {
        owner: Option<NodeOwner>,
    },
    /// A function vfioctl claimed before any driver probed it (an early claim): its original
    /// is this `driver_override` and whatever driver the kernel picks for it then. It is back
    /// when its override is this one and it is not on a vfio driver.
    Unprobed {
        driver_override: Option<String>,
    },
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recorded::Device(s) => write!(
                f,
                "driver {}, override {}",
                s.driver.as_deref().unwrap_or("none"),
                s.driver_override.as_deref().unwrap_or("none")
            ),
            Recorded::Sriov { num_vfs } => write!(f, "{num_vfs} VFs"),
            Recorded::Node { owner: Some(o) } => write!(f, "owner {o}"),
            Recorded::Node { owner: None } => write!(f, "no node"),
            Recorded::Unprobed { driver_override } => write!(
                f,
                "override {}, the driver the kernel picks",
                driver_override.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// An object and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub object: Object,
    pub was: Recorded,
}

/// Why the journal could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path} is not a vfioctl journal ({message}); move it aside to start afresh, but note it records the original drivers of taken devices")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path} has format {found}; this vfioctl understands format {JOURNAL_FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

impl From<files::FileError> for JournalError {
    fn from(e: files::FileError) -> Self {
        JournalError::Io {
            path: e.path().to_path_buf(),
            message: match &e {
                files::FileError::Io { message, .. } => message.clone(),
                other => other.to_string(),
            },
        }
    }
}

/// Journal and in-flight records stay far below this; a larger file is not ours.
const STATE_FILE_LIMIT: u64 = 64 << 20;

/// A kernel module vfioctl loaded (it was not loaded before), and the PCI driver it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedModule {
    pub module: String,
    pub driver: String,
}

/// The persistent record of taken objects, in the order they were first taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub entries: Vec<Entry>,
    /// Modules vfioctl loaded; unloaded again by rollback once no function uses their driver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<LoadedModule>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            format: JOURNAL_FORMAT,
            entries: Vec::new(),
            modules: Vec::new(),
        }
    }
}

impl Journal {
    /// Loads `STATE_DIR/journal.json`; a missing file is an empty journal.
    pub fn load(state_dir: &Path) -> Result<Journal, JournalError> {
        let j: Option<Journal> = read_json(&state_dir.join(JOURNAL_FILE))?;
        let j = j.unwrap_or_default();
        if j.format != JOURNAL_FORMAT {
            return Err(JournalError::Format {
                path: state_dir.join(JOURNAL_FILE),
                found: j.format,
            });
        }
        Ok(j)
    }

    /// Writes it atomically to `STATE_DIR/journal.json`.
    pub fn save(&self, state_dir: &Path) -> Result<(), JournalError> {
        write_json(state_dir, JOURNAL_FILE, self)
    }

    /// What `object` was before vfioctl first took it.
    pub fn original(&self, object: &Object) -> Option<&Recorded> {
        self.entries
            .iter()
            .find(|e| &e.object == object)
            .map(|e| &e.was)
    }

    /// Records `was` for `object` unless it is already recorded (the first record is the
    /// original). Returns whether it was new.
    pub fn record(&mut self, object: Object, was: Recorded) -> bool {
        if self.original(&object).is_some() {
            return false;
        }
        self.entries.push(Entry { object, was });
        true
    }

    /// Forgets `object` (it was given back).
    pub fn forget(&mut self, object: &Object) -> bool {
        let n = self.entries.len();
        self.entries.retain(|e| &e.object != object);
        n != self.entries.len()
    }

    /// Taken functions and their original state (a [`Recorded::Device`] or
    /// [`Recorded::Unprobed`]), for the planner's release decisions.
    pub fn taken_devices(&self) -> impl Iterator<Item = (PciAddress, &Recorded)> {
        self.entries
            .iter()
            .filter_map(|e| match (&e.object, &e.was) {
                (
                    Object::Device { device },
                    was @ (Recorded::Device(_) | Recorded::Unprobed { .. }),
                ) => Some((*device, was)),
                _ => None,
            })
    }
}

/// A write a pass gave up waiting for: its writer process may still be blocked in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abandoned {
    pub what: String,
    pub writer: u32,
}

/// The record of the pass in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The process running the pass.
    pub pid: u32,
    /// Pass-start state of every object the pass touched, in first-touch order.
    pub entries: Vec<Entry>,
    /// Writes the pass abandoned after a timeout.
    #[serde(default)]
    pub abandoned: Vec<Abandoned>,
    /// Modules the pass loaded (they were not loaded at its start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<LoadedModule>,
    /// Set when the pass is ending: what it forgets. A record with this set is finished by the
    /// next run (the host is as the pass left it), never undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
}

/// What ending a pass forgets: journal entries of objects back at their originals (or gone),
/// modules no longer loaded, and the early-claim records of functions no longer taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<Object>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<LoadedModule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub early_claims: Vec<PciAddress>,
}

impl Commit {
    /// Nothing to forget.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.modules.is_empty() && self.early_claims.is_empty()
    }
}

impl InFlight {
    pub fn new() -> Self {
        InFlight {
            pid: std::process::id(),
            entries: Vec::new(),
            abandoned: Vec::new(),
            modules: Vec::new(),
            commit: None,
        }
    }

    /// Loads `RUN_DIR/inflight.json`, `None` when no pass was interrupted.
    pub fn load(run_dir: &Path) -> Result<Option<InFlight>, JournalError> {
        read_json(&run_dir.join(INFLIGHT_FILE))
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), JournalError> {
        write_json(run_dir, INFLIGHT_FILE, self)
    }

    /// Removes the record (the pass finished or was undone) and syncs the directory.
    pub fn clear(run_dir: &Path) -> Result<(), JournalError> {
        remove_state_file(run_dir, INFLIGHT_FILE)
    }

    /// Records the pass-start state of `object` unless already recorded. Returns whether new.
    pub fn record(&mut self, object: Object, was: Recorded) -> bool {
        if self.entries.iter().any(|e| e.object == object) {
            return false;
        }
        self.entries.push(Entry { object, was });
        true
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, JournalError> {
    let bytes = match files::read_bounded(path, STATE_FILE_LIMIT, "vfioctl state file") {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), JournalError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| JournalError::Io {
        path: dir.join(name),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    #[cfg(not(any(test, feature = "testing")))]
    {
        files::write_atomic_simple(dir, name, &bytes, 0o600)?;
        Ok(())
    }
    #[cfg(any(test, feature = "testing"))]
    write_json_faulted(dir, name, &bytes)
}

#[cfg(any(test, feature = "testing"))]
fn write_json_faulted(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JournalError> {
    if !file_faults::armed() {
        files::write_atomic_simple(dir, name, bytes, 0o600)?;
        return Ok(());
    }
    let mut injected = None;
    let r = files::write_atomic(dir, name, bytes, 0o600, &mut |step| {
        let op = file_faults::FileOp::Write {
            name: name.to_string(),
            step,
        };
        file_faults::check(dir, &op).map_err(|f| injected = Some(f))
    });
    match (r, injected) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(f)) => Err(f.error(&dir.join(name))),
        (Err(e), None) => Err(e.into()),
    }
}

/// Removes the state file `DIR/NAME` durably (absent is fine).
pub fn remove_state_file(dir: &Path, name: &str) -> Result<(), JournalError> {
    #[cfg(any(test, feature = "testing"))]
    if file_faults::armed() {
        let op = file_faults::FileOp::Remove {
            name: name.to_string(),
        };
        file_faults::check(dir, &op).map_err(|f| f.error(&dir.join(name)))?;
    }
    files::remove_durable(dir, name)?;
    Ok(())
}

/// Faults in the state files, for tests: a hook sees every step of every write
/// ([`files::WriteStep`]) and every removal of a state file under a directory, and can crash
/// there (vfioctl killed: the file is left as a crash leaves it) or fail as the filesystem
/// would (`ENOSPC`, `EROFS`). Hooks are keyed by a directory, so tests on their own temporary
/// directories do not see each other's faults. Nothing is armed in a real run; the check is one
/// atomic load; the hook exists only in test builds (`testing` feature).
#[cfg(any(test, feature = "testing"))]
pub mod file_faults {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::JournalError;
    use crate::files::WriteStep;

    /// One file operation, as a hook sees it.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum FileOp {
        /// `name` reached `step` of its atomic write.
        Write { name: String, step: WriteStep },
        /// `name` is about to be removed.
        Remove { name: String },
    }

    /// What a hook makes of an operation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum FileFault {
        /// vfioctl is killed here: the operation stops where it is.
        Crash,
        /// The filesystem refuses with this errno (`ENOSPC`, `EROFS`, `EIO`).
        Errno(nix::errno::Errno),
    }

    impl FileFault {
        pub(super) fn error(self, path: &Path) -> JournalError {
            JournalError::Io {
                path: path.to_path_buf(),
                message: match self {
                    FileFault::Crash => "interrupted (injected crash)".to_string(),
                    FileFault::Errno(e) => e.desc().to_string(),
                },
            }
        }
    }

    type Hook = Box<dyn FnMut(&Path, &FileOp) -> Result<(), FileFault> + Send>;

    static ARMED: AtomicUsize = AtomicUsize::new(0);
    static HOOKS: Mutex<Vec<(u64, PathBuf, Hook)>> = Mutex::new(Vec::new());
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// Removes its hook when dropped.
    #[must_use = "the hook is removed when this is dropped"]
    pub struct Armed(u64);

    impl Drop for Armed {
        fn drop(&mut self) {
            let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
            let n = hooks.len();
            hooks.retain(|(id, ..)| *id != self.0);
            if hooks.len() != n {
                ARMED.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Calls `hook` before every state-file operation in `root` or below, until the returned
    /// guard is dropped.
    pub fn arm(
        root: &Path,
        hook: impl FnMut(&Path, &FileOp) -> Result<(), FileFault> + Send + 'static,
    ) -> Armed {
        let id = NEXT.fetch_add(1, Ordering::SeqCst) as u64;
        let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
        hooks.push((id, root.to_path_buf(), Box::new(hook)));
        ARMED.fetch_add(1, Ordering::SeqCst);
        Armed(id)
    }

    pub(super) fn armed() -> bool {
        ARMED.load(Ordering::Relaxed) > 0
    }

    pub(super) fn check(dir: &Path, op: &FileOp) -> Result<(), FileFault> {
        let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
        for (_, root, hook) in hooks.iter_mut() {
            if dir.starts_with(root) {
                return hook(dir, op);
            }
        }
        Ok(())
    }

    /// Every step of a write, for hooks that enumerate crash points.
    pub const WRITE_STEPS: [WriteStep; 5] = [
        WriteStep::Created,
        WriteStep::HalfWritten,
        WriteStep::Written,
        WriteStep::Synced,
        WriteStep::Renamed,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::WriteStep;
    use std::fs;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn dev_entry(addr: &str, driver: &str) -> (Object, Recorded) {
        (
            Object::Device { device: a(addr) },
            Recorded::Device(DeviceState {
                driver: Some(driver.to_string()),
                driver_override: None,
            }),
        )
    }

    #[test]
    fn the_first_record_is_the_original() {
        let mut j = Journal::default();
        let (o, r) = dev_entry("0000:01:00.0", "nvme");
        assert!(j.record(o, r.clone()));
        let (_, later) = dev_entry("0000:01:00.0", "vfio-pci");
        assert!(!j.record(o, later));
        assert_eq!(j.original(&o), Some(&r));
        assert!(j.forget(&o));
        assert_eq!(j.original(&o), None);
    }

    #[test]
    fn round_trip_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(Journal::load(&state).unwrap().entries.is_empty());
        let mut j = Journal::load(&state).unwrap();
        let (o, r) = dev_entry("0000:01:00.0", "nvme");
        j.record(o, r);
        j.record(
            Object::Node {
                device: a("0000:01:00.0"),
            },
            Recorded::Node {
                owner: Some(NodeOwner::KERNEL_DEFAULT),
            },
        );
        j.save(&state).unwrap();
        assert_eq!(Journal::load(&state).unwrap(), j);
        let text = fs::read_to_string(state.join(JOURNAL_FILE)).unwrap();
        assert!(text.contains("\"device\": \"0000:01:00.0\""), "{text}");
    }

    #[test]
    fn a_corrupt_journal_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JOURNAL_FILE), b"{ not json").unwrap();
        let e = Journal::load(dir.path()).unwrap_err();
        assert!(matches!(e, JournalError::Corrupt { .. }));
        assert!(e.to_string().contains("move it aside"));
    }

    // A crash at every step of an atomic write leaves the old content or the new one, never a
    // mix, and the reader ignores the stray temp file.
    #[test]
    fn a_crash_at_every_step_leaves_old_or_new() {
        let steps = [
            WriteStep::Created,
            WriteStep::HalfWritten,
            WriteStep::Written,
            WriteStep::Synced,
            WriteStep::Renamed,
        ];
        for crash in steps {
            let dir = tempfile::tempdir().unwrap();
            let mut old = Journal {
                format: JOURNAL_FORMAT,
                entries: Vec::new(),
                modules: Vec::new(),
            };
            let (o, r) = dev_entry("0000:01:00.0", "nvme");
            old.record(o, r);
            old.save(dir.path()).unwrap();
            let mut new = old.clone();
            let (o2, r2) = dev_entry("0000:02:01.0", "e1000");
            new.record(o2, r2);
            let bytes = serde_json::to_vec_pretty(&new).unwrap();
            let r = files::write_atomic(dir.path(), JOURNAL_FILE, &bytes, 0o600, &mut |s| {
                if s == crash {
                    Err(())
                } else {
                    Ok(())
                }
            });
            assert!(r.is_err());
            let now = Journal::load(dir.path()).unwrap();
            if crash == WriteStep::Renamed {
                assert_eq!(now, new, "crash after {crash:?}");
            } else {
                assert_eq!(now, old, "crash after {crash:?}");
            }
            // The next write succeeds over the debris.
            new.save(dir.path()).unwrap();
            assert_eq!(Journal::load(dir.path()).unwrap(), new);
        }
    }

    #[test]
    fn inflight_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(InFlight::load(dir.path()).unwrap(), None);
        let mut f = InFlight::new();
        let (o, r) = dev_entry("0000:01:00.0", "nvme");
        assert!(f.record(o, r.clone()));
        assert!(!f.record(o, r));
        f.save(dir.path()).unwrap();
        assert_eq!(InFlight::load(dir.path()).unwrap(), Some(f));
        InFlight::clear(dir.path()).unwrap();
        assert_eq!(InFlight::load(dir.path()).unwrap(), None);
        InFlight::clear(dir.path()).unwrap();
    }
}
