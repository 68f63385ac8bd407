//! Who may open a domain, decided purely from the config, the accounts its names resolve to
//! and the caller's credentials. A caller may open a domain when, for every device of the
//! domain, some `[[user]]` entry listing that device names the caller: by uid (the entry's
//! user), or by one of the caller's groups (the entry's `group`). Handing over the container
//! gives DMA through every member, so being named for only some members is not enough.
//! Root (uid 0) may open every domain: it could open the groups itself.
//!
//! A fresh iommufd ([`may_have_iommufd`]) is for callers some `[[user]]` entry names (by uid,
//! or by the primary or a supplementary group), and root. It gives no device access of its own
//! (the caller binds only the cdevs its `[[user]]` entries gave it) and iommufd charges what it
//! pins to the mapping process's RLIMIT_MEMLOCK, so it grants nothing beyond the user's own
//! limits; it saves the user from needing `/dev/iommu`, which vfioctl never opens up.

use crate::config::{Config, UserRef};
use crate::host::accounts::Accounts;

/// The caller, as the kernel recorded it at `connect` (`SO_PEERCRED`, `SO_PEERGROUPS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the config has no domain \"{0}\"")]
    NoSuchDomain(String),
    #[error("uid {uid} may not open domain \"{domain}\": no [[user]] entry naming it (or one of its groups) lists device(s) {missing}; add them to its [[user]] entry")]
    NotNamed {
        uid: u32,
        domain: String,
        missing: String,
    },
    #[error("uid {uid} may not have an iommufd: no [[user]] entry names it or one of its groups (an iommufd is for binding the devices a [[user]] entry gives); add it to the [[user]] entry of the devices it should use")]
    NotAUser { uid: u32 },
}

fn names_uid(r: &UserRef, accounts: &Accounts, uid: u32) -> bool {
    match r {
        UserRef::Uid(u) => *u == uid,
        UserRef::Name(n) => accounts.users.get(n).is_some_and(|a| a.uid == uid),
    }
}

fn names_group(r: &UserRef, accounts: &Accounts, caller: &Caller) -> bool {
    match r {
        UserRef::Uid(g) => caller.in_group(*g),
        UserRef::Name(n) => accounts.groups.get(n).is_some_and(|g| caller.in_group(*g)),
    }
}

/// Whether `caller` may have a freshly opened iommufd: root, or named by a `[[user]]` entry.
pub fn may_have_iommufd(
    config: &Config,
    accounts: &Accounts,
    caller: &Caller,
) -> Result<(), Refusal> {
    if caller.uid == 0 {
        return Ok(());
    }
    let named = config.users.iter().any(|u| {
        !u.devices.is_empty()
            && (names_uid(&u.user, accounts, caller.uid)
                || u.group
                    .as_ref()
                    .is_some_and(|g| names_group(g, accounts, caller)))
    });
    if named {
        Ok(())
    } else {
        Err(Refusal::NotAUser { uid: caller.uid })
    }
}

/// Whether `caller` may open `domain`.
pub fn may_open(
    config: &Config,
    accounts: &Accounts,
    domain: &str,
    caller: &Caller,
) -> Result<(), Refusal> {
    let Some(spec) = config.domains.iter().find(|d| d.name == domain) else {
        return Err(Refusal::NoSuchDomain(domain.to_string()));
    };
    if caller.uid == 0 {
        return Ok(());
    }
    let missing: Vec<&str> = spec
        .devices
        .iter()
        .filter(|dev| {
            !config.users.iter().any(|u| {
                u.devices.contains(dev)
                    && (names_uid(&u.user, accounts, caller.uid)
                        || u.group
                            .as_ref()
                            .is_some_and(|g| names_group(g, accounts, caller)))
            })
        })
        .map(String::as_str)
        .collect();
    if missing.is_empty() && !spec.devices.is_empty() {
        Ok(())
    } else {
        Err(Refusal::NotNamed {
            uid: caller.uid,
            domain: domain.to_string(),
            missing: missing.join(", "),
        })
    }
}

/// Reads a process's supplementary groups from `PROC/PID/status` (`Groups:`).
pub fn supplementary_groups(proc_root: &std::path::Path, pid: i32) -> std::io::Result<Vec<u32>> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))?;
    Ok(parse_groups(&text))
}

fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::accounts::Account;

    fn config() -> Config {
        let text = r#"
version = 1
[[device]]
name = "edu"
address = "0000:00:03.0"
[[device]]
name = "nic"
address = "0000:00:04.0"
[[device]]
name = "ssd"
address = "0000:00:05.0"
[[device]]
name = "gpu"
address = "0000:00:06.0"
[[user]]
name = "alice"
devices = ["edu", "nic"]
[[user]]
name = 1002
devices = ["ssd"]
[[user]]
name = 1003
group = "kvm"
devices = ["gpu"]
[[domain]]
name = "dma"
devices = ["edu", "nic"]
[[domain]]
name = "mixed"
devices = ["ssd", "gpu"]
"#;
        crate::config::parse_str(text, std::path::Path::new("t.toml")).unwrap()
    }

    fn accounts() -> Accounts {
        let mut a = Accounts::default();
        a.users.insert(
            "alice".into(),
            Account {
                uid: 1000,
                gid: 1000,
                memlock_limit: None,
            },
        );
        a.groups.insert("kvm".into(), 36);
        a
    }

    fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn a_named_user_may_open() {
        let c = config();
        assert_eq!(
            may_open(&c, &accounts(), "dma", &caller(1000, 1000, &[])),
            Ok(())
        );
        assert_eq!(may_open(&c, &accounts(), "dma", &caller(0, 0, &[])), Ok(()));
    }

    #[test]
    fn a_user_named_for_some_members_only_is_refused() {
        let err = may_open(&config(), &accounts(), "mixed", &caller(1002, 1002, &[])).unwrap_err();
        assert_eq!(
            err,
            Refusal::NotNamed {
                uid: 1002,
                domain: "mixed".into(),
                missing: "gpu".into()
            }
        );
    }

    #[test]
    fn strangers_are_refused_and_groups_count() {
        let c = config();
        assert!(may_open(&c, &accounts(), "dma", &caller(1001, 1001, &[])).is_err());
        assert!(may_open(&c, &accounts(), "dma", &caller(1001, 1001, &[36])).is_err());
        // 1002 owns ssd; kvm (supplementary or primary) covers gpu.
        assert_eq!(
            may_open(&c, &accounts(), "mixed", &caller(1002, 1002, &[36])),
            Ok(())
        );
        assert_eq!(
            may_open(&c, &accounts(), "mixed", &caller(1002, 36, &[])),
            Ok(())
        );
        // kvm alone does not cover ssd.
        assert!(may_open(&c, &accounts(), "mixed", &caller(1001, 1001, &[36])).is_err());
    }

    #[test]
    fn an_iommufd_goes_to_users_named_by_uid_or_group_and_root() {
        let c = config();
        let a = accounts();
        // By name (alice -> 1000) and by uid (1002).
        assert_eq!(may_have_iommufd(&c, &a, &caller(1000, 1000, &[])), Ok(()));
        assert_eq!(may_have_iommufd(&c, &a, &caller(1002, 1002, &[])), Ok(()));
        // By group kvm (36): primary or supplementary.
        assert_eq!(may_have_iommufd(&c, &a, &caller(1001, 36, &[])), Ok(()));
        assert_eq!(
            may_have_iommufd(&c, &a, &caller(1001, 1001, &[4, 36])),
            Ok(())
        );
        // Root, named or not.
        assert_eq!(may_have_iommufd(&c, &a, &caller(0, 0, &[])), Ok(()));
        // Nobody names 1001 or its groups.
        let err = may_have_iommufd(&c, &a, &caller(1001, 1001, &[4, 24])).unwrap_err();
        assert_eq!(err, Refusal::NotAUser { uid: 1001 });
        assert!(
            err.to_string().contains("no [[user]] entry names it"),
            "{err}"
        );
        // A name the accounts do not resolve names nobody.
        assert!(may_have_iommufd(&c, &Accounts::default(), &caller(1000, 1000, &[])).is_err());
        // A config without [[user]] entries gives an iommufd to root only.
        let bare = crate::config::parse_str(
            "version = 1\n[[device]]\nname = \"edu\"\naddress = \"0000:00:03.0\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        assert!(may_have_iommufd(&bare, &a, &caller(1000, 1000, &[36])).is_err());
        assert_eq!(may_have_iommufd(&bare, &a, &caller(0, 0, &[])), Ok(()));
    }

    #[test]
    fn unknown_domains_are_named() {
        assert_eq!(
            may_open(&config(), &accounts(), "nope", &caller(1000, 1000, &[])),
            Err(Refusal::NoSuchDomain("nope".into()))
        );
    }

    #[test]
    fn groups_are_read_from_proc_status() {
        let s = "Name:\tx\nUid:\t1000\nGroups:\t4 24 36 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), vec![4, 24, 36]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<u32>::new());
    }
}
