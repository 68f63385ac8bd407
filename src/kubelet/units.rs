//! What the plugin advertises: per `[[device]]` entry, one allocation unit per IOMMU group
//! (a group can only be given whole), with its health from the host as `watch` last read it.
//! Pure: config and snapshot in, inventory out.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::host::snapshot::Snapshot;
use crate::pci::PciAddress;

/// The extended resources' domain.
pub const RESOURCE_DOMAIN: &str = "vfioctl.io";

/// One allocatable IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The device ID kubelet sees: the PCI address of the group's first configured function
    /// (stable across restarts, so kubelet's checkpointed allocations stay valid).
    pub id: PciAddress,
    pub group: u32,
    /// The group's endpoint functions (bridges left out), in address order.
    pub functions: Vec<PciAddress>,
    pub numa_node: Option<i64>,
    pub healthy: bool,
    /// Why it is not healthy (for the log).
    pub reason: Option<String>,
    /// The functions' VFIO device cdevs (`vfioN`), when the unit is offered in the cdev form:
    /// the config's backend resolves to iommufd for them and each has one. `None`: the group
    /// form (`/dev/vfio/vfio` and `/dev/vfio/N`).
    pub cdevs: Option<Vec<String>>,
}

/// One `[[device]]` entry's resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The entry's name (`vfioctl.io/<name>` is the resource name).
    pub name: String,
    pub units: BTreeMap<PciAddress, Unit>,
}

impl Resource {
    /// `vfioctl.io/<name>`.
    pub fn resource_name(&self) -> String {
        format!("{RESOURCE_DOMAIN}/{}", self.name)
    }

    /// The variable KubeVirt's `externalResourceProvider` reads:
    /// `PCI_RESOURCE_<resource name upper-cased, every other character '_'>`.
    pub fn env_name(&self) -> String {
        let mapped: String = self
            .resource_name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("PCI_RESOURCE_{mapped}")
    }

    /// The plugin's socket file name in the kubelet's directory.
    pub fn socket_name(&self) -> String {
        format!("vfioctl-{}.sock", self.name)
    }
}

/// Every resource, by entry name.
pub type Inventory = BTreeMap<String, Resource>;

/// The units `config` yields on `host`. A group is the unit of the first entry (in config order)
/// that names one of its functions; a unit is healthy when the group is viable, its node exists
/// and every endpoint function is bound (the first configured one to the entry's driver).
pub fn inventory(config: &Config, host: &Snapshot) -> Inventory {
    let resolution = crate::plan::resolve::resolve(config, host, &[]);
    let mut taken = std::collections::BTreeSet::new();
    let mut out = Inventory::new();
    for (entry, found) in config.devices.iter().zip(&resolution.entries) {
        let mut units = BTreeMap::new();
        let mut found: Vec<PciAddress> = found.clone();
        found.sort();
        for a in found {
            let Some(dev) = host.device(a) else { continue };
            let Some(group) = dev.iommu_group else {
                continue;
            };
            if !taken.insert(group) {
                continue;
            }
            units.insert(a, unit(config, host, a, group, &entry.driver));
        }
        out.insert(
            entry.name.clone(),
            Resource {
                name: entry.name.clone(),
                units,
            },
        );
    }
    out
}

fn unit(config: &Config, host: &Snapshot, id: PciAddress, group: u32, driver: &str) -> Unit {
    let members: Vec<&crate::host::PciDevice> = host
        .group(group)
        .map(|g| g.devices.iter().filter_map(|a| host.device(*a)).collect())
        .unwrap_or_default();
    let mut functions: Vec<PciAddress> = members
        .iter()
        .filter(|d| !d.bridge)
        .map(|d| d.address)
        .collect();
    functions.sort();
    let numa_node = host
        .device(id)
        .and_then(|d| d.numa_node)
        .filter(|n| *n >= 0)
        .map(i64::from);
    let reason = if host.device(id).and_then(|d| d.driver.as_deref()) != Some(driver) {
        Some(format!("{id} is not on {driver}"))
    } else if let Some(d) = members.iter().find(|d| !d.bridge && d.driver.is_none()) {
        Some(format!("{} (same group) is not bound", d.address))
    } else if !host.viability(group).is_some_and(|v| v.viable) {
        Some(format!("IOMMU group {group} is not viable"))
    } else if host.group(group).and_then(|g| g.node.as_ref()).is_none() {
        Some(format!("/dev/vfio/{group} does not exist"))
    } else {
        None
    };
    let endpoints: Vec<&crate::host::PciDevice> =
        members.iter().copied().filter(|d| !d.bridge).collect();
    let cdevs: Option<Vec<String>> = endpoints
        .iter()
        .map(|d| d.vfio_cdev.as_ref().map(|c| c.name.clone()))
        .collect::<Option<Vec<String>>>()
        .filter(|c| !c.is_empty())
        .filter(|_| {
            crate::plan::backend::for_export(config, host, &endpoints)
                == crate::plan::backend::Backend::Iommufd
        });
    Unit {
        id,
        group,
        functions,
        numa_node,
        healthy: reason.is_none(),
        reason,
        cdevs,
    }
}

/// `next`, keeping as unhealthy the units of `previous` that vanished from a resource that is
/// still configured (a hot-unplugged group is reported Unhealthy, not silently dropped, so
/// kubelet stops placing pods on it and its capacity stays visible as unavailable).
/// Only entries in `unchanged` (same selector, driver and companions as before) carry: after an
/// edit that selects other functions, the old units are simply removed.
pub fn carry_gone(
    previous: &Inventory,
    mut next: Inventory,
    unchanged: &std::collections::BTreeSet<String>,
) -> Inventory {
    for (name, resource) in next.iter_mut() {
        let Some(before) = previous.get(name).filter(|_| unchanged.contains(name)) else {
            continue;
        };
        for (id, unit) in &before.units {
            resource.units.entry(*id).or_insert_with(|| Unit {
                healthy: false,
                reason: Some(format!("{id} is gone from the host")),
                ..unit.clone()
            });
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn workstation() -> Snapshot {
        crate::host::load_snapshot(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/hosts/workstation.json"
        )))
        .unwrap()
    }

    fn config(text: &str) -> Config {
        crate::config::parse_str(text, Path::new("t.toml")).unwrap()
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    /// On a host with iommufd a unit whose functions all have cdevs is offered in the cdev
    /// form; without `/dev/iommu`, or with `backend = "legacy"`, in the group form.
    #[test]
    fn units_carry_their_cdevs_where_the_backend_is_iommufd() {
        let mut host = workstation();
        for (i, d) in host.devices.iter_mut().enumerate() {
            if d.iommu_group == Some(2) && !d.bridge {
                d.driver = Some("vfio-pci".into());
                d.vfio_cdev = Some(crate::host::snapshot::DeviceCdev {
                    name: format!("vfio{i}"),
                    path: format!("/dev/vfio/devices/vfio{i}"),
                    major: 247,
                    minor: i as u32,
                    node: None,
                });
            }
        }
        let text = "version = 1\n[[device]]\nname = \"gpu\"\naddress = \"0000:01:00.1\"\n";
        let unit = |host: &Snapshot, text: &str| {
            inventory(&config(text), host)["gpu"].units[&addr("0000:01:00.1")].clone()
        };
        assert_eq!(unit(&host, text).cdevs, None, "no /dev/iommu");
        host.vfio.iommufd = true;
        let cdevs = unit(&host, text).cdevs.expect("the cdev form");
        assert_eq!(cdevs.len(), 2);
        assert!(cdevs.iter().all(|c| c.starts_with("vfio")));
        let legacy = text.replacen("version = 1\n", "version = 1\nbackend = \"legacy\"\n", 1);
        assert_eq!(unit(&host, &legacy).cdevs, None);
    }

    #[test]
    fn a_group_is_one_unit_named_by_its_first_configured_function() {
        let mut host = workstation();
        let c = config(
            "version = 1\n[[device]]\nname = \"gpu\"\naddress = \"0000:01:00.1\"\n\
             [[device]]\nname = \"gpu-video\"\naddress = \"0000:01:00.0\"\n\
             [[device]]\nname = \"nic\"\naddress = \"0000:03:00.0\"\n",
        );
        let inv = inventory(&c, &host);
        let gpu = &inv["gpu"];
        assert_eq!(gpu.units.len(), 1);
        let u = &gpu.units[&addr("0000:01:00.1")];
        assert_eq!(u.group, 2);
        // The root port is left out; both endpoint functions go together.
        assert_eq!(
            u.functions,
            vec![addr("0000:01:00.0"), addr("0000:01:00.1")]
        );
        assert!(!u.healthy, "nouveau and snd_hda_intel: not ready");
        // The group already belongs to "gpu".
        assert!(inv["gpu-video"].units.is_empty());
        assert_eq!(gpu.env_name(), "PCI_RESOURCE_VFIOCTL_IO_GPU");
        assert_eq!(inv["nic"].resource_name(), "vfioctl.io/nic");

        // On vfio-pci with a node: healthy.
        for d in host.devices.iter_mut() {
            if d.iommu_group == Some(2) && !d.bridge {
                d.driver = Some("vfio-pci".into());
            }
        }
        for g in host.groups.iter_mut().filter(|g| g.id == 2) {
            g.node = Some(crate::host::snapshot::NodeInfo {
                path: "/dev/vfio/2".into(),
                uid: 0,
                gid: 0,
                mode: 0o600,
            });
        }
        let inv = inventory(&c, &host);
        let u = &inv["gpu"].units[&addr("0000:01:00.1")];
        assert!(u.healthy, "{:?}", u.reason);
        assert!(!inv["nic"].units[&addr("0000:03:00.0")].healthy);

        // Unplugged: gone from the host, carried as unhealthy.
        host.devices
            .retain(|d| d.iommu_group != Some(2) || d.bridge);
        let same: std::collections::BTreeSet<String> = ["gpu".to_string()].into();
        let after = carry_gone(&inv, inventory(&c, &host), &same);
        let u = &after["gpu"].units[&addr("0000:01:00.1")];
        assert!(!u.healthy);
        assert_eq!(u.functions.len(), 2);
        // After an edit of the entry, units it no longer yields are removed, not carried.
        let after = carry_gone(&inv, inventory(&c, &host), &Default::default());
        assert!(after["gpu"].units.is_empty());
    }
}
