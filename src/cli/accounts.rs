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
                memlock_limit: None,
            },
        );
    }
    out.groups = snap.accounts.groups.clone();
    out
}
