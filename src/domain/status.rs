//! What `vfioctl status` shows of held domains: per domain its containers (role, member
//! groups, available DMA mappings from `VFIO_IOMMU_GET_INFO`), its windows and the bytes it
//! pins. Plain serialisable data, so `watch` can answer a status request with it, plus the
//! text rendering the status command prints.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::held::HeldDomain;
use super::iommu::{Backing, Iommu};
use super::placement::Role;
use super::placement_name;
use super::windows::human_bytes;
use crate::plan::backend::Backend;

/// One container of a held domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub role: Role,
    pub groups: Vec<u32>,
    /// The IOAS id (iommufd backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioas: Option<u32>,
    /// `CAP_DMA_AVAIL` from the last `VFIO_IOMMU_GET_INFO`.
    #[serde(default)]
    pub dma_avail: Option<u32>,
    /// Supported IOMMU page sizes (bitmap).
    #[serde(default)]
    pub page_sizes: Option<u64>,
}

/// One window mapped in every container of its domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStatus {
    pub name: String,
    pub iova: u64,
    pub size: u64,
    /// Backed by huge pages.
    pub hugepages: bool,
}

/// A held domain, as `status` shows it (the `domains` array of `status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub name: String,
    pub placement: String,
    /// `"iommufd"` or `"legacy"` (absent in what a vfioctl before issue 19 published: legacy).
    #[serde(default)]
    pub backend: Backend,
    /// Why that backend (`auto: /dev/iommu absent`, `set in the config`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend_why: String,
    /// More than one container in a shared domain: groups the kernel refused to share.
    pub mirrored: bool,
    pub containers: Vec<ContainerStatus>,
    pub windows: Vec<WindowStatus>,
    /// Window bytes times containers: what counts against RLIMIT_MEMLOCK.
    pub bytes_pinned: u64,
}

impl DomainStatus {
    pub fn of<I: Iommu>(d: &HeldDomain<I>) -> Self {
        DomainStatus {
            name: d.name.clone(),
            placement: placement_name(d.placement).to_string(),
            backend: d.backend,
            backend_why: d.backend_why.clone(),
            mirrored: d.containers.iter().any(|c| c.role == Role::Mirror),
            containers: d
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    role: c.role,
                    groups: c.group_ids(),
                    ioas: c.ioas(),
                    dma_avail: c.info.as_ref().and_then(|i| i.dma_avail),
                    page_sizes: c.info.as_ref().map(|i| i.page_sizes),
                })
                .collect(),
            windows: d
                .windows
                .iter()
                .map(|w| WindowStatus {
                    name: w.window.name.clone(),
                    iova: w.window.iova,
                    size: w.window.size,
                    hugepages: w.memory.huge(),
                })
                .collect(),
            bytes_pinned: d.pinned_bytes(),
        }
    }
}

/// The text `vfioctl status` prints for the domains section.
pub fn render_text(domains: &[DomainStatus]) -> String {
    let mut out = String::new();
    if domains.is_empty() {
        out.push_str("Domains: none held\n");
        return out;
    }
    out.push_str("Domains:\n");
    for d in domains {
        let _ = writeln!(
            out,
            "  {} ({}{}{}): {} container(s), {} window(s), {} pinned",
            d.name,
            d.placement,
            if d.backend == Backend::Iommufd {
                ", iommufd"
            } else {
                ""
            },
            if d.mirrored { ", mirrored" } else { "" },
            d.containers.len(),
            d.windows.len(),
            human_bytes(d.bytes_pinned)
        );
        if !d.backend_why.is_empty() {
            // As the plan says it: `domain "dma" backend iommufd (auto: ...)`.
            let _ = writeln!(
                out,
                "    domain \"{}\" backend {} ({})",
                d.name, d.backend, d.backend_why
            );
        }
        for (i, c) in d.containers.iter().enumerate() {
            let groups: Vec<String> = c.groups.iter().map(u32::to_string).collect();
            let avail = c
                .dma_avail
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            match c.ioas {
                Some(id) => {
                    let _ = writeln!(
                        out,
                        "    IOAS {id} ({}): groups {}",
                        c.role,
                        groups.join(", ")
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "    container {i} ({}): groups {}; DMA mappings available: {avail}",
                        c.role,
                        groups.join(", ")
                    );
                }
            }
        }
        for w in &d.windows {
            let _ = writeln!(
                out,
                "    window \"{}\": IOVA {:#x}..{:#x} ({}{})",
                w.name,
                w.iova,
                w.iova.saturating_add(w.size),
                human_bytes(w.size),
                if w.hugepages { ", huge pages" } else { "" }
            );
        }
    }
    out
}

/// `status --json` with held domains: the snapshot's JSON object plus a top-level `domains`
/// array.
pub fn with_domains_json(snap: &crate::host::Snapshot, domains: &[DomainStatus]) -> String {
    let mut v = serde_json::to_value(snap).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut v {
        map.insert(
            "domains".into(),
            serde_json::to_value(domains).unwrap_or_default(),
        );
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}
