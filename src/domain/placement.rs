//! Which container each member group of a domain goes into: the pure placement decision.
//!
//! *Shared* puts every group in one container; a group the kernel refused to add to a
//! container (groups behind IOMMUs that cannot share page tables) goes to the first container
//! that has not refused it, or to a new *mirror* container carrying the same mappings.
//! *Per-group* gives every group its own container. Refusals are facts learned from the
//! kernel (EINVAL/EBUSY on `VFIO_GROUP_SET_CONTAINER`) and fed back in, so the held state can
//! retry and the dry-run can show the layout it already knows.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::model::Placement;

/// Why a container exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The one container of a shared domain.
    Shared,
    /// One of a per-group domain's containers.
    PerGroup,
    /// An extra container of a shared domain, for groups the kernel refused to share; it
    /// carries the same mappings.
    Mirror,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Shared => "shared",
            Role::PerGroup => "per-group",
            Role::Mirror => "mirror",
        })
    }
}

/// Pairs of groups the kernel would not put in one container (unordered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals(BTreeSet<(u32, u32)>);

impl Refusals {
    /// Records that `group` was refused by a container holding `members`.
    pub fn record(&mut self, group: u32, members: &[u32]) {
        for &m in members {
            if m != group {
                self.0.insert((group.min(m), group.max(m)));
            }
        }
    }

    pub fn refused(&self, a: u32, b: u32) -> bool {
        self.0.contains(&(a.min(b), a.max(b)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where one group goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Into the existing container at this index.
    Existing(usize),
    /// Into a new container with this role.
    New(Role),
}

/// Decides where `group` goes, given the groups of the containers already built (in order).
pub fn choose(
    placement: Placement,
    group: u32,
    containers: &[Vec<u32>],
    refusals: &Refusals,
) -> Target {
    match placement {
        Placement::PerGroup => Target::New(Role::PerGroup),
        Placement::Shared => {
            let fits = |members: &Vec<u32>| members.iter().all(|&m| !refusals.refused(group, m));
            match containers.iter().position(fits) {
                Some(i) => Target::Existing(i),
                None if containers.is_empty() => Target::New(Role::Shared),
                None => Target::New(Role::Mirror),
            }
        }
    }
}

/// A container of a planned layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedContainer {
    pub role: Role,
    pub groups: Vec<u32>,
}

/// The whole layout for `groups` (placed in ascending order) from scratch.
pub fn layout(placement: Placement, groups: &[u32], refusals: &Refusals) -> Vec<PlannedContainer> {
    let mut sorted = groups.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<PlannedContainer> = Vec::new();
    for g in sorted {
        let members: Vec<Vec<u32>> = out.iter().map(|c| c.groups.clone()).collect();
        match choose(placement, g, &members, refusals) {
            Target::Existing(i) => out[i].groups.push(g),
            Target::New(role) => out.push(PlannedContainer {
                role,
                groups: vec![g],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_puts_every_group_in_one_container() {
        let l = layout(Placement::Shared, &[7, 5, 5], &Refusals::default());
        assert_eq!(
            l,
            vec![PlannedContainer {
                role: Role::Shared,
                groups: vec![5, 7]
            }]
        );
    }

    #[test]
    fn per_group_gives_each_group_a_container() {
        let l = layout(Placement::PerGroup, &[4, 5], &Refusals::default());
        assert_eq!(l.len(), 2);
        assert!(l
            .iter()
            .all(|c| c.role == Role::PerGroup && c.groups.len() == 1));
    }

    #[test]
    fn a_refused_group_goes_to_a_mirror_and_compatible_ones_join_it() {
        // 5 and 9 sit behind one IOMMU, 7 and 8 behind another.
        let mut r = Refusals::default();
        r.record(7, &[5]);
        r.record(8, &[5]);
        r.record(9, &[7]);
        let l = layout(Placement::Shared, &[5, 7, 8, 9], &r);
        assert_eq!(
            l,
            vec![
                PlannedContainer {
                    role: Role::Shared,
                    groups: vec![5, 9]
                },
                PlannedContainer {
                    role: Role::Mirror,
                    groups: vec![7, 8]
                },
            ]
        );
    }

    #[test]
    fn refusals_are_symmetric_and_ignore_self() {
        let mut r = Refusals::default();
        r.record(3, &[3, 9]);
        assert!(r.refused(9, 3));
        assert!(!r.refused(3, 3));
    }

    #[test]
    fn choose_prefers_the_first_container_that_accepts() {
        let mut r = Refusals::default();
        r.record(6, &[1]);
        let containers = vec![vec![1], vec![2]];
        assert_eq!(
            choose(Placement::Shared, 6, &containers, &r),
            Target::Existing(1)
        );
        r.record(6, &[2]);
        assert_eq!(
            choose(Placement::Shared, 6, &containers, &r),
            Target::New(Role::Mirror)
        );
        assert_eq!(
            choose(Placement::Shared, 6, &[], &r),
            Target::New(Role::Shared)
        );
    }
}
