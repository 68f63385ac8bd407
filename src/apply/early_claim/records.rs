//! The early-claim records: `RUN_DIR/early-claims/ADDR`, one per function whose
//! `driver_override` vfioctl wrote before any driver probed it ([`super::early_claim`]: the
//! udev rule's boot claim, `watch` on a hot-plug `add`). A record holds the override the claim
//! replaced, as a small JSON document (`{"format":1,"driver_override":null}`).
//!
//! Owns writing, reading and forgetting the records, and what they mean for the journal:
//! [`fold`] makes every early-claimed function part of what vfioctl took, with its true
//! original (the recorded override, and whatever driver the kernel picks, or the driver that
//! probed it before the claim), so releases and `vfioctl rollback` give it back. A journal
//! entry that recorded our own early override as the original (a pass that took the function
//! before the record was folded) is corrected from the record. A record lives until its
//! function is no longer taken (given back, or gone from the host): [`forget_released`].
//!
//! A record is created whole or not at all (the first one holds the true original, and a
//! crash leaves none or a whole one): an unset override's (every hot-plugged function's) as a
//! hard link to a staged whole record, one `link(2)` ahead of the claim's write, which races
//! the kernel's probe; any other with [`crate::files::create_atomic`]. The directory is synced
//! right after the write ([`settle`]). Records are removed with
//! [`crate::files::remove_durable`].
//!
//! Why the record still comes first: an override equal to the wanted driver with no record
//! cannot be told from one an administrator (driverctl, a udev rule) set before, so a claim
//! whose record could be missing after a crash would have to be read as "the original override
//! was vfio-pci", and a release would then leave the function off its driver for good. With the
//! record first, a crash anywhere leaves either no record and no write (nothing to undo) or a
//! record and maybe the write (folded as taken, given back by a probe: never worse). A record
//! that is linked but not yet durable when the machine crashes goes with the override it was
//! for (kernel state): nothing is left to give back. A record that does not parse (empty, truncated, or
//! written by something else) is never read as "the override was unset": loading fails and
//! says which file and how to settle it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apply::journal::{Journal, JournalError, Object, Recorded};
use crate::files;
use crate::host::{is_vfio_driver, Snapshot};
use crate::kernel::{DeviceState, Host, KernelError};
use crate::pci::PciAddress;

const DIR: &str = "early-claims";

/// The record format this build writes and reads.
pub const RECORD_FORMAT: u32 = 1;

/// A record is a few dozen bytes; anything larger is not one.
const RECORD_LIMIT: u64 = 4096;

/// The directory of the records: `RUN_DIR/early-claims`.
pub fn record_dir(run_dir: &Path) -> PathBuf {
    run_dir.join(DIR)
}

/// Where the early claim of `address` is recorded.
pub fn record_path(run_dir: &Path, address: &PciAddress) -> PathBuf {
    record_dir(run_dir).join(address.to_string())
}

fn io_err(path: &Path, e: &io::Error) -> JournalError {
    JournalError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// One record's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    format: u32,
    /// The override the claim replaced; `null`: unset.
    driver_override: Option<String>,
}

/// The bytes of a record of `previous`.
pub fn encode(previous: Option<&str>) -> Vec<u8> {
    let record = RecordFile {
        format: RECORD_FORMAT,
        driver_override: previous.map(str::to_string),
    };
    let mut bytes = serde_json::to_vec(&record).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The override a record's bytes say the claim replaced (`Ok(None)`: it was unset). Anything
/// but a whole record of this format is an error saying what is wrong: an empty or cut file
/// never means "unset".
pub fn decode(bytes: &[u8]) -> Result<Option<String>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the record is empty (cut short, e.g. by a crash)".to_string());
    }
    let record: RecordFile = serde_json::from_slice(bytes).map_err(|e| {
        format!("the record does not parse ({e}): cut short or not written by vfioctl")
    })?;
    if record.format != RECORD_FORMAT {
        return Err(format!(
            "the record has format {}; this vfioctl reads format {RECORD_FORMAT}",
            record.format
        ));
    }
    match record.driver_override {
        Some(o) if crate::pci::parse_driver_override(&o).as_deref() != Some(o.as_str()) => Err(
            format!("the record names the override {o:?}, which is not a driver name"),
        ),
        o => Ok(o),
    }
}

/// The staged record of an unset override (`RUN_DIR/early-claims/.unset`, not named by an
/// address, so never read as a record): [`remember`] hard-links it under a function's address.
const STAGED_UNSET: &str = ".unset";

/// Writes the staged record of an unset override ([`encode`]`(None)`, atomically and durably)
/// unless it is there with that content already. The hot-plug claimer calls it when it starts,
/// so its first claim is as quick as the others.
pub fn stage(run_dir: &Path) -> Result<(), JournalError> {
    let dir = record_dir(run_dir);
    // The run directory is shared (the broker's socket is in it): missing directories get the
    // default mode here, not the 0700 of a state-file write that creates its directory.
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, &e))?;
    let bytes = encode(None);
    match files::read_bounded(&dir.join(STAGED_UNSET), RECORD_LIMIT, "early-claim record") {
        Ok(b) if b == bytes => Ok(()),
        _ => Ok(files::write_atomic_simple(
            &dir,
            STAGED_UNSET,
            &bytes,
            0o600,
        )?),
    }
}

/// Records that an early claim replaced `previous` (`None`: unset) on `address`, unless a
/// record exists already: the first one holds the true original. Made before the claim's own
/// write, and quick, since it races the kernel's probe of a hot-plugged function (~7 ms after
/// its `add`): for an unset override (every hot-plugged function's) one `link(2)` of the staged
/// whole record ([`stage`]; staged here first when it is missing); otherwise a whole new file
/// ([`files::create_atomic`]). Either way a crash leaves no record or a whole one. The
/// directory is synced by [`settle`], after the write: the record describes kernel state that
/// a machine crash takes with it, so it needs to be durable only once the write is made.
/// Returns whether it was new.
pub fn remember(
    run_dir: &Path,
    address: &PciAddress,
    previous: Option<&str>,
) -> Result<bool, JournalError> {
    let dir = record_dir(run_dir);
    let name = address.to_string();
    if previous.is_none() {
        let link = || fs::hard_link(dir.join(STAGED_UNSET), dir.join(&name));
        let linked = match link() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                stage(run_dir)?;
                link()
            }
            r => r,
        };
        return match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(&dir.join(&name), &e)),
        };
    }
    Ok(files::create_atomic(&dir, &name, &encode(previous), 0o600)?)
}

/// Makes the records [`remember`] created durable (syncs their directory).
pub fn settle(run_dir: &Path) -> Result<(), JournalError> {
    let dir = record_dir(run_dir);
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&dir, &e))
}

/// Every early-claim record: function → the override the claim replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    pub records: BTreeMap<PciAddress, Option<String>>,
}

impl Records {
    /// Reads `RUN_DIR/early-claims/`; a missing directory holds no records. Files that are not
    /// named by a PCI address (temp files of a write in progress or cut by a crash) are not
    /// records and are skipped. A damaged record fails the load: the override it replaced is
    /// not known, and guessing "unset" could leave a function on the wrong driver for good.
    pub fn load(run_dir: &Path) -> Result<Records, JournalError> {
        let dir = record_dir(run_dir);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Records::default()),
            Err(e) => return Err(io_err(&dir, &e)),
        };
        let mut records = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, &e))?;
            let Some(address) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<PciAddress>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let bytes = files::read_bounded(&path, RECORD_LIMIT, "early-claim record")?;
            let previous = decode(&bytes).map_err(|why| JournalError::Io {
                path: path.clone(),
                message: format!(
                    "damaged early-claim record: {why}. The driver_override the early claim \
                     replaced on {address} is not known. If it had none (the usual case), \
                     replace the file with `{}`; else put the override's name in \
                     \"driver_override\"",
                    String::from_utf8_lossy(&encode(None)).trim_end()
                ),
            })?;
            records.insert(address, previous);
        }
        Ok(Records { records })
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A function's driver and override as they are, for [`fold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Now {
    Is(DeviceState),
    /// Not on the host.
    Gone,
    /// Not known here (outside a partial snapshot): its record waits for a pass that sees it.
    Unknown,
}

/// What [`fold`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// The journal changed (save it).
    pub changed: bool,
    /// The functions whose records the journal now accounts for, or that are gone: the ones
    /// [`forget_released`] may forget once the journal no longer holds them.
    pub accounted: BTreeSet<PciAddress>,
}

/// Makes the early-claimed functions part of what `journal` holds as taken. `now` gives a
/// function's driver and override as they are.
/// - A function the journal does not hold is added with its original override from the
///   record, and as its driver "whatever the kernel picks" ([`Recorded::Unprobed`]): it was
///   claimed before any driver probed it. Unless a driver other than a vfio one, and other than
///   the one the override names, is bound now: then the claim came after the kernel's probe
///   (a hot-plug claim that lost the race), and that driver is its own. A function not on the
///   host is not added (its record is forgotten with the pass); one whose state is not known
///   here is left for a later pass.
/// - A function the journal holds with an override set is corrected: that override was our
///   early write, so the original override comes from the record, and a function the journal
///   found driverless, or on the driver our override named, had no driver of its own yet.
///
/// Idempotent.
pub fn fold(journal: &mut Journal, claims: &Records, now: &dyn Fn(PciAddress) -> Now) -> Folded {
    let mut out = Folded::default();
    for (address, previous) in &claims.records {
        let object = Object::Device { device: *address };
        let unprobed = Recorded::Unprobed {
            driver_override: previous.clone(),
        };
        let Some(entry) = journal.entries.iter_mut().find(|e| e.object == object) else {
            let now = match now(*address) {
                Now::Is(s) => s,
                Now::Gone => {
                    out.accounted.insert(*address);
                    continue;
                }
                Now::Unknown => continue,
            };
            let own_driver = now.driver.filter(|d| {
                !is_vfio_driver(d) && now.driver_override.as_deref() != Some(d.as_str())
            });
            let was = match own_driver {
                Some(d) => Recorded::Device(DeviceState {
                    driver: Some(d),
                    driver_override: previous.clone(),
                }),
                None => unprobed,
            };
            journal.record(object, was);
            out.changed = true;
            out.accounted.insert(*address);
            continue;
        };
        out.accounted.insert(*address);
        let corrected = match &entry.was {
            Recorded::Device(DeviceState {
                driver,
                driver_override: Some(ours),
            }) => {
                if driver.is_none() || driver.as_deref() == Some(ours.as_str()) {
                    unprobed
                } else {
                    Recorded::Device(DeviceState {
                        driver: driver.clone(),
                        driver_override: previous.clone(),
                    })
                }
            }
            // Recorded before the claim (no override of ours in it), or already folded.
            _ => continue,
        };
        entry.was = corrected;
        out.changed = true;
    }
    out
}

/// `now` for [`fold`] from a snapshot just read (a partial one knows only what it covers).
pub fn state_in(snap: &Snapshot) -> impl Fn(PciAddress) -> Now + '_ {
    |a| {
        if !snap.covered(a) {
            return Now::Unknown;
        }
        match snap.device(a) {
            Some(d) => Now::Is(DeviceState {
                driver: d.driver.clone(),
                driver_override: d.driver_override.clone(),
            }),
            None => Now::Gone,
        }
    }
}

/// `now` for [`fold`] asking the host function by function. A function that cannot be read
/// counts as driverless (taken with the kernel's pick), never as gone: its record must stay.
pub fn state_on(host: &dyn Host) -> impl Fn(PciAddress) -> Now + '_ {
    |a| match host.device_state(a) {
        Ok(s) => Now::Is(s),
        Err(KernelError::NoSuchDevice(_)) => Now::Gone,
        Err(_) => Now::Is(DeviceState::default()),
    }
}

/// Removes the records of the `folded` functions the journal no longer holds (given back, or
/// gone from the host). Records the fold did not account for (written while the pass ran, or
/// outside its partial snapshot) are left for a later pass.
pub fn forget_released(
    run_dir: &Path,
    folded: &Folded,
    journal: &Journal,
) -> Result<(), JournalError> {
    for address in &folded.accounted {
        if journal
            .original(&Object::Device { device: *address })
            .is_some()
        {
            continue;
        }
        files::remove_durable(&record_dir(run_dir), &address.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn dev(driver: Option<&str>, over: Option<&str>) -> Recorded {
        Recorded::Device(DeviceState {
            driver: driver.map(str::to_string),
            driver_override: over.map(str::to_string),
        })
    }

    fn claims(list: &[(&str, Option<&str>)]) -> Records {
        Records {
            records: list
                .iter()
                .map(|(x, p)| (a(x), p.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_and_the_first_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        assert!(Records::load(run).unwrap().is_empty());
        assert!(remember(run, &a("0000:00:01.0"), None).unwrap());
        assert!(remember(run, &a("0000:02:01.0"), Some("e1000")).unwrap());
        assert!(!remember(run, &a("0000:00:01.0"), Some("vfio-pci")).unwrap());
        fs::write(record_dir(run).join("README"), "x").unwrap();
        assert_eq!(
            Records::load(run).unwrap(),
            claims(&[("0000:00:01.0", None), ("0000:02:01.0", Some("e1000"))])
        );
        assert_eq!(
            fs::read_to_string(record_path(run, &a("0000:00:01.0"))).unwrap(),
            "{\"format\":1,\"driver_override\":null}\n"
        );
        // No temp file is left beside the records; only the staged record of an unset
        // override, which is no record.
        let mut names: Vec<String> = fs::read_dir(record_dir(run))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".unset", "0000:00:01.0", "0000:02:01.0", "README"],
            "{names:?}"
        );
    }

    // Staging makes a missing run directory as `watch` always did (the default mode: other
    // users reach the broker's socket in it), not 0700.
    #[test]
    fn staging_leaves_a_new_run_directory_reachable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        stage(&run).unwrap();
        let plain = dir.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&run), mode(&plain));
        assert_ne!(mode(&run), 0o700);
    }

    // The hot path: an unset override's record is one link of the staged whole record, staged
    // once; a staged record someone removed is staged again; removing one record leaves the
    // others whole.
    #[test]
    fn an_unset_override_is_recorded_by_linking_the_staged_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        stage(run).unwrap();
        let staged = record_dir(run).join(STAGED_UNSET);
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        assert!(remember(run, &a("0000:03:00.0"), None).unwrap());
        assert!(remember(run, &a("0000:04:00.0"), None).unwrap());
        assert_eq!(inode(&record_path(run, &a("0000:03:00.0"))), inode(&staged));
        assert!(!remember(run, &a("0000:03:00.0"), None).unwrap());
        fs::remove_file(&staged).unwrap();
        assert!(remember(run, &a("0000:05:00.0"), None).unwrap());
        assert!(staged.exists());
        files::remove_durable(&record_dir(run), "0000:03:00.0").unwrap();
        settle(run).unwrap();
        assert_eq!(
            Records::load(run).unwrap(),
            claims(&[("0000:04:00.0", None), ("0000:05:00.0", None)])
        );
        // Staging again over a whole staged record writes nothing.
        let before = inode(&staged);
        stage(run).unwrap();
        assert_eq!(inode(&staged), before);
    }

    /// Issue 15: a record cut short by a crash (or empty, or from something else) must never
    /// read as "the override was unset".
    #[test]
    fn a_damaged_record_fails_the_load_and_never_reads_as_unset() {
        let whole = String::from_utf8(encode(Some("pci-stub"))).unwrap();
        for damaged in [
            "",
            "\n",
            &whole[..whole.len() / 2],
            "(null)",
            "pci-stub",
            "{\"format\":2,\"driver_override\":null}",
            "{\"format\":1,\"driver_override\":\"(null)\"}",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let run = dir.path();
            fs::create_dir_all(record_dir(run)).unwrap();
            let path = record_path(run, &a("0000:00:01.0"));
            fs::write(&path, damaged).unwrap();
            let err = Records::load(run).unwrap_err().to_string();
            assert!(
                err.contains("damaged early-claim record"),
                "{damaged:?}: {err}"
            );
            assert!(err.contains("0000:00:01.0"), "{err}");
        }
        assert_eq!(decode(whole.as_bytes()), Ok(Some("pci-stub".into())));
        assert_eq!(decode(&encode(None)), Ok(None));
    }

    #[test]
    fn a_temp_file_left_by_a_crash_is_not_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        fs::create_dir_all(record_dir(run)).unwrap();
        fs::write(record_dir(run).join(".0000:00:01.0.new.42"), "").unwrap();
        fs::write(record_dir(run).join(".0000:00:01.0.new.42.tmp.42"), "{").unwrap();
        assert!(Records::load(run).unwrap().is_empty());
    }

    /// Every function on vfio-pci under our override, as after an early claim.
    fn claimed(_: PciAddress) -> Now {
        Now::Is(DeviceState {
            driver: Some("vfio-pci".into()),
            driver_override: Some("vfio-pci".into()),
        })
    }

    #[test]
    fn an_unheld_record_is_taken_with_the_kernels_pick() {
        let mut j = Journal::default();
        let c = claims(&[("0000:00:01.0", None)]);
        assert!(fold(&mut j, &c, &claimed).changed);
        assert_eq!(
            j.original(&Object::Device {
                device: a("0000:00:01.0")
            }),
            Some(&Recorded::Unprobed {
                driver_override: None
            })
        );
        // Folding again changes nothing.
        let before = j.clone();
        assert!(!fold(&mut j, &c, &claimed).changed);
        assert_eq!(j, before);
        // Claimed but not bound yet (vfio-pci not loaded): the same.
        let mut j = Journal::default();
        assert!(
            fold(&mut j, &c, &|_| Now::Is(DeviceState {
                driver: None,
                driver_override: Some("vfio-pci".into())
            }))
            .changed
        );
        assert_eq!(j, before);
    }

    #[test]
    fn a_claim_that_came_after_the_kernels_probe_keeps_the_probed_driver() {
        // A hot-plug claim that lost the race: e1000e probed first, our override came after.
        let mut j = Journal::default();
        let c = claims(&[("0000:00:01.0", None)]);
        assert!(
            fold(&mut j, &c, &|_| Now::Is(DeviceState {
                driver: Some("e1000e".into()),
                driver_override: Some("vfio-pci".into())
            }))
            .changed
        );
        assert_eq!(
            j.original(&Object::Device {
                device: a("0000:00:01.0")
            }),
            Some(&dev(Some("e1000e"), None))
        );
    }

    #[test]
    fn a_gone_function_is_not_taken_and_an_unknown_one_waits() {
        let c = claims(&[("0000:00:01.0", None)]);
        let mut j = Journal::default();
        let gone = fold(&mut j, &c, &|_| Now::Gone);
        assert!(!gone.changed);
        assert!(j.entries.is_empty());
        assert_eq!(gone.accounted, [a("0000:00:01.0")].into());
        let unknown = fold(&mut j, &c, &|_| Now::Unknown);
        assert_eq!(unknown, Folded::default());
        // Outside a partial snapshot is unknown; inside, absent is gone.
        let snap = Snapshot {
            covers: Some([a("0000:02:01.0")].into()),
            ..Snapshot::default()
        };
        let now = state_in(&snap);
        assert_eq!(now(a("0000:00:01.0")), Now::Unknown);
        assert_eq!(now(a("0000:02:01.0")), Now::Gone);
    }

    #[test]
    fn a_journal_entry_holding_our_early_override_is_corrected() {
        let nic = Object::Device {
            device: a("0000:00:01.0"),
        };
        let other = Object::Device {
            device: a("0000:02:01.0"),
        };
        let bound = Object::Device {
            device: a("0000:02:02.0"),
        };
        let before_claim = Object::Device {
            device: a("0000:01:00.0"),
        };
        let mut j = Journal::default();
        // Driverless under our override: it never had a driver of its own.
        j.record(nic, dev(None, Some("vfio-pci")));
        // A driver that probed before the claim is its own.
        j.record(other, dev(Some("e1000"), Some("vfio-pci")));
        // Bound by the kernel straight from our override.
        j.record(bound, dev(Some("vfio-pci"), Some("vfio-pci")));
        // Recorded with no override: not ours, the journal is right.
        j.record(before_claim, dev(Some("nvme"), None));
        let c = claims(&[
            ("0000:00:01.0", Some("pci-stub")),
            ("0000:02:01.0", None),
            ("0000:02:02.0", None),
            ("0000:01:00.0", Some("vfio-pci")),
        ]);
        assert!(fold(&mut j, &c, &claimed).changed);
        assert_eq!(
            j.original(&nic),
            Some(&Recorded::Unprobed {
                driver_override: Some("pci-stub".into())
            })
        );
        assert_eq!(j.original(&other), Some(&dev(Some("e1000"), None)));
        assert_eq!(
            j.original(&bound),
            Some(&Recorded::Unprobed {
                driver_override: None
            })
        );
        assert_eq!(j.original(&before_claim), Some(&dev(Some("nvme"), None)));
        assert_eq!(j.entries.len(), 4);
        assert!(!fold(&mut j, &c, &claimed).changed);
    }

    #[test]
    fn only_folded_records_of_released_functions_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        for x in ["0000:00:01.0", "0000:02:01.0", "0000:02:02.0"] {
            remember(run, &a(x), None).unwrap();
        }
        let mut j = Journal::default();
        j.record(
            Object::Device {
                device: a("0000:02:01.0"),
            },
            dev(None, None),
        );
        // 02:02.0 was recorded after the fold: not accounted for, kept for the next pass.
        let folded = Folded {
            changed: false,
            accounted: [a("0000:00:01.0"), a("0000:02:01.0")].into(),
        };
        forget_released(run, &folded, &j).unwrap();
        let left: Vec<PciAddress> = Records::load(run).unwrap().records.into_keys().collect();
        assert_eq!(left, vec![a("0000:02:01.0"), a("0000:02:02.0")]);
    }
}
