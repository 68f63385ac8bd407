//! Accounts on the host: owns the [`Account`]/[`Accounts`] table the planner and the broker
//! use (users and groups by name, each user's memlock limit), resolving the names a config
//! mentions through the system's account database (`getpwnam`/`getgrnam`, so NSS sources count
//! too), joining in the login memlock limits ([`limits`]), and reading the host's local account
//! files into a snapshot ([`files`], through a [`FileSource`]). Names that do not resolve are
//! left out; the planner reports them.

pub mod files;
pub mod limits;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where account and limits files are read from.
pub trait FileSource {
    /// The file's text; `None` when absent (silently) or unreadable (the source says why).
    fn text(&mut self, path: &Path) -> Option<String>;
    /// The entries of a directory (absent: empty).
    fn list(&mut self, dir: &Path) -> Vec<PathBuf>;
}

/// Plain reads that skip what cannot be read (the live path, which resolves through NSS).
#[derive(Debug, Default)]
pub struct Quiet;

impl FileSource for Quiet {
    fn text(&mut self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
    fn list(&mut self, dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    }
}

/// One account as the caller read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// The account's locked-memory limit in bytes, when the caller could read it.
    pub memlock_limit: Option<u64>,
}

/// Users and groups by name (from `/etc/passwd` and `/etc/group`, or a test's map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: BTreeMap<String, Account>,
    pub groups: BTreeMap<String, u32>,
}

/// The user and group names a config mentions (gathered by `plan::ownership::account_names`,
/// so this module needs no config types).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

/// The accounts `names` lists, through NSS; names that do not resolve are left out.
pub fn resolve(names: &Names) -> Accounts {
    let mut out = Accounts::default();
    for name in &names.users {
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
    for name in &names.groups {
        if let Ok(Some(gr)) = nix::unistd::Group::from_name(name) {
            out.groups.insert(name.clone(), gr.gid.as_raw());
        }
    }
    out
}

/// Fills in the locked-memory limit (the soft one) that PAM gives each named user's login, from
/// the host's limits files under `proc_root` (see [`limits`]); users no `memlock`
/// line names keep an unknown limit.
pub fn with_memlock_limits(mut accounts: Accounts, proc_root: &Path) -> Accounts {
    let files = limits::read_files(proc_root, &mut Quiet);
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
        let who = limits::Who {
            name,
            uid: account.uid,
            gids: &gids,
            groups: &groups,
        };
        account.memlock_limit = limits::memlock_of(&files, &who).soft;
    }
    accounts
}

/// The accounts `names` lists as the captured host `snap` had them (`--host FILE`): a
/// snapshot is another moment or machine, so this machine's users say nothing about it. A
/// snapshot that carries no account table falls back to this machine's.
pub fn from_snapshot(names: &Names, snap: &crate::host::Snapshot) -> Accounts {
    if snap.accounts.is_empty() {
        return resolve(names);
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
