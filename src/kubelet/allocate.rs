//! The plugin's answers, pure: what a container gets for the units kubelet picked
//! ([`allocate`]), and which units to prefer ([`preferred`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::api;
use super::units::{Resource, Unit, RESOURCE_DOMAIN};
use crate::pci::PciAddress;

/// Why an allocation is refused (kubelet then fails the pod's admission and retries elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{resource}: no unit {id} on this node; kubelet's list is stale, it will be refreshed"
    )]
    Unknown { resource: String, id: String },
    #[error("{resource}: unit {id} is not ready ({reason}); it is reported Unhealthy")]
    Unhealthy {
        resource: String,
        id: String,
        reason: String,
    },
}

/// The CDI name of a function, as `vfioctl cdi` writes it.
pub fn cdi_name(function: &PciAddress) -> String {
    format!("{RESOURCE_DOMAIN}/device={function}")
}

fn lookup<'a>(resource: &'a Resource, id: &str) -> Result<&'a Unit, Refused> {
    let unit = id
        .parse::<PciAddress>()
        .ok()
        .and_then(|a| resource.units.get(&a))
        .ok_or_else(|| Refused::Unknown {
            resource: resource.resource_name(),
            id: id.to_string(),
        })?;
    if !unit.healthy {
        return Err(Refused::Unhealthy {
            resource: resource.resource_name(),
            id: id.to_string(),
            reason: unit.reason.clone().unwrap_or_default(),
        });
    }
    Ok(unit)
}

/// One container's devices: the CDI names of every function of the units, and for runtimes
/// without CDI the device nodes (`/dev/vfio/vfio` and each group's node, read-write; or, when
/// every unit is offered in the cdev form, `/dev/iommu` and each function's
/// `/dev/vfio/devices/vfioN`) and `PCI_RESOURCE_VFIOCTL_IO_<NAME>` (the functions,
/// comma-separated) for KubeVirt.
pub fn allocate(
    resource: &Resource,
    ids: &[String],
    dev_root: &Path,
) -> Result<api::ContainerAllocateResponse, Refused> {
    let mut units = Vec::new();
    for id in ids {
        units.push(lookup(resource, id)?);
    }
    let node = |container: String, host: std::path::PathBuf| api::DeviceSpec {
        container_path: container,
        host_path: host.to_string_lossy().into_owned(),
        permissions: "rw".into(),
    };
    let cdevs: Option<Vec<&String>> = units
        .iter()
        .map(|u| u.cdevs.as_ref())
        .collect::<Option<Vec<_>>>()
        .map(|v| v.into_iter().flatten().collect());
    let mut devices = Vec::new();
    match cdevs {
        Some(cdevs) => {
            devices.push(node("/dev/iommu".into(), dev_root.join("iommu")));
            for c in cdevs {
                devices.push(node(
                    format!("/dev/vfio/devices/{c}"),
                    dev_root.join("vfio").join("devices").join(c),
                ));
            }
        }
        None => {
            devices.push(node(
                "/dev/vfio/vfio".into(),
                dev_root.join("vfio").join("vfio"),
            ));
            for u in &units {
                devices.push(node(
                    format!("/dev/vfio/{}", u.group),
                    dev_root.join("vfio").join(u.group.to_string()),
                ));
            }
        }
    }
    let mut functions = Vec::new();
    for u in &units {
        functions.extend(u.functions.iter().copied());
    }
    let envs = BTreeMap::from([(
        resource.env_name(),
        functions
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(","),
    )]);
    Ok(api::ContainerAllocateResponse {
        envs: envs.into_iter().collect(),
        mounts: vec![],
        devices,
        annotations: Default::default(),
        cdi_devices: functions
            .iter()
            .map(|f| api::CdiDevice { name: cdi_name(f) })
            .collect(),
    })
}

/// `size` units from `available`, with every `must` one, preferring one NUMA node: the node of
/// the required units if they share one, else the node with the most available units; then
/// the rest in address order. Unknown or unhealthy IDs are never preferred.
pub fn preferred(
    resource: &Resource,
    available: &[String],
    must: &[String],
    size: usize,
) -> Vec<String> {
    let healthy = |id: &String| lookup(resource, id).ok();
    let mut chosen: Vec<String> = must.to_vec();
    let mut pool: Vec<&Unit> = available
        .iter()
        .filter(|id| !must.contains(id))
        .filter_map(healthy)
        .collect();
    pool.sort_by_key(|u| u.id);
    let must_nodes: std::collections::BTreeSet<Option<i64>> = must
        .iter()
        .filter_map(healthy)
        .map(|u| u.numa_node)
        .collect();
    let node = if must_nodes.len() == 1 {
        must_nodes.into_iter().next().flatten()
    } else {
        let mut count: BTreeMap<i64, usize> = BTreeMap::new();
        for u in &pool {
            if let Some(n) = u.numa_node {
                *count.entry(n).or_default() += 1;
            }
        }
        // Most units first; the lowest node among equals.
        count
            .into_iter()
            .max_by_key(|(n, c)| (*c, std::cmp::Reverse(*n)))
            .map(|(n, _)| n)
    };
    pool.sort_by_key(|u| (u.numa_node != node, u.id));
    for u in pool {
        if chosen.len() >= size {
            break;
        }
        chosen.push(u.id.to_string());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: &str, group: u32, numa: Option<i64>, healthy: bool) -> Unit {
        let id: PciAddress = id.parse().unwrap();
        Unit {
            id,
            group,
            functions: vec![id],
            numa_node: numa,
            healthy,
            reason: (!healthy).then(|| "not on vfio-pci".into()),
            cdevs: None,
        }
    }

    #[test]
    fn units_in_the_cdev_form_get_dev_iommu_and_their_cdevs() {
        let mut a = unit("0000:05:00.0", 7, None, true);
        a.cdevs = Some(vec!["vfio3".into()]);
        let mut b = unit("0000:06:00.0", 8, None, true);
        b.cdevs = Some(vec!["vfio4".into()]);
        let r = resource(vec![a, b.clone()]);
        let ids = ["0000:05:00.0".to_string(), "0000:06:00.0".to_string()];
        let resp = allocate(&r, &ids, Path::new("/dev")).unwrap();
        let paths: Vec<_> = resp.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/dev/iommu",
                "/dev/vfio/devices/vfio3",
                "/dev/vfio/devices/vfio4"
            ]
        );
        let inside: Vec<_> = resp
            .devices
            .iter()
            .map(|d| d.container_path.as_str())
            .collect();
        assert_eq!(inside, paths);
        // A unit without the cdev form keeps the whole answer in the group form.
        b.cdevs = None;
        let r = resource(vec![unit("0000:05:00.0", 7, None, true), b]);
        let resp = allocate(&r, &ids, Path::new("/dev")).unwrap();
        let paths: Vec<_> = resp.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(paths, ["/dev/vfio/vfio", "/dev/vfio/7", "/dev/vfio/8"]);
    }

    fn resource(units: Vec<Unit>) -> Resource {
        Resource {
            name: "nic-vf".into(),
            units: units.into_iter().map(|u| (u.id, u)).collect(),
        }
    }

    #[test]
    fn allocation_names_nodes_env_and_cdi_and_refuses_unhealthy_units() {
        let mut two = unit("0000:05:00.0", 7, None, true);
        two.functions.push("0000:05:00.1".parse().unwrap());
        let r = resource(vec![two, unit("0000:06:00.0", 8, None, false)]);
        let resp = allocate(&r, &["0000:05:00.0".into()], Path::new("/dev")).unwrap();
        assert_eq!(
            resp.envs["PCI_RESOURCE_VFIOCTL_IO_NIC_VF"],
            "0000:05:00.0,0000:05:00.1"
        );
        let paths: Vec<_> = resp.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(paths, ["/dev/vfio/vfio", "/dev/vfio/7"]);
        assert!(resp.devices.iter().all(|d| d.permissions == "rw"));
        let cdi: Vec<_> = resp.cdi_devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            cdi,
            [
                "vfioctl.io/device=0000:05:00.0",
                "vfioctl.io/device=0000:05:00.1"
            ]
        );
        let err = allocate(&r, &["0000:06:00.0".into()], Path::new("/dev")).unwrap_err();
        assert!(matches!(err, Refused::Unhealthy { .. }), "{err}");
        let err = allocate(&r, &["bogus".into()], Path::new("/dev")).unwrap_err();
        assert!(matches!(err, Refused::Unknown { .. }), "{err}");
    }

    #[test]
    fn preference_keeps_to_one_numa_node() {
        let r = resource(vec![
            unit("0000:01:00.0", 1, Some(0), true),
            unit("0000:02:00.0", 2, Some(1), true),
            unit("0000:03:00.0", 3, Some(1), true),
            unit("0000:04:00.0", 4, Some(0), false),
            unit("0000:05:00.0", 5, Some(1), true),
        ]);
        let all: Vec<String> = r.units.keys().map(|a| a.to_string()).collect();
        // Node 1 has the most healthy units.
        assert_eq!(
            preferred(&r, &all, &[], 2),
            ["0000:02:00.0", "0000:03:00.0"]
        );
        // A required unit on node 0 pulls the rest there while it can; unhealthy ones are skipped.
        assert_eq!(
            preferred(&r, &all, &["0000:01:00.0".into()], 2),
            ["0000:01:00.0", "0000:02:00.0"]
        );
        assert_eq!(preferred(&r, &all, &[], 9).len(), 4);
    }
}
