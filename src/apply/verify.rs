//! Verification after an apply: read the host again and plan again; anything left is what did
//! not converge (reading only the closure of the functions the pass changed, see
//! [`crate::host::partial`]). Then ask the kernel itself (`VFIO_GROUP_GET_STATUS`) about every
//! group a vfio driver was just bound in, so success is the kernel's word, not ours. A group node that is
//! open elsewhere (EBUSY) is in use by its holder, which is not a failure.

use std::collections::BTreeSet;

use crate::config::Config;
use crate::host::{is_vfio_driver, Snapshot};
use crate::kernel::{Host, KernelError};
use crate::pci::PciAddress;
use crate::plan::{self, Action, Context, Plan, Step};
use crate::vfio::GroupStatus;

/// What the kernel said about one group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupVerdict {
    Viable(GroupStatus),
    /// Open elsewhere: a VM or the daemon holds it.
    InUse,
    NotViable(GroupStatus),
    Error(KernelError),
}

/// One group's check.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCheck {
    pub group: u32,
    pub verdict: GroupVerdict,
}

impl GroupCheck {
    pub fn ok(&self) -> bool {
        matches!(self.verdict, GroupVerdict::Viable(_) | GroupVerdict::InUse)
    }

    pub fn line(&self) -> String {
        let g = self.group;
        match &self.verdict {
            GroupVerdict::Viable(_) => format!("group {g}: viable (kernel)"),
            GroupVerdict::InUse => format!("group {g}: in use by its holder (EBUSY)"),
            GroupVerdict::NotViable(_) => format!(
                "group {g}: the kernel reports it NOT viable (a member is on a driver that manages DMA)"
            ),
            GroupVerdict::Error(e) => format!("group {g}: could not ask the kernel: {e}"),
        }
    }
}

/// The result of verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// Steps a re-plan still wants: what did not converge.
    pub remaining: Vec<Step>,
    pub groups: Vec<GroupCheck>,
    /// The host as read after the apply.
    pub observed: Snapshot,
}

impl Verification {
    pub fn converged(&self) -> bool {
        self.remaining.is_empty() && self.groups.iter().all(GroupCheck::ok)
    }

    /// Human lines: every remaining step and every failed group.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .remaining
            .iter()
            .map(|s| {
                format!(
                    "did not converge: {} ({})",
                    super::executor::describe(&s.action),
                    s.reason
                )
            })
            .collect();
        out.extend(self.groups.iter().filter(|g| !g.ok()).map(GroupCheck::line));
        out
    }
}

/// Groups in which `plan` bound a function to a vfio driver, as `observed` numbers them.
pub fn vfio_groups(plan: &Plan, observed: &Snapshot) -> BTreeSet<u32> {
    plan.actions
        .iter()
        .filter_map(|s| match &s.action {
            Action::Bind { device, driver } if is_vfio_driver(driver) => {
                observed.device(*device).and_then(|d| d.iommu_group)
            }
            _ => None,
        })
        .collect()
}

/// Re-reads the host, re-plans, and asks the kernel about the groups `applied` bound.
pub fn verify(
    host: &dyn Host,
    config: &Config,
    ctx: &Context,
    applied: &Plan,
) -> Result<Verification, KernelError> {
    // Only the part of the host the plan touched: the closure of every function it changed.
    // Functions outside it had nothing planned, and the changes cannot have reached them.
    let mut seeds: Vec<PciAddress> = applied
        .actions
        .iter()
        .filter_map(|s| s.action.device())
        .chain(ctx.scope)
        .collect();
    seeds.sort();
    seeds.dedup();
    let observed = host.snapshot_of(&seeds)?;
    let again = plan::plan_with(config, &observed, ctx);
    let groups = vfio_groups(applied, &observed)
        .into_iter()
        .map(|group| GroupCheck {
            group,
            verdict: match host.group_status(group) {
                Ok(st) if st.viable => GroupVerdict::Viable(st),
                Ok(st) => GroupVerdict::NotViable(st),
                Err(KernelError::GroupInUse { .. }) => GroupVerdict::InUse,
                Err(e) => GroupVerdict::Error(e),
            },
        })
        .collect();
    Ok(Verification {
        remaining: again.actions,
        groups,
        observed,
    })
}
