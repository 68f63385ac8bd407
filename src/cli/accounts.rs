//! Resolves the user and group names a config mentions through the system's account database
//! (`getpwnam`/`getgrnam`, so NSS sources count too), into the planner's [`Accounts`] table.
//! Names that do not resolve are left out; the planner reports them.

use crate::config::{Config, UserRef};
use crate::plan::{Account, Accounts};

/// The accounts `config` names.
pub fn resolve(config: &Config) -> Accounts {
    let mut out = Accounts::default();
    for u in &config.users {
        if let UserRef::Name(name) = &u.user {
            if let Ok(Some(pw)) = nix::unistd::User::from_name(name) {
                out.users.insert(
                    name.clone(),
                    Account {
                        uid: pw.uid.as_raw(),
                        gid: pw.gid.as_raw(),
                        memlock_limit: None,
                    },
                );
            }
        }
        if let Some(UserRef::Name(name)) = &u.group {
            if let Ok(Some(gr)) = nix::unistd::Group::from_name(name) {
                out.groups.insert(name.clone(), gr.gid.as_raw());
            }
        }
    }
    out
}

/// Fills in the locked-memory limit (the soft one) that PAM gives each named user's login, from
/// the host's limits files under `proc_root` (see [`crate::host::limits`]); users no `memlock`
/// line names keep an unknown limit.
pub fn with_memlock_limits(mut accounts: Accounts, proc_root: &std::path::Path) -> Accounts {
    let files = crate::host::limits::read_files(proc_root);
    if files.is_empty() {
        return accounts;
    }
    for (name, account) in accounts.users.iter_mut() {
        let Ok(cname) = std::ffi::CString::new(name.as_str()) else {
            continue;
        };
        let primary = nix::unistd::Gid::from_raw(account.gid);
        let gids: Vec<u32> = nix::unistd::getgrouplist(&cname, primary)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![account.gid]);
        let names: Vec<String> = gids
            .iter()
            .filter_map(|g| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*g))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .collect();
        let groups: Vec<&str> = names.iter().map(String::as_str).collect();
        let who = crate::host::limits::Who {
            name,
            uid: account.uid,
            gids: &gids,
            groups: &groups,
        };
        account.memlock_limit = crate::host::limits::memlock_of(&files, &who).soft;
    }
    accounts
}

/// The accounts `config` names as the captured host `snap` had them (`--host FILE`): a
/// snapshot is another moment or machine, so this machine's users say nothing about it. A
/// snapshot that carries no account table falls back to this machine's.
pub fn from_snapshot(config: &Config, snap: &crate::host::Snapshot) -> Accounts {
    if snap.accounts.is_empty() {
        return resolve(config);
    }
    let mut out = Accounts::default();
    for (name, &(uid, gid)) in &snap.accounts.users {
        out.users.insert(
            name.clone(),
            Account {
                uid,
                gid,
                memlock_limit: snap.accounts.memlock.get(name).copied(),
            },
        );
    }
    out.groups = snap.accounts.groups.clone();
    out
}
