//! Held domains in systemd's fd store (`FDSTORE=1`), so a restarted `watch` can find the
//! containers, groups and window memfds of the domains it held. This module owns the naming
//! of stored fds, sending them to the notify socket (one message per fd, each with its own
//! `FDNAME=`), removing them (`FDSTOREREMOVE=1`), and sorting the fds systemd passes back
//! (`LISTEN_FDS` / `LISTEN_FDNAMES`) into per-domain sets.
//!
//! Names: `vfioctl.DOMAIN.container.N`, `vfioctl.DOMAIN.group.ID`, `vfioctl.DOMAIN.window.N`,
//! `vfioctl.DOMAIN.layout.0`; on the iommufd backend `vfioctl.DOMAIN.iommufd.0` (the one
//! iommufd; the IOAS ids are in the layout record) and `vfioctl.DOMAIN.device.N` (the Nth
//! device cdev the layout lists) instead of containers and groups;
//! DOMAIN percent-escaped so the name stays a valid `FDNAME` (printable ASCII, no `:`, at
//! most 255 bytes).
//!
//! `domain::adopt` turns a returned domain (with its `layout.0` record) back into a held
//! domain.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// What one stored fd is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Container(usize),
    Group(u32),
    Window(usize),
    /// The domain's layout record (see `domain::adopt`).
    Layout,
    /// The iommufd of a domain on the iommufd backend.
    Iommufd,
    /// The Nth device cdev of the layout (iommufd backend).
    Device(usize),
}

/// A stored fd's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredName {
    pub domain: String,
    pub part: Part,
}

const PREFIX: &str = "vfioctl.";
const MAX_NAME: usize = 255;

fn escape(domain: &str) -> String {
    let mut out = String::new();
    for b in domain.bytes() {
        if b.is_ascii_graphic() && b != b':' && b != b'%' && b != b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl StoredName {
    /// The `FDNAME`, or `None` when the domain's name is too long to fit.
    pub fn encode(&self) -> Option<String> {
        let part = match self.part {
            Part::Container(n) => format!("container.{n}"),
            Part::Group(g) => format!("group.{g}"),
            Part::Window(n) => format!("window.{n}"),
            Part::Layout => "layout.0".to_string(),
            Part::Iommufd => "iommufd.0".to_string(),
            Part::Device(n) => format!("device.{n}"),
        };
        let name = format!("{PREFIX}{}.{part}", escape(&self.domain));
        (name.len() <= MAX_NAME).then_some(name)
    }

    /// Parses a name this module wrote; other names (not ours) give `None`.
    pub fn decode(name: &str) -> Option<StoredName> {
        let rest = name.strip_prefix(PREFIX)?;
        let mut it = rest.splitn(3, '.');
        let domain = unescape(it.next()?)?;
        let kind = it.next()?;
        let n = it.next()?;
        let part = match kind {
            "container" => Part::Container(n.parse().ok()?),
            "group" => Part::Group(n.parse().ok()?),
            "window" => Part::Window(n.parse().ok()?),
            "layout" if n == "0" => Part::Layout,
            "iommufd" if n == "0" => Part::Iommufd,
            "device" => Part::Device(n.parse().ok()?),
            _ => return None,
        };
        Some(StoredName { domain, part })
    }
}

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("domain name \"{0}\" is too long for systemd's fd store")]
    NameTooLong(String),
    #[error("notify socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The notify socket (`NOTIFY_SOCKET`, or a stand-in).
#[derive(Debug, Clone)]
pub struct FdStore {
    path: PathBuf,
}

impl FdStore {
    /// `NOTIFY_SOCKET` from the environment, if set (a path; abstract sockets start with `@`
    /// and are not supported here yet).
    pub fn from_env() -> Option<FdStore> {
        let p = std::env::var_os("NOTIFY_SOCKET")?;
        let path = PathBuf::from(p);
        path.is_absolute().then_some(FdStore { path })
    }

    pub fn at(path: &Path) -> FdStore {
        FdStore {
            path: path.to_path_buf(),
        }
    }

    fn send(&self, text: &str, fd: Option<BorrowedFd<'_>>) -> Result<(), StoreError> {
        let err = |source| StoreError::Socket {
            path: self.path.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        sock.connect(&self.path).map_err(err)?;
        let raw = fd.map(|f| [f.as_raw_fd()]);
        let cmsg: Vec<ControlMessage> = raw
            .as_ref()
            .map(|r| ControlMessage::ScmRights(r))
            .into_iter()
            .collect();
        sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(text.as_bytes())],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// Stores each fd under its name (one message each: `FDNAME` names all fds of a message).
    pub fn store(&self, fds: &[(StoredName, BorrowedFd<'_>)]) -> Result<(), StoreError> {
        for (name, fd) in fds {
            let n = name
                .encode()
                .ok_or_else(|| StoreError::NameTooLong(name.domain.clone()))?;
            self.send(&format!("FDSTORE=1\nFDNAME={n}"), Some(*fd))?;
        }
        Ok(())
    }

    /// Drops stored fds by name (a domain released, or adopted and stored again).
    pub fn remove(&self, names: &[StoredName]) -> Result<(), StoreError> {
        for name in names {
            if let Some(n) = name.encode() {
                self.send(&format!("FDSTOREREMOVE=1\nFDNAME={n}"), None)?;
            }
        }
        Ok(())
    }
}

/// The fds of one domain systemd handed back.
#[derive(Debug, Default)]
pub struct Stored {
    pub containers: BTreeMap<usize, OwnedFd>,
    pub groups: BTreeMap<u32, OwnedFd>,
    pub windows: BTreeMap<usize, OwnedFd>,
    pub layout: Option<OwnedFd>,
    pub iommufd: Option<OwnedFd>,
    pub devices: BTreeMap<usize, OwnedFd>,
}

/// Sorts fds passed back by systemd by domain. Fds with names that are not ours are
/// returned apart, for the caller to close or use.
pub fn sort(passed: Vec<(OwnedFd, String)>) -> (BTreeMap<String, Stored>, Vec<(OwnedFd, String)>) {
    let mut domains: BTreeMap<String, Stored> = BTreeMap::new();
    let mut other = Vec::new();
    for (fd, name) in passed {
        let Some(n) = StoredName::decode(&name) else {
            other.push((fd, name));
            continue;
        };
        let d = domains.entry(n.domain).or_default();
        match n.part {
            Part::Container(i) => {
                d.containers.insert(i, fd);
            }
            Part::Group(g) => {
                d.groups.insert(g, fd);
            }
            Part::Window(i) => {
                d.windows.insert(i, fd);
            }
            Part::Layout => d.layout = Some(fd),
            Part::Iommufd => d.iommufd = Some(fd),
            Part::Device(i) => {
                d.devices.insert(i, fd);
            }
        }
    }
    (domains, other)
}

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// Why the `LISTEN_*` variables were not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("LISTEN_PID={0} is another process; the fds are not ours")]
    OtherPid(String),
    #[error("LISTEN_FDS=\"{0}\" is not a count of fds")]
    BadCount(String),
    #[error("LISTEN_FDNAMES names {names} fds, LISTEN_FDS passes {fds}")]
    NameCount { names: usize, fds: usize },
}

/// The fds systemd passed, from the values of `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES` and this process's pid: (fd number, name). No variables: nothing passed.
/// Pure, so the rules are tested without spawning a process.
pub fn listed(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    my_pid: u32,
) -> Result<Vec<(i32, String)>, ListenError> {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(my_pid) {
        return Err(ListenError::OtherPid(pid.to_string()));
    }
    let n: i32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=i32::MAX - LISTEN_FDS_START).contains(n))
        .ok_or_else(|| ListenError::BadCount(count.to_string()))?;
    let names: Vec<String> = match names {
        Some(s) if !s.is_empty() => s.split(':').map(str::to_string).collect(),
        // systemd names unnamed fds "unknown".
        _ => vec!["unknown".to_string(); n as usize],
    };
    if names.len() != n as usize {
        return Err(ListenError::NameCount {
            names: names.len(),
            fds: n as usize,
        });
    }
    Ok((LISTEN_FDS_START..LISTEN_FDS_START + n)
        .zip(names)
        .collect())
}

/// Takes the fds systemd passed this process (`LISTEN_*`, see [`listed`]), each checked
/// open and made close-on-exec, and clears the variables so no child inherits them. Unused
/// or invalid variables give an empty list and a warning.
pub fn take_passed() -> Vec<(OwnedFd, String)> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let var = |k: &str| std::env::var(k).ok();
    let list = match listed(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("fd store: {e}; no stored domain is adopted");
            Vec::new()
        }
    };
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    let mut out = Vec::new();
    for (raw, name) in list {
        // SAFETY: only to ask whether `raw` is open; no ownership is taken yet.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        if fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
            tracing::warn!("fd store: passed fd {raw} ({name}) is not open; skipped");
            continue;
        }
        // SAFETY: systemd passed `raw` to this process (LISTEN_PID matched) and nothing else
        // in this process owns it: the variables are read once, here, and then cleared.
        out.push((
            unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) },
            name,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_valid_fdnames() {
        for domain in ["dma", "a.b:c%d e", "ünïcode"] {
            for part in [
                Part::Container(0),
                Part::Group(42),
                Part::Window(3),
                Part::Layout,
                Part::Iommufd,
                Part::Device(2),
            ] {
                let n = StoredName {
                    domain: domain.into(),
                    part,
                };
                let enc = n.encode().unwrap();
                assert!(
                    enc.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                    "{enc}"
                );
                assert_eq!(StoredName::decode(&enc), Some(n));
            }
        }
        let long = StoredName {
            domain: "x".repeat(300),
            part: Part::Group(1),
        };
        assert_eq!(long.encode(), None);
        assert_eq!(StoredName::decode("other.thing"), None);
        assert_eq!(StoredName::decode("vfioctl.dma.pipe.1"), None);
    }
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn listen_variables_are_read_as_systemd_sets_them() {
        let names = "vfioctl.dma.container.0:vfioctl.dma.group.5";
        assert_eq!(
            listed(Some("42"), Some("2"), Some(names), 42),
            Ok(vec![
                (3, "vfioctl.dma.container.0".to_string()),
                (4, "vfioctl.dma.group.5".to_string())
            ])
        );
        assert_eq!(listed(None, None, None, 42), Ok(vec![]));
        assert_eq!(
            listed(Some("41"), Some("2"), Some(names), 42),
            Err(ListenError::OtherPid("41".into()))
        );
        assert_eq!(
            listed(Some("42"), Some("x"), Some(names), 42),
            Err(ListenError::BadCount("x".into()))
        );
        assert_eq!(
            listed(Some("42"), Some("3"), Some(names), 42),
            Err(ListenError::NameCount { names: 2, fds: 3 })
        );
        assert_eq!(
            listed(Some("42"), Some("1"), None, 42),
            Ok(vec![(3, "unknown".to_string())])
        );
    }
}
