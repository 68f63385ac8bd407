//! Which kernel interface holds a domain, and in which form exports offer a device: the pure
//! resolution of `backend = "auto" | "iommufd" | "legacy"` (file-wide, or per `[[domain]]`)
//! against a host snapshot (issue 19).
//!
//! `auto` is iommufd where the kernel and every member support it: the snapshot shows
//! `/dev/iommu`, and every member function on a vfio driver has a VFIO device cdev; else
//! legacy (groups and type1 containers). An explicit `iommufd` on a host without it is not
//! realisable: [`Unrealisable`] names the domain and what is missing. Members not on a vfio
//! driver yet do not count either way (they are pending until bound).

use serde::{Deserialize, Serialize};

use crate::config::model::{BackendChoice, Config, DomainSpec};
use crate::host::snapshot::{is_vfio_driver, PciDevice, Snapshot};

/// The interface a domain is held through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// VFIO groups and type1 containers (`/dev/vfio/N`, `/dev/vfio/vfio`).
    #[default]
    Legacy,
    /// `/dev/iommu` with one IOAS per container, devices through their cdevs.
    Iommufd,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Iommufd => "iommufd",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resolved backend and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub backend: Backend,
    /// `auto: /dev/iommu present, every member has a cdev`, `set in the config`, ...
    pub why: String,
}

impl Resolved {
    /// The plan's and status's line: `domain "dma" backend iommufd (auto: ...)`.
    pub fn line(&self, domain: &str) -> String {
        format!(
            "domain \"{domain}\" backend {} ({})",
            self.backend, self.why
        )
    }
}

/// An explicit `backend = "iommufd"` the host cannot give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("domain \"{domain}\": backend \"iommufd\" is set, but this host cannot hold it that way: {missing}; boot a kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV, or set backend = \"auto\" (or \"legacy\") in its [[domain]] entry or at the top of the file")]
pub struct Unrealisable {
    pub domain: String,
    pub missing: String,
}

/// What keeps `members` off iommufd on `host`, if anything.
fn missing(host: &Snapshot, members: &[&PciDevice]) -> Option<String> {
    if !host.vfio.iommufd {
        return Some("/dev/iommu absent".to_string());
    }
    let without: Vec<String> = members
        .iter()
        .filter(|d| d.driver.as_deref().is_some_and(is_vfio_driver) && d.vfio_cdev.is_none())
        .map(|d| d.address.to_string())
        .collect();
    match without.len() {
        0 => None,
        1 => Some(format!("{} has no VFIO device cdev", without[0])),
        _ => Some(format!("{} have no VFIO device cdev", without.join(", "))),
    }
}

/// Resolves `choice` for a set of member functions. `Err` (what is missing) only for an
/// explicit `iommufd`.
pub fn resolve(
    choice: BackendChoice,
    host: &Snapshot,
    members: &[&PciDevice],
) -> Result<Resolved, String> {
    let on_vfio = members
        .iter()
        .any(|d| d.driver.as_deref().is_some_and(is_vfio_driver));
    match (choice, missing(host, members)) {
        (BackendChoice::Legacy, _) => Ok(Resolved {
            backend: Backend::Legacy,
            why: "set in the config".into(),
        }),
        (BackendChoice::Iommufd, None) => Ok(Resolved {
            backend: Backend::Iommufd,
            why: "set in the config".into(),
        }),
        (BackendChoice::Iommufd, Some(m)) => Err(m),
        (BackendChoice::Auto, None) => Ok(Resolved {
            backend: Backend::Iommufd,
            why: if on_vfio {
                "auto: /dev/iommu present, every member has a cdev".into()
            } else {
                "auto: /dev/iommu present, no member on a vfio driver yet".into()
            },
        }),
        (BackendChoice::Auto, Some(m)) => Ok(Resolved {
            backend: Backend::Legacy,
            why: format!("auto: {m}"),
        }),
    }
}

/// The functions a domain's `[[device]]` entries select on `host`.
pub fn members<'h>(config: &Config, spec: &DomainSpec, host: &'h Snapshot) -> Vec<&'h PciDevice> {
    let mut out: Vec<&PciDevice> = Vec::new();
    for name in &spec.devices {
        let Some(dev) = config.device(name) else {
            continue;
        };
        for d in &host.devices {
            if dev.selector.matches(d.address, &d.ids())
                && !out.iter().any(|o| o.address == d.address)
            {
                out.push(d);
            }
        }
    }
    out
}

/// The backend of one `[[domain]]` on `host`.
pub fn for_domain(
    config: &Config,
    spec: &DomainSpec,
    host: &Snapshot,
) -> Result<Resolved, Unrealisable> {
    resolve(spec.backend, host, &members(config, spec, host)).map_err(|missing| Unrealisable {
        domain: spec.name.clone(),
        missing,
    })
}

/// Every domain whose explicit `iommufd` this host cannot give (reconcile refuses them).
pub fn unrealisable(config: &Config, host: &Snapshot) -> Vec<Unrealisable> {
    config
        .domains
        .iter()
        .filter_map(|d| for_domain(config, d, host).err())
        .collect()
}

/// The form an export offers for `functions` (a `[[device]]` entry's): the backend of the
/// domain holding them, else the file-wide choice resolved for them. An unrealisable explicit
/// `iommufd` counts as legacy here: exports never offer nodes the host does not have.
pub fn for_export(config: &Config, host: &Snapshot, functions: &[&PciDevice]) -> Backend {
    let domain = config.domains.iter().find(|d| {
        members(config, d, host)
            .iter()
            .any(|m| functions.iter().any(|f| f.address == m.address))
    });
    let choice = domain.map_or(config.backend, |d| d.backend);
    resolve(choice, host, functions).map_or(Backend::Legacy, |r| r.backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::snapshot::DeviceCdev;

    fn host(iommufd: bool, cdevs: &[bool]) -> Snapshot {
        let text = r#"{"devices": [], "groups": []}"#;
        let mut s: Snapshot = serde_json::from_str(text).unwrap();
        s.vfio.iommufd = iommufd;
        for (i, has) in cdevs.iter().enumerate() {
            let mut d: PciDevice = serde_json::from_value(serde_json::json!({
                "address": format!("0000:00:0{}.0", i + 3),
                "vendor": "1234", "device": "11e8", "class": "00ff00",
                "driver": "vfio-pci", "driver_override": null, "iommu_group": i + 3
            }))
            .unwrap();
            if *has {
                d.vfio_cdev = Some(DeviceCdev {
                    name: format!("vfio{i}"),
                    path: format!("/dev/vfio/devices/vfio{i}"),
                    major: 247,
                    minor: i as u32,
                    node: None,
                });
            }
            s.devices.push(d);
        }
        s.normalize();
        s
    }

    fn all(s: &Snapshot) -> Vec<&PciDevice> {
        s.devices.iter().collect()
    }

    #[test]
    fn auto_takes_iommufd_only_with_dev_iommu_and_every_cdev() {
        let s = host(true, &[true, true]);
        let r = resolve(BackendChoice::Auto, &s, &all(&s)).unwrap();
        assert_eq!(r.backend, Backend::Iommufd);
        assert_eq!(
            r.line("dma"),
            "domain \"dma\" backend iommufd (auto: /dev/iommu present, every member has a cdev)"
        );
        let s = host(false, &[true]);
        let r = resolve(BackendChoice::Auto, &s, &all(&s)).unwrap();
        assert_eq!(
            r.line("dma"),
            "domain \"dma\" backend legacy (auto: /dev/iommu absent)"
        );
        let s = host(true, &[true, false]);
        let r = resolve(BackendChoice::Auto, &s, &all(&s)).unwrap();
        assert_eq!(r.backend, Backend::Legacy);
        assert_eq!(r.why, "auto: 0000:00:04.0 has no VFIO device cdev");
    }

    #[test]
    fn members_not_on_vfio_do_not_decide() {
        let mut s = host(true, &[true, false]);
        s.devices[1].driver = Some("e1000e".into());
        let r = resolve(BackendChoice::Auto, &s, &all(&s)).unwrap();
        assert_eq!(r.backend, Backend::Iommufd);
        s.devices[0].driver = None;
        let r = resolve(BackendChoice::Auto, &s, &all(&s)).unwrap();
        assert_eq!(
            r.why,
            "auto: /dev/iommu present, no member on a vfio driver yet"
        );
    }

    #[test]
    fn explicit_iommufd_on_a_host_without_it_names_what_is_missing() {
        let s = host(false, &[true]);
        assert_eq!(
            resolve(BackendChoice::Iommufd, &s, &all(&s)),
            Err("/dev/iommu absent".to_string())
        );
        let s = host(true, &[false, false]);
        assert_eq!(
            resolve(BackendChoice::Iommufd, &s, &all(&s)),
            Err("0000:00:03.0, 0000:00:04.0 have no VFIO device cdev".to_string())
        );
        let s = host(true, &[true]);
        assert_eq!(
            resolve(BackendChoice::Iommufd, &s, &all(&s))
                .unwrap()
                .backend,
            Backend::Iommufd
        );
        // Legacy is always realisable.
        let s = host(false, &[false]);
        assert_eq!(
            resolve(BackendChoice::Legacy, &s, &all(&s))
                .unwrap()
                .backend,
            Backend::Legacy
        );
    }

    #[test]
    fn domains_and_exports_resolve_through_the_config() {
        let text = r#"
version = 1
backend = "legacy"
[[device]]
name = "a"
address = "0000:00:03.0"
[[device]]
name = "b"
address = "0000:00:04.0"
[[domain]]
name = "dma"
devices = ["a"]
backend = "iommufd"
"#;
        let config = crate::config::parse_str(text, std::path::Path::new("t.toml")).unwrap();
        let s = host(false, &[true, true]);
        let err = unrealisable(&config, &s);
        assert_eq!(err.len(), 1);
        let msg = err[0].to_string();
        assert!(
            msg.starts_with("domain \"dma\": backend \"iommufd\" is set")
                && msg.contains("/dev/iommu absent"),
            "{msg}"
        );
        let s = host(true, &[true, true]);
        assert!(unrealisable(&config, &s).is_empty());
        // `a` follows its domain, `b` the file-wide legacy.
        assert_eq!(for_export(&config, &s, &[&s.devices[0]]), Backend::Iommufd);
        assert_eq!(for_export(&config, &s, &[&s.devices[1]]), Backend::Legacy);
    }
}
