//! The host's local account database: `/etc/passwd` and `/etc/group` of its root filesystem,
//! read through `PROC/1/root` so `--proc-root` covers it. Captured so a snapshot carries the
//! users and groups a config may name, and each user's login memlock limit from the host's
//! limits files (groups from the primary gid and `/etc/group` member lists); absent files give
//! an empty table, not a warning. Files are read through a [`FileSource`]: the scanner's reader
//! records a warning, in the snapshot, for a file that exists but cannot be read, so a snapshot
//! never silently lacks accounts it could not read.

use std::path::Path;

use super::FileSource;

use crate::host::HostAccounts;

/// Reads the account files under `proc/1/root/etc` through `src`.
pub fn scan_accounts(proc_root: &Path, src: &mut dyn FileSource) -> HostAccounts {
    let etc = proc_root.join("1/root/etc");
    let mut out = HostAccounts::default();
    if let Some(text) = src.text(&etc.join("passwd")) {
        for (name, fields) in entries(&text) {
            // name:password:uid:gid:gecos:home:shell
            if let (Some(uid), Some(gid)) = (number(fields.get(1)), number(fields.get(2))) {
                out.users.insert(name.to_string(), (uid, gid));
            }
        }
    }
    // Supplementary members: group name -> user names.
    let mut members: Vec<(String, u32, Vec<String>)> = Vec::new();
    if let Some(text) = src.text(&etc.join("group")) {
        for (name, fields) in entries(&text) {
            // name:password:gid:members
            if let Some(gid) = number(fields.get(1)) {
                out.groups.insert(name.to_string(), gid);
                let users = fields
                    .get(2)
                    .map(|m| {
                        m.split(',')
                            .filter(|u| !u.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                members.push((name.to_string(), gid, users));
            }
        }
    }
    let limits = super::limits::read_files(proc_root, src);
    if !limits.is_empty() {
        for (user, &(uid, gid)) in &out.users {
            let mine: Vec<&(String, u32, Vec<String>)> = members
                .iter()
                .filter(|(_, g, users)| *g == gid || users.contains(user))
                .collect();
            let gids: Vec<u32> = mine.iter().map(|(_, g, _)| *g).collect();
            let groups: Vec<&str> = mine.iter().map(|(n, _, _)| n.as_str()).collect();
            let who = super::limits::Who {
                name: user,
                uid,
                gids: &gids,
                groups: &groups,
            };
            if let Some(soft) = super::limits::memlock_of(&limits, &who).soft {
                out.memlock.insert(user.clone(), soft);
            }
        }
    }
    out
}

fn entries(text: &str) -> impl Iterator<Item = (&str, Vec<&str>)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('+'))
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            (!name.is_empty()).then(|| (name, it.collect()))
        })
}

fn number(field: Option<&&str>) -> Option<u32> {
    field.and_then(|f| f.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_and_groups_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("1/root/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\nqemu:x:64055:994::/:/bin/false\nbad:x:uid:1::/:\n",
        )
        .unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\nkvm:x:994:qemu\n").unwrap();
        let a = scan_accounts(dir.path(), &mut super::super::Quiet);
        assert_eq!(a.users.get("qemu"), Some(&(64055, 994)));
        assert_eq!(a.users.get("root"), Some(&(0, 0)));
        assert!(!a.users.contains_key("bad") && !a.users.contains_key("broken"));
        assert_eq!(a.groups.get("kvm"), Some(&994));
    }

    #[test]
    fn missing_files_give_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        assert!(scan_accounts(dir.path(), &mut super::super::Quiet).is_empty());
    }

    #[test]
    fn each_users_login_memlock_limit_is_captured() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("1/root/etc");
        std::fs::create_dir_all(etc.join("security")).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nqemu:x:64055:994::/:/bin/false\nalice:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "kvm:x:994:\nalice:x:1000:\nlibvirt:x:120:alice\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("security/limits.conf"),
            "@kvm soft memlock 1024\n@libvirt soft memlock unlimited\n",
        )
        .unwrap();
        let a = scan_accounts(dir.path(), &mut super::super::Quiet);
        assert_eq!(
            a.memlock.get("qemu"),
            Some(&(1024 * 1024)),
            "primary group kvm"
        );
        assert_eq!(a.memlock.get("alice"), Some(&u64::MAX), "member of libvirt");
        assert_eq!(a.memlock.get("root"), None, "group entries skip root");
    }
}
