//! What the broker offers, shared between `watch` (which refreshes it after every pass) and
//! the server thread (which only reads it under the lock). An offer owns duplicates of the
//! held domain's fds, so the server never borrows from the domain layer across threads; a
//! domain released by a pass is dropped from the offers in the same pass, closing the
//! duplicates before its devices can go back to their host drivers.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::protocol::{
    Description, DeviceDesc, GroupDesc, IoasDesc, IommufdDesc, WindowDesc, VERSION,
};
use crate::config::Config;
use crate::domain::held::DomainFds;
use crate::domain::iommu::{Iommu, IommuError};
use crate::domain::Domains;
use crate::host::accounts::Accounts;
use crate::host::snapshot::Snapshot;
use crate::plan::backend::Backend;

/// One domain ready to hand over: its description and the fds it indexes.
#[derive(Debug)]
pub struct Offer {
    pub description: Description,
    pub fds: Vec<OwnedFd>,
}

impl Offer {
    /// Duplicates a held domain's fds (`F_DUPFD_CLOEXEC`) from the fd view `domain` gives, and
    /// describes them; members' addresses come from `host` (legacy) or the held cdevs
    /// (iommufd).
    pub fn of(domain: &str, f: &DomainFds<'_>, host: Option<&Snapshot>) -> std::io::Result<Offer> {
        if f.backend == Backend::Iommufd {
            return Self::of_iommufd(domain, f);
        }
        let mut fds = Vec::new();
        let mut containers = Vec::new();
        for c in &f.containers {
            containers.push(fds.len());
            fds.push(c.try_clone_to_owned()?);
        }
        let mut groups = Vec::new();
        for (g, fd, container) in &f.groups {
            groups.push(GroupDesc {
                group: *g,
                fd: fds.len(),
                container: *container,
            });
            fds.push(fd.try_clone_to_owned()?);
        }
        let mut windows = Vec::new();
        for (w, fd) in &f.windows {
            windows.push(WindowDesc {
                name: w.name.clone(),
                iova: w.iova,
                size: w.size,
                fd: fds.len(),
            });
            fds.push(fd.try_clone_to_owned()?);
        }
        let devices = host
            .map(|h| {
                h.devices
                    .iter()
                    .filter_map(|d| {
                        let g = d.iommu_group?;
                        let gd = groups.iter().find(|x| x.group == g)?;
                        Some(DeviceDesc {
                            address: d.address.to_string(),
                            group: g,
                            fd: gd.fd,
                            ioas: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Offer {
            description: Description {
                version: VERSION,
                domain: domain.to_string(),
                containers,
                groups,
                windows,
                devices,
                iommufd: None,
            },
            fds,
        })
    }

    /// An iommufd domain: the iommufd once, each member's bound and attached cdev fd, the
    /// window memfds; the IOAS ids in the description.
    fn of_iommufd(domain: &str, f: &DomainFds<'_>) -> std::io::Result<Offer> {
        let mut fds = Vec::new();
        let iommufd = match f.containers.first() {
            Some(fd) => {
                let mut ioas: Vec<IoasDesc> = f
                    .ioas
                    .iter()
                    .map(|&id| IoasDesc { id, groups: vec![] })
                    .collect();
                for (g, _, _, c) in &f.devices {
                    if let Some(i) = ioas.get_mut(*c) {
                        if !i.groups.contains(g) {
                            i.groups.push(*g);
                        }
                    }
                }
                fds.push(fd.try_clone_to_owned()?);
                Some(IommufdDesc { fd: 0, ioas })
            }
            None => None,
        };
        let mut devices = Vec::new();
        for (g, address, fd, c) in &f.devices {
            devices.push(DeviceDesc {
                address: address.to_string(),
                group: *g,
                fd: fds.len(),
                ioas: f.ioas.get(*c).copied(),
            });
            fds.push(fd.try_clone_to_owned()?);
        }
        let mut windows = Vec::new();
        for (w, fd) in &f.windows {
            windows.push(WindowDesc {
                name: w.name.clone(),
                iova: w.iova,
                size: w.size,
                fd: fds.len(),
            });
            fds.push(fd.try_clone_to_owned()?);
        }
        Ok(Offer {
            description: Description {
                version: VERSION,
                domain: domain.to_string(),
                containers: Vec::new(),
                groups: Vec::new(),
                windows,
                devices,
                iommufd,
            },
            fds,
        })
    }
}

/// One hand-over, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handed {
    pub domain: String,
    pub uid: u32,
    pub pid: i32,
    pub fds: usize,
    /// Seconds since the epoch.
    pub at: u64,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub struct Offers {
    pub domains: BTreeMap<String, Offer>,
    /// The config and the accounts its names resolve to, as of the last pass.
    pub policy: Option<(Config, Accounts)>,
    /// Hand-overs since start (newest last, bounded).
    pub handed: Vec<Handed>,
    pub refused: u64,
    /// Hand-overs since start (all of them; `handed` keeps only the latest), for the metrics.
    pub granted: u64,
}

/// Most hand-overs remembered for `status`.
pub const HANDED_KEPT: usize = 64;

impl Offers {
    pub fn record(&mut self, h: Handed) {
        self.granted += 1;
        if self.handed.len() >= HANDED_KEPT {
            self.handed.remove(0);
        }
        self.handed.push(h);
    }
}

/// Opens a fresh `/dev/iommu` for a caller, through the [`Iommu`] seam of the broker's own
/// (never the domain layer's: a separate instance on the same roots).
type OpenIommufd = Box<dyn FnMut() -> Result<OwnedFd, IommuError> + Send>;

/// Where fresh iommufds come from; none until [`Handout::serve_iommufd`].
#[derive(Clone, Default)]
struct Opener(Arc<Mutex<Option<OpenIommufd>>>);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener")
    }
}

/// The shared handle.
#[derive(Debug, Clone, Default)]
pub struct Handout(Arc<Mutex<Offers>>, Opener);

impl Handout {
    pub fn new() -> Self {
        Self::default()
    }

    /// The offers, locked. A poisoned lock (a panic elsewhere) still yields them: the data
    /// is replaced whole on every pass, so it is never half-written.
    pub fn lock(&self) -> MutexGuard<'_, Offers> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves fresh iommufds (`{"kind":"iommufd"}` requests) by opening `/dev/iommu` through
    /// `iommu`, an instance of the seam of the broker's own.
    pub fn serve_iommufd<I: Iommu + Send + 'static>(&self, mut iommu: I) {
        let open: OpenIommufd = Box::new(move || iommu.open_iommufd());
        *self.1 .0.lock().unwrap_or_else(|p| p.into_inner()) = Some(open);
    }

    /// Opens a fresh iommufd for a caller; `None` when this handout serves none. Not under
    /// the offers' lock: an open never holds up a pass.
    pub fn open_iommufd(&self) -> Option<Result<OwnedFd, IommuError>> {
        let mut opener = self.1 .0.lock().unwrap_or_else(|p| p.into_inner());
        opener.as_mut().map(|open| open())
    }

    /// Replaces the offers and the policy (after a pass).
    pub fn replace(&self, domains: BTreeMap<String, Offer>, config: Config, accounts: Accounts) {
        let mut o = self.lock();
        o.domains = domains;
        o.policy = Some((config, accounts));
    }

    /// Offers every held domain that has a container (after a pass), with the policy as of
    /// that pass. A domain whose fds cannot be duplicated is left out, with a warning.
    pub fn refresh<I: Iommu>(
        &self,
        domains: &Domains<I>,
        host: Option<&Snapshot>,
        config: Config,
        accounts: Accounts,
    ) {
        let mut out = BTreeMap::new();
        for (name, held) in domains.held() {
            if held.containers.is_empty() {
                continue;
            }
            match Offer::of(name, &held.fds(), host) {
                Ok(o) => {
                    out.insert(name.clone(), o);
                }
                Err(e) => tracing::warn!("fd broker: domain \"{name}\" cannot be offered: {e}"),
            }
        }
        self.replace(out, config, accounts);
    }

    /// Drops every offer (closing the duplicates).
    pub fn clear(&self) {
        let mut o = self.lock();
        o.domains.clear();
    }
}
