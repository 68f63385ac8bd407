//! The boot-time claim, run by the udev rule on `add` before any driver module is loaded:
//! if the config names this function, write the target driver to its `driver_override` so the
//! module that `80-drivers.rules` loads next does not bind it. Nothing else: binding, node
//! ownership and everything the planner decides happen in the `reconcile --device` the rule
//! runs afterwards (and in `watch`).
//!
//! It must be fast and must never make a boot worse: it reads the function's ids from sysfs,
//! matches them against the config, writes one attribute, and records the override it replaced
//! under `--run-dir` ([`crate::apply::early_claims`], which owns the records) so the function
//! counts as taken and a later release restores the real original, not our early write.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::apply::early_claims;
use crate::apply::journal::JournalError;
use crate::config::Config;
use crate::host::Roots;
pub use crate::pci::FunctionIds;
use crate::pci::{PciAddress, PciClass, PciId};

/// Why the claim could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unexpected content {content:?}")]
    Malformed { path: PathBuf, content: String },
    #[error("recording the early claim failed: {0}")]
    Record(#[from] JournalError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ClaimError + '_ {
    move |source| ClaimError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_attr(dir: &Path, name: &str) -> Result<Option<String>, ClaimError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn read_id(dir: &Path, name: &str) -> Result<Option<PciId>, ClaimError> {
    match read_attr(dir, name)? {
        None => Ok(None),
        Some(s) => PciId::parse(&s).map(Some).ok_or(ClaimError::Malformed {
            path: dir.join(name),
            content: s,
        }),
    }
}

/// Reads a function's ids from `/sys/bus/pci/devices/ADDR`.
pub fn read_ids(roots: &Roots, address: &PciAddress) -> Result<FunctionIds, ClaimError> {
    let dir = roots.pci_device(address);
    let required = |name: &str| -> Result<PciId, ClaimError> {
        read_id(&dir, name)?.ok_or_else(|| ClaimError::Io {
            path: dir.join(name),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    };
    let class = match read_attr(&dir, "class")? {
        None => None,
        Some(s) => Some(PciClass::parse(&s).ok_or(ClaimError::Malformed {
            path: dir.join("class"),
            content: s,
        })?),
    };
    Ok(FunctionIds {
        vendor: required("vendor")?,
        device: required("device")?,
        subsystem_vendor: read_id(&dir, "subsystem_vendor")?,
        subsystem_device: read_id(&dir, "subsystem_device")?,
        class,
    })
}

/// The driver the config wants on this function: it is selected by a `[[device]]` entry
/// (address, or ids with every narrower field that is given), or named as a companion.
/// Without `ids` (a uevent that carried none) only addresses can match.
pub fn wanted_driver<'c>(
    config: &'c Config,
    address: &PciAddress,
    ids: Option<&FunctionIds>,
) -> Option<&'c str> {
    let selected = config
        .devices
        .iter()
        .find(|spec| match (&spec.selector, ids) {
            (crate::config::Selector::Address(a), _) => a == address,
            (selector, Some(ids)) => selector.matches(*address, ids),
            (_, None) => false,
        });
    selected
        .or_else(|| {
            config
                .devices
                .iter()
                .find(|spec| spec.companions.contains(address))
        })
        .map(|spec| spec.driver.as_str())
}

/// What [`claim`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The override was already the wanted driver.
    AlreadySet,
    /// The override was written; it replaced `previous` (`None`: unset).
    Written { previous: Option<String> },
}

/// Writes `driver` to the function's `driver_override` unless it is already set to it,
/// recording the value it replaced (empty for unset) under `run_dir` first.
pub fn claim(
    roots: &Roots,
    run_dir: &Path,
    address: &PciAddress,
    driver: &str,
) -> Result<Claim, ClaimError> {
    let dir = roots.pci_device(address);
    let current = read_attr(&dir, "driver_override")?.filter(|s| s != "(null)" && !s.is_empty());
    if current.as_deref() == Some(driver) {
        return Ok(Claim::AlreadySet);
    }
    // The first early claim's record wins: a second `add` must not overwrite the original.
    early_claims::remember(run_dir, address, current.as_deref())?;
    let path = dir.join("driver_override");
    fs::write(&path, driver).map_err(io_err(&path))?;
    Ok(Claim::Written { previous: current })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::early_claims::record_path;
    use crate::config::{DeviceSpec, Origin, Selector};

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn spec(name: &str, selector: Selector, companions: Vec<PciAddress>) -> DeviceSpec {
        DeviceSpec {
            name: name.into(),
            selector,
            driver: "vfio-pci".into(),
            companions,
            force: false,
            origin: Origin::default(),
        }
    }

    fn ids(vendor: u16, device: u16, subsystem_vendor: Option<u16>) -> FunctionIds {
        FunctionIds {
            vendor: PciId(vendor),
            device: PciId(device),
            subsystem_vendor: subsystem_vendor.map(PciId),
            subsystem_device: None,
            class: Some(PciClass(0x020000)),
        }
    }

    fn config() -> Config {
        Config {
            version: 1,
            devices: vec![
                spec(
                    "nvme",
                    Selector::Address(addr("0000:01:00.0")),
                    vec![addr("0000:01:00.1")],
                ),
                spec(
                    "nics",
                    Selector::Ids {
                        vendor: PciId(0x8086),
                        device: PciId(0x10d3),
                        subsystem_vendor: Some(PciId(0x1af4)),
                        subsystem_device: None,
                        class: None,
                    },
                    vec![],
                ),
            ],
            ..Config::default()
        }
    }

    #[test]
    fn address_ids_and_companions_are_wanted() {
        let c = config();
        let any = ids(0x1b36, 0x0010, None);
        assert_eq!(
            wanted_driver(&c, &addr("0000:01:00.0"), Some(&any)),
            Some("vfio-pci")
        );
        assert_eq!(
            wanted_driver(&c, &addr("0000:01:00.1"), Some(&any)),
            Some("vfio-pci")
        );
        assert_eq!(wanted_driver(&c, &addr("0000:02:00.0"), Some(&any)), None);
        let nic = ids(0x8086, 0x10d3, Some(0x1af4));
        assert_eq!(
            wanted_driver(&c, &addr("0000:03:00.0"), Some(&nic)),
            Some("vfio-pci")
        );
        let other_subsystem = ids(0x8086, 0x10d3, Some(0x8086));
        assert_eq!(
            wanted_driver(&c, &addr("0000:03:00.0"), Some(&other_subsystem)),
            None
        );
    }

    fn fake_function(root: &Path, a: &str, override_: &str) -> Roots {
        let roots = Roots::under(root);
        let dir = roots.pci_device(&addr(a));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), "0x8086\n").unwrap();
        fs::write(dir.join("device"), "0x10d3\n").unwrap();
        fs::write(dir.join("class"), "0x020000\n").unwrap();
        fs::write(dir.join("driver_override"), override_).unwrap();
        roots
    }

    #[test]
    fn claim_writes_the_override_and_records_the_original_once() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = fake_function(tmp.path(), "0000:03:00.0", "(null)\n");
        let run = tmp.path().join("run");
        let a = addr("0000:03:00.0");
        let read = read_ids(&roots, &a).unwrap();
        assert_eq!(read.vendor, PciId(0x8086));
        assert_eq!(read.subsystem_vendor, None);

        assert_eq!(
            claim(&roots, &run, &a, "vfio-pci").unwrap(),
            Claim::Written { previous: None }
        );
        let ov = roots.pci_device(&a).join("driver_override");
        assert_eq!(fs::read_to_string(&ov).unwrap(), "vfio-pci");
        assert_eq!(fs::read_to_string(record_path(&run, &a)).unwrap(), "");

        assert_eq!(
            claim(&roots, &run, &a, "vfio-pci").unwrap(),
            Claim::AlreadySet
        );
        // A different target later keeps the first record (the true original).
        fs::write(&ov, "other\n").unwrap();
        assert_eq!(
            claim(&roots, &run, &a, "vfio-pci").unwrap(),
            Claim::Written {
                previous: Some("other".into())
            }
        );
        assert_eq!(fs::read_to_string(record_path(&run, &a)).unwrap(), "");
    }

    #[test]
    fn malformed_ids_are_reported_with_their_path() {
        let tmp = tempfile::tempdir().unwrap();
        let roots = fake_function(tmp.path(), "0000:03:00.0", "");
        let dir = roots.pci_device(&addr("0000:03:00.0"));
        fs::write(dir.join("vendor"), "banana\n").unwrap();
        let err = read_ids(&roots, &addr("0000:03:00.0")).unwrap_err();
        assert!(err.to_string().contains("vendor"), "{err}");
    }
}
