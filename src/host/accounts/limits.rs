//! The locked-memory limit a user's login session gets from PAM (`pam_limits`):
//! `/etc/security/limits.conf`, then `/etc/security/limits.d/*.conf` in name order, of the
//! host's root filesystem (read through `PROC/1/root`, so `--proc-root` covers it).
//!
//! Only `memlock` lines count. As `pam_limits` applies them: an entry for the user by name beats
//! one for a group (`@group`, `@min:max` gids) or a uid range (`min:max`), which beats `*`; among
//! entries of the same kind the last one wins; group, range and `*` entries do not apply to
//! root. Values are KiB, `unlimited`/`infinity`/`-1` for none; `-` sets both soft and hard.
//!
//! This is what a login gets. A service has its unit's `LimitMEMLOCK=`, and libvirt sets its
//! QEMU's limit itself: where no line names the user, the limit is unknown (`None`), not the
//! kernel's default.

use std::path::Path;

/// A locked-memory limit in bytes; `u64::MAX` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memlock {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Who the limit is for: the name, uid and every gid (primary and supplementary).
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gids: &'a [u32],
    /// Group names of `gids` (for `@name` entries).
    pub groups: &'a [&'a str],
}

/// How specific an entry is; a more specific one is never overridden by a less specific one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    All,
    Group,
    User,
}

fn applies(domain: &str, who: &Who) -> Option<Kind> {
    let range = |spec: &str, value: u32| -> bool {
        let (lo, hi) = spec.split_once(':').unwrap_or((spec, spec));
        let lo: u32 = if lo.is_empty() {
            0
        } else {
            lo.parse().unwrap_or(u32::MAX)
        };
        let hi: u32 = if hi.is_empty() {
            u32::MAX
        } else {
            hi.parse().unwrap_or(0)
        };
        (lo..=hi).contains(&value)
    };
    let is_root = who.uid == 0;
    if domain == who.name {
        return Some(Kind::User);
    }
    if is_root {
        return None;
    }
    if domain == "*" {
        return Some(Kind::All);
    }
    if let Some(g) = domain.strip_prefix('@') {
        let hit = if g
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == ':')
        {
            who.gids.iter().any(|gid| range(g, *gid))
        } else {
            who.groups.contains(&g)
        };
        return hit.then_some(Kind::Group);
    }
    if domain.contains(':') && !domain.starts_with('%') {
        return range(domain, who.uid).then_some(Kind::Group);
    }
    None
}

fn value(v: &str) -> Option<u64> {
    match v {
        "unlimited" | "infinity" | "-1" => Some(u64::MAX),
        _ => v.parse::<u64>().ok().map(|kib| kib.saturating_mul(1024)),
    }
}

/// The memlock limits the `files` (their text, in the order pam_limits reads them) give `who`.
pub fn memlock_of(files: &[String], who: &Who) -> Memlock {
    let mut soft: Option<(Kind, u64)> = None;
    let mut hard: Option<(Kind, u64)> = None;
    // A later entry of the same kind wins; a less specific one never replaces a set one.
    let set = |slot: &mut Option<(Kind, u64)>, kind: Kind, v: u64| {
        if slot.map_or(true, |(k, _)| k <= kind) {
            *slot = Some((kind, v));
        }
    };
    for text in files {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let f: Vec<&str> = line.split_whitespace().collect();
            let [domain, ty, item, v] = f[..] else {
                continue;
            };
            if item != "memlock" {
                continue;
            }
            let (Some(kind), Some(v)) = (applies(domain, who), value(v)) else {
                continue;
            };
            match ty {
                "soft" => set(&mut soft, kind, v),
                "hard" => set(&mut hard, kind, v),
                "-" => {
                    set(&mut soft, kind, v);
                    set(&mut hard, kind, v);
                }
                _ => {}
            }
        }
    }
    Memlock {
        soft: soft.map(|(_, v)| v),
        hard: hard.map(|(_, v)| v),
    }
}

/// The limits files of the host under `proc_root`, in pam_limits' order; missing ones are
/// skipped.
pub fn read_files(proc_root: &Path, src: &mut dyn super::FileSource) -> Vec<String> {
    let security = proc_root.join("1/root/etc/security");
    let mut out: Vec<String> = src
        .text(&security.join("limits.conf"))
        .into_iter()
        .collect();
    let mut extra: Vec<std::path::PathBuf> = src
        .list(&security.join("limits.d"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    extra.sort();
    out.extend(extra.iter().filter_map(|p| src.text(p)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: Who = Who {
        name: "libvirt-qemu",
        uid: 64055,
        gids: &[994, 36],
        groups: &["kvm", "libvirt-qemu"],
    };

    fn files(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_user_entry_beats_groups_and_the_wildcard_whatever_the_order() {
        let f = files(&[
            "libvirt-qemu - memlock 1048576\n* soft memlock 64\n",
            "@kvm soft memlock 2048 # later, but less specific\n",
        ]);
        let m = memlock_of(&f, &QEMU);
        assert_eq!(m.soft, Some(1 << 30));
        assert_eq!(m.hard, Some(1 << 30));
    }

    #[test]
    fn the_last_entry_of_the_same_kind_wins_and_unlimited_is_max() {
        let f = files(&["@kvm hard memlock 1024\n", "@kvm hard memlock unlimited\n"]);
        let m = memlock_of(&f, &QEMU);
        assert_eq!((m.soft, m.hard), (None, Some(u64::MAX)));
    }

    #[test]
    fn gid_and_uid_ranges_and_the_wildcard_apply_but_not_to_root() {
        let f = files(&["@990:999 soft memlock 4\n60000: hard memlock 8\n* - memlock 1\n"]);
        let m = memlock_of(&f, &QEMU);
        assert_eq!((m.soft, m.hard), (Some(4096), Some(8192)));
        let root = Who {
            name: "root",
            uid: 0,
            gids: &[0],
            groups: &["root"],
        };
        assert_eq!(memlock_of(&f, &root), Memlock::default());
        let f = files(&["root soft memlock 16\n"]);
        assert_eq!(memlock_of(&f, &root).soft, Some(16384));
    }

    #[test]
    fn other_items_users_and_malformed_lines_are_ignored() {
        let f = files(&[
            "libvirt-qemu soft nofile 4096\nalice soft memlock 1\n@audio - memlock 9\nbroken line\nlibvirt-qemu soft memlock lots\n",
        ]);
        assert_eq!(memlock_of(&f, &QEMU), Memlock::default());
    }

    #[test]
    fn files_are_read_conf_first_then_limits_d_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let sec = dir.path().join("1/root/etc/security");
        std::fs::create_dir_all(sec.join("limits.d")).unwrap();
        std::fs::write(sec.join("limits.conf"), "* soft memlock 1\n").unwrap();
        std::fs::write(sec.join("limits.d/20-b.conf"), "* soft memlock 3\n").unwrap();
        std::fs::write(sec.join("limits.d/10-a.conf"), "* soft memlock 2\n").unwrap();
        std::fs::write(sec.join("limits.d/30-c.disabled"), "* soft memlock 9\n").unwrap();
        let f = read_files(dir.path(), &mut super::super::Quiet);
        assert_eq!(f.len(), 3);
        assert_eq!(memlock_of(&f, &QEMU).soft, Some(3 * 1024));
        assert!(read_files(&dir.path().join("nowhere"), &mut super::super::Quiet).is_empty());
    }
}
