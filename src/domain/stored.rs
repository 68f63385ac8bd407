//! Keeping systemd's fd store in step with the held domains (issue 10): after a pass, each
//! domain whose layout changed since it was last stored has its old fds removed
//! (`FDSTOREREMOVE=1`) and its current ones stored (`FDSTORE=1`, one `FDNAME` each, with the
//! layout record beside them); domains no longer held are removed. Unchanged domains send
//! nothing. An iommufd domain stores its iommufd once (`iommufd.0`) and its device cdevs
//! (`device.N`) where a legacy one stores containers and groups.

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use super::adopt::{layout_memfd, stored_names, Layout};
use super::fdstore::{FdStore, Part, StoreError, StoredName};
use super::held::HeldDomain;
use super::iommu::Iommu;
use crate::plan::backend::Backend;

/// What this process last stored, per domain.
#[derive(Debug, Default)]
pub struct StoreSync {
    stored: BTreeMap<String, Layout>,
}

impl StoreSync {
    /// Starts from the domains adopted at start (they are in the store already).
    pub fn adopted<I: Iommu>(held: &BTreeMap<String, HeldDomain<I>>) -> Self {
        StoreSync {
            stored: held
                .iter()
                .map(|(n, d)| (n.clone(), Layout::of(d)))
                .collect(),
        }
    }

    /// Domains the store knows, by name.
    pub fn domains(&self) -> Vec<&str> {
        self.stored.keys().map(String::as_str).collect()
    }

    /// Brings the store in step; returns the domains sent. On an error the domain is
    /// forgotten, so the next call removes and stores it again.
    pub fn sync<I: Iommu>(
        &mut self,
        held: &BTreeMap<String, HeldDomain<I>>,
        store: &FdStore,
    ) -> Result<Vec<String>, StoreError> {
        let mut sent = Vec::new();
        let gone: Vec<String> = self
            .stored
            .keys()
            .filter(|n| !held.get(*n).is_some_and(|d| !d.containers.is_empty()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(layout) = self.stored.remove(&name) {
                store.remove(&stored_names(&name, &layout))?;
                sent.push(name);
            }
        }
        for (name, d) in held {
            if d.containers.is_empty() {
                continue;
            }
            let layout = Layout::of(d);
            if self.stored.get(name) == Some(&layout) {
                continue;
            }
            if let Some(old) = self.stored.remove(name) {
                store.remove(&stored_names(name, &old))?;
            }
            let record = layout_memfd(&layout).map_err(|source| StoreError::Socket {
                path: "memfd".into(),
                source,
            })?;
            let part = |part| StoredName {
                domain: name.clone(),
                part,
            };
            let fds = d.fds();
            let mut list = vec![(part(Part::Layout), record.as_fd())];
            match fds.backend {
                Backend::Legacy => {
                    list.extend(
                        fds.containers
                            .iter()
                            .enumerate()
                            .map(|(i, f)| (part(Part::Container(i)), *f)),
                    );
                    list.extend(
                        fds.groups
                            .iter()
                            .map(|(g, f, _)| (part(Part::Group(*g)), *f)),
                    );
                }
                Backend::Iommufd => {
                    // One iommufd holds every IOAS: stored once.
                    list.extend(fds.containers.first().map(|f| (part(Part::Iommufd), *f)));
                    list.extend(
                        fds.devices
                            .iter()
                            .enumerate()
                            .map(|(i, (_, _, f, _))| (part(Part::Device(i)), *f)),
                    );
                }
            }
            list.extend(
                fds.windows
                    .iter()
                    .enumerate()
                    .map(|(i, (_, f))| (part(Part::Window(i)), *f)),
            );
            store.store(&list)?;
            self.stored.insert(name.clone(), layout);
            sent.push(name.clone());
        }
        Ok(sent)
    }
}
