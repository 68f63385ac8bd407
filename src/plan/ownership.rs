//! Who may open which group node: `[[user]]` entries resolved to uids and gids through an
//! accounts table the caller supplies (the planner reads no `/etc/passwd`), the owner, group and
//! mode each claimed group's `/dev/vfio/N` should have, conflicts between users, and memlock
//! budgets against the limits the caller could read.
//!
//! On a kernel with iommufd, a user's devices' cdevs (`/dev/vfio/devices/vfioN`) get the same
//! owner as their group node (the node step sets both), and `/dev/iommu` is left as the
//! kernel and udev make it: it is shared by every user of the host, so vfioctl never chowns it
//! to one user nor loosens it to 0666. A user who opens cdevs directly needs access to it
//! through its group (add the user to that group); one who goes through `vfioctl iommufd open`
//! (a fresh iommufd from `watch`'s broker, for a VMM binding its own cdevs) or `vfioctl domain
//! open` receives an opened fd and needs nothing. The plan notes a user that has no such access.
//!
//! Every claimed group that goes to a vfio driver has a desired node: its user's ownership, or
//! root:root 0600 (the kernel's default) when no user names it or when it belongs to a
//! `[[domain]]`, whose group the daemon holds and hands out.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, UserRef, UserSpec};
use crate::host::{is_vfio_driver, Snapshot};
use crate::pci::PciAddress;

use super::action::{Mode, Ownership};
use super::claims::Claim;
use super::problem::{Problem, ProblemKind};

use crate::host::accounts::Names;
pub use crate::host::accounts::{Account, Accounts};

/// The user and group names `config` mentions, for `host::accounts` to resolve.
pub fn account_names(config: &Config) -> Names {
    let mut out = Names::default();
    for u in &config.users {
        if let UserRef::Name(n) = &u.user {
            out.users.insert(n.clone());
        }
        if let Some(UserRef::Name(n)) = &u.group {
            out.groups.insert(n.clone());
        }
    }
    out
}

fn uid_of<'a>(accounts: &'a Accounts, r: &UserRef) -> Option<(u32, Option<&'a Account>)> {
    match r {
        UserRef::Uid(u) => Some((*u, accounts.users.values().find(|a| a.uid == *u))),
        UserRef::Name(n) => accounts.users.get(n).map(|a| (a.uid, Some(a))),
    }
}

fn gid_of(accounts: &Accounts, r: &UserRef) -> Option<u32> {
    match r {
        UserRef::Uid(g) => Some(*g),
        UserRef::Name(n) => accounts.groups.get(n).copied(),
    }
}

/// The node a claimed function's group has: known now, or known once the VF exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKey {
    Group(u32),
    Pending(PciAddress),
}

/// The desired ownership of one node, and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWant {
    pub owner: Ownership,
    /// The `[[user]]` it comes from, for the plan's reasons.
    pub user: Option<String>,
    /// A representative function in the group (the lowest claimed address).
    pub device: PciAddress,
}

/// Result of the ownership pass.
#[derive(Debug, Default)]
pub struct Nodes {
    pub wants: BTreeMap<NodeKey, NodeWant>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

fn key_of(snap: &Snapshot, a: PciAddress, c: &Claim) -> Option<NodeKey> {
    if c.pending {
        return Some(NodeKey::Pending(a));
    }
    snap.device(a)?.iommu_group.map(NodeKey::Group)
}

fn describe(u: &UserSpec) -> String {
    if u.origin.line == 0 {
        format!("[[user]] `{}`", u.user)
    } else {
        format!("[[user]] `{}` (line {})", u.user, u.origin.line)
    }
}

/// Computes the desired node of every group holding an active claim to a vfio driver.
pub fn nodes(
    config: &Config,
    snap: &Snapshot,
    active: &BTreeMap<PciAddress, Claim>,
    accounts: &Accounts,
) -> Nodes {
    let mut out = Nodes::default();
    // Every vfio-claimed group starts at the kernel default.
    for (a, c) in active {
        if !is_vfio_driver(&c.driver) {
            continue;
        }
        if let Some(k) = key_of(snap, *a, c) {
            out.wants.entry(k).or_insert(NodeWant {
                owner: Ownership::KERNEL_DEFAULT,
                user: None,
                device: *a,
            });
        }
    }

    let in_domain: BTreeMap<&str, &str> = config
        .domains
        .iter()
        .flat_map(|d| d.devices.iter().map(move |n| (n.as_str(), d.name.as_str())))
        .collect();
    let entry_index: BTreeMap<&str, usize> = config
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();

    // Who asked for each node first, to name both sides of a conflict.
    let mut claimed_by: BTreeMap<NodeKey, (usize, Ownership)> = BTreeMap::new();
    let mut conflicted: BTreeSet<NodeKey> = BTreeSet::new();
    for (ui, u) in config.users.iter().enumerate() {
        let Some((uid, account)) = uid_of(accounts, &u.user) else {
            out.problems.push(Problem::new(
                ProblemKind::UnknownAccount,
                format!(
                    "{}: no user `{}` on this host; create it or name an existing user",
                    describe(u),
                    u.user
                ),
            ));
            continue;
        };
        let gid = match &u.group {
            None => 0,
            Some(g) => match gid_of(accounts, g) {
                Some(gid) => gid,
                None => {
                    out.problems.push(Problem::new(
                        ProblemKind::UnknownAccount,
                        format!(
                            "{}: no group `{g}` on this host; create it or name an existing group",
                            describe(u)
                        ),
                    ));
                    continue;
                }
            },
        };
        if let (Some(budget), Some(limit)) = (u.memlock, account.and_then(|a| a.memlock_limit)) {
            if budget > limit {
                out.notes.push(format!(
                    "{}: memlock budget of {budget} bytes exceeds the locked-memory limit \
                     its logins get ({limit} bytes: soft `memlock` in /etc/security/limits.conf \
                     or limits.d); raise it there, or LimitMEMLOCK= for a service (libvirt \
                     sets its QEMU's own), or DMA mappings will fail",
                    describe(u)
                ));
            }
        }
        let owner = Ownership {
            uid,
            gid,
            mode: Mode(u.mode),
        };
        if let Some(note) = iommufd_access(snap, u, uid, gid, account) {
            out.notes.push(note);
        }
        for name in &u.devices {
            let Some(&ei) = entry_index.get(name.as_str()) else {
                out.problems.push(
                    Problem::new(
                        ProblemKind::UnknownEntry,
                        format!("{}: no [[device]] is named `{name}`", describe(u)),
                    )
                    .entry(name),
                );
                continue;
            };
            if let Some(dom) = in_domain.get(name.as_str()) {
                out.notes.push(format!(
                    "{}: `{name}` is in [[domain]] `{dom}`, whose groups the daemon holds and \
                     hands out; its node stays root-only",
                    describe(u)
                ));
                continue;
            }
            let keys: BTreeSet<NodeKey> = active
                .iter()
                .filter(|(_, c)| c.entry == ei && is_vfio_driver(&c.driver))
                .filter_map(|(a, c)| key_of(snap, *a, c))
                .collect();
            for k in keys {
                match claimed_by.get(&k) {
                    Some((prev, prev_owner)) if *prev != ui || *prev_owner != owner => {
                        if conflicted.insert(k) {
                            let other = &config.users[*prev];
                            let node = match k {
                                NodeKey::Group(g) => format!("group {g} (/dev/vfio/{g})"),
                                NodeKey::Pending(a) => format!("the group of {a}"),
                            };
                            let mut p = Problem::new(
                                ProblemKind::OwnerConflict,
                                format!(
                                    "{node} is claimed by {} and by {}; a group node has one \
                                     owner: give the devices in it to one user, or use a \
                                     group with mode 0660",
                                    describe(other),
                                    describe(u)
                                ),
                            )
                            .entry(name);
                            if let NodeKey::Group(g) = k {
                                p = p.group(g);
                            }
                            if let Some(w) = out.wants.get(&k) {
                                p = p.device(w.device);
                            }
                            out.problems.push(p);
                        }
                    }
                    Some(_) => {}
                    None => {
                        claimed_by.insert(k, (ui, owner));
                        if let Some(w) = out.wants.get_mut(&k) {
                            w.owner = owner;
                            w.user = Some(u.user.to_string());
                        }
                    }
                }
            }
        }
    }
    // A conflicted node is left as it is: neither user gets it.
    for k in conflicted {
        out.wants.remove(&k);
    }
    out
}

/// A note when `/dev/iommu` exists and `u` (uid, the node group it gets, its primary group)
/// cannot open it read-write by owner, group or other bits. Supplementary groups are not known
/// here, so the note says which group would give access.
fn iommufd_access(
    snap: &Snapshot,
    u: &UserSpec,
    uid: u32,
    gid: u32,
    account: Option<&Account>,
) -> Option<String> {
    let n = snap.vfio.iommufd_node.as_ref()?;
    if u.devices.is_empty() {
        return None;
    }
    let rw_owner = n.uid == uid && n.mode & 0o600 == 0o600;
    // `gid` is the node group the entry names (0 when it names none: that is no membership).
    let in_group = (u.group.is_some() && n.gid == gid) || account.is_some_and(|a| a.gid == n.gid);
    let rw_group = in_group && n.mode & 0o060 == 0o060;
    let rw_other = n.mode & 0o006 == 0o006;
    if rw_owner || rw_group || rw_other {
        return None;
    }
    Some(format!(
        "{}: its devices' cdevs are in /dev/vfio/devices, but {} (uid {} gid {}, mode {:04o}) \
         is not open to it; to open cdevs directly add the user to group {} (and give the node \
         group read-write, e.g. a udev rule `KERNEL==\"iommu\", MODE=\"0660\", GROUP=...`), or \
         have it receive an opened iommufd from `vfioctl iommufd open` (a VMM binding its own \
         cdevs), or the fds of a [[domain]] from `vfioctl domain open`",
        describe(u),
        n.path,
        n.uid,
        n.gid,
        n.mode,
        n.gid
    ))
}
