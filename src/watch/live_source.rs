//! The real event source: one `poll(2)` over three file descriptors, no threads of our own.
//!
//! - a uevent socket (`NETLINK_KOBJECT_UEVENT`), read and parsed here without libudev: the
//!   kernel's own messages (multicast group 1, `ACTION@DEVPATH` then `KEY=VALUE` pairs) or
//!   udevd's re-broadcasts (group 2, a `libudev` header then the same pairs), keeping the
//!   subsystems `pci` and `vfio`;
//! - the read end of a pipe that the `notify` watcher's callback thread writes one byte to when
//!   something changes in the config file's *directory* (editors save by writing a temporary
//!   file and renaming it over the old one; Kubernetes ConfigMaps swap a `..data` symlink, so
//!   watching the file itself would lose track after the first save);
//! - a signalfd for SIGHUP (reload) and SIGTERM/SIGINT (stop).
//!
//! The wait blocks with the loop's timeout; with nothing pending the timeout is infinite and
//! the process sleeps in the kernel: zero CPU when idle.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use notify::Watcher;

use super::events::{uevent_ids, DeviceAction, DeviceEvent, Event, EventSource};
use super::WatchError;

/// Which netlink group the uevent socket listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UeventSource {
    /// Events as udevd re-broadcasts them, after its rules ran: later by the time udevd takes
    /// (hundreds of milliseconds under load), and absent when udevd is not running.
    Udev,
    /// Events straight from the kernel, as soon as the device exists in sysfs. `watch` uses
    /// these: an event only says "look again" and the pass reads sysfs itself, so nothing
    /// udev adds is needed, and taking over a hot-plugged device cannot start too early.
    Kernel,
}

impl UeventSource {
    /// The multicast group of `NETLINK_KOBJECT_UEVENT` (the kernel's is 1, udevd's 2).
    fn group(self) -> u32 {
        match self {
            UeventSource::Kernel => 1,
            UeventSource::Udev => 2,
        }
    }
}

/// uevents + config directory + signals, multiplexed with poll.
pub struct LiveSource {
    monitor: OwnedFd,
    uevents: UeventSource,
    signals: SignalFd,
    wake: File,
    // Kept alive: dropping it stops the watcher thread.
    _watcher: notify::RecommendedWatcher,
}

impl LiveSource {
    /// Blocks SIGHUP/SIGTERM/SIGINT (before any thread exists, so every thread inherits the
    /// mask and the signals are only ever read from the signalfd), then opens the sources.
    pub fn open(config: &Path, uevents: UeventSource) -> Result<Self, WatchError> {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| WatchError::source("blocking signals", e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| WatchError::source("creating the signalfd", e.into()))?;

        let monitor = open_uevent_socket(uevents)?;

        let (wake, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| WatchError::source("creating the wake-up pipe", e.into()))?;
        let watcher = watch_config_dir(config, wake_tx)?;

        Ok(LiveSource {
            monitor,
            uevents,
            signals,
            wake: File::from(wake),
            _watcher: watcher,
        })
    }

    fn drain_uevents(&self, events: &mut Vec<Event>) -> Result<(), WatchError> {
        use nix::sys::socket::{recvfrom, NetlinkAddr};
        let mut buf = vec![0u8; 16384];
        loop {
            let (n, from) = match recvfrom::<NetlinkAddr>(self.monitor.as_raw_fd(), &mut buf) {
                Ok((n, from)) => (n, from.map(|a| a.pid())),
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                // The kernel dropped messages (buffer full): a pass reads sysfs anyway, so
                // ask for a full look and go on with what follows.
                Err(Errno::ENOBUFS) => {
                    tracing::warn!("uevents were dropped (receive buffer full); looking again");
                    events.push(Event::VfioNode);
                    continue;
                }
                Err(e) => return Err(WatchError::source("reading uevents", e.into())),
            };
            // Only the kernel (port 0) speaks on group 1, only udevd (a process) on group 2;
            // sending to either needs CAP_NET_ADMIN, so nobody else can inject events.
            let trusted = match self.uevents {
                UeventSource::Kernel => from == Some(0),
                UeventSource::Udev => from.is_some_and(|pid| pid != 0),
            };
            if !trusted {
                continue;
            }
            if let Some(event) = parse_uevent(&buf[..n]) {
                tracing::debug!(?event, "uevent");
                events.push(event);
            }
        }
    }

    fn drain_signals(&self, events: &mut Vec<Event>) -> Result<(), WatchError> {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => events.push(Event::Reload),
                    Ok(_) => events.push(Event::Terminate),
                    Err(_) => {}
                },
                Ok(None) | Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(WatchError::source("reading the signalfd", e.into())),
            }
        }
    }

    fn drain_wake(&mut self, events: &mut Vec<Event>) -> Result<(), WatchError> {
        let mut buf = [0u8; 64];
        let mut any = false;
        loop {
            match self.wake.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => any = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(WatchError::source("reading the wake-up pipe", e)),
            }
        }
        if any {
            events.push(Event::ConfigChanged);
        }
        Ok(())
    }
}

impl EventSource for LiveSource {
    fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Event>, WatchError> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so a deadline 0.4 ms away does not become a zero-timeout spin.
            Some(d) => {
                let ms = d.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let (uevents_ready, signals_ready, wake_ready) = {
            let mut fds = [
                PollFd::new(self.monitor.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return Ok(Vec::new()),
                Err(e) => return Err(WatchError::source("poll", e.into())),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]))
        };
        let mut events = Vec::new();
        if signals_ready {
            self.drain_signals(&mut events)?;
        }
        if uevents_ready {
            self.drain_uevents(&mut events)?;
        }
        if wake_ready {
            self.drain_wake(&mut events)?;
        }
        Ok(events)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Watches the directory holding `config` (non-recursively); writes a byte to `wake` for any
/// event touching the config's file name or a `..`-prefixed entry (Kubernetes' `..data`).
fn watch_config_dir(
    config: &Path,
    wake: OwnedFd,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let dir = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = config.file_name().map(OsStr::to_os_string);
    let mut wake = File::from(wake);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // Opens and reads (our own reload among them) change nothing; reacting to them
            // would make every reload schedule the next one.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => false,
            Ok(event) => event.paths.iter().any(|p| {
                p.file_name().is_some_and(|f| {
                    Some(f) == name.as_deref() || f.as_encoded_bytes().starts_with(b"..")
                })
            }),
            // An error from the watcher (queue overflow): look again to be safe.
            Err(_) => true,
        };
        if relevant {
            // A full pipe already holds a wake-up; nothing more to say.
            let _ = wake.write(&[1]);
        }
    })
    .map_err(|e| WatchError::source("creating the config watcher", std::io::Error::other(e)))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| {
            WatchError::source(
                format!("watching {}", dir.display()),
                std::io::Error::other(e),
            )
        })?;
    Ok(watcher)
}

/// A non-blocking uevent socket on `source`'s group, with a large receive buffer so a burst
/// of VF creations is not dropped.
fn open_uevent_socket(source: UeventSource) -> Result<OwnedFd, WatchError> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    let err = |what: &'static str| move |e: Errno| WatchError::source(what, e.into());
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(err("opening the uevent socket"))?;
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, source.group()))
        .map_err(err("binding the uevent socket"))?;
    Ok(fd)
}

/// The magic number after udevd's `libudev\0` prefix, big-endian on the wire.
const LIBUDEV_MAGIC: u32 = 0xfeed_cafe;

/// The `KEY=VALUE` block of a uevent message: after the kernel's `ACTION@DEVPATH` line, or at
/// the offset udevd's `libudev` header gives (prefix[8], magic, header_size, properties_off,
/// properties_len, then filter hashes; all `u32`, the magic big-endian, the rest native).
fn properties(message: &[u8]) -> Option<&[u8]> {
    if let Some(header) = message.strip_prefix(b"libudev\0") {
        let word = |i: usize| -> Option<[u8; 4]> { header.get(i * 4..i * 4 + 4)?.try_into().ok() };
        if u32::from_be_bytes(word(0)?) != LIBUDEV_MAGIC {
            return None;
        }
        let off = usize::try_from(u32::from_ne_bytes(word(2)?)).ok()?;
        let len = usize::try_from(u32::from_ne_bytes(word(3)?)).ok()?;
        return message.get(off..off.checked_add(len)?);
    }
    let end = message.iter().position(|b| *b == 0)?;
    let header = &message[..end];
    // `add@/devices/...`; anything else (udevd's header, garbage) is not a kernel uevent.
    header.contains(&b'@').then(|| &message[end + 1..])
}

/// A uevent as the loop sees it; `None` for events it does not care about (other subsystems
/// and actions, malformed messages).
pub fn parse_uevent(message: &[u8]) -> Option<Event> {
    let mut props = std::collections::HashMap::new();
    for field in properties(message)?.split(|b| *b == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some((k, v)) = field.split_once('=') {
            props.insert(k, v);
        }
    }
    match *props.get("SUBSYSTEM")? {
        "vfio" => Some(Event::VfioNode),
        "pci" => {
            let action = match *props.get("ACTION")? {
                "add" => DeviceAction::Add,
                "remove" => DeviceAction::Remove,
                "bind" => DeviceAction::Bind,
                "unbind" => DeviceAction::Unbind,
                "change" => DeviceAction::Change,
                _ => return None,
            };
            let address = props.get("DEVPATH")?.rsplit('/').next()?.parse().ok()?;
            let prop = |k: &str| props.get(k).copied();
            Some(Event::Device(DeviceEvent {
                action,
                address,
                ids: uevent_ids(prop("PCI_ID"), prop("PCI_SUBSYS_ID"), prop("PCI_CLASS")),
                driver: prop("DRIVER").map(str::to_owned),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL_BIND: &[u8] = b"bind@/devices/pci0000:00/0000:00:03.0/0000:01:00.0\0ACTION=bind\0\
DEVPATH=/devices/pci0000:00/0000:00:03.0/0000:01:00.0\0SUBSYSTEM=pci\0DRIVER=vfio-pci\0\
PCI_CLASS=10802\0PCI_ID=1B36:0010\0PCI_SUBSYS_ID=1AF4:1100\0PCI_SLOT_NAME=0000:01:00.0\0\
SEQNUM=1203\0";

    /// udevd's re-broadcast of `props`: the `libudev` header (40 bytes) then the properties.
    fn libudev_message(props: &[u8], magic: u32) -> Vec<u8> {
        let mut m = b"libudev\0".to_vec();
        m.extend_from_slice(&magic.to_be_bytes());
        for word in [40u32, 40, props.len() as u32, 0, 0, 0, 0] {
            m.extend_from_slice(&word.to_ne_bytes());
        }
        m.extend_from_slice(props);
        m
    }

    fn bind_of_nvme() -> Event {
        Event::Device(DeviceEvent {
            action: DeviceAction::Bind,
            address: "0000:01:00.0".parse().unwrap(),
            ids: uevent_ids(Some("1B36:0010"), Some("1AF4:1100"), Some("10802")),
            driver: Some("vfio-pci".into()),
        })
    }

    #[test]
    fn kernel_and_udevd_uevents_read_alike() {
        assert_eq!(parse_uevent(KERNEL_BIND), Some(bind_of_nvme()));
        let start = KERNEL_BIND.iter().position(|b| *b == 0).unwrap() + 1;
        let udevd = libudev_message(&KERNEL_BIND[start..], LIBUDEV_MAGIC);
        assert_eq!(parse_uevent(&udevd), Some(bind_of_nvme()));
        // A wrong magic or a properties block past the end is not an event.
        assert_eq!(
            parse_uevent(&libudev_message(&KERNEL_BIND[start..], 1)),
            None
        );
        let mut short = udevd.clone();
        short.truncate(60);
        assert_eq!(parse_uevent(&short), None);
    }

    #[test]
    fn vfio_nodes_count_and_other_uevents_do_not() {
        let node = b"add@/devices/virtual/vfio/8\0ACTION=add\0DEVPATH=/devices/virtual/vfio/8\0\
SUBSYSTEM=vfio\0MAJOR=245\0MINOR=0\0DEVNAME=vfio/8\0";
        assert_eq!(parse_uevent(node), Some(Event::VfioNode));
        for msg in [
            &b"add@/devices/virtual/net/tap0\0ACTION=add\0SUBSYSTEM=net\0INTERFACE=tap0\0"[..],
            b"move@/devices/pci0000:00/0000:03:00.0\0ACTION=move\0SUBSYSTEM=pci\0\
DEVPATH=/devices/pci0000:00/0000:03:00.0\0",
            b"add@/devices/pci0000:00/0000:03:00.0\0ACTION=add\0SUBSYSTEM=pci\0DEVPATH=/x/notpci\0",
            b"SUBSYSTEM=pci\0ACTION=add\0",
            b"",
        ] {
            assert_eq!(
                parse_uevent(msg),
                None,
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    /// Polls the pipe for up to `wait`; true when a wake-up byte arrived.
    fn woke(pipe: &mut File, wait: Duration) -> bool {
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let ready = poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0;
        let mut buf = [0u8; 64];
        while ready && pipe.read(&mut buf).is_ok_and(|n| n > 0) {}
        ready
    }

    #[test]
    fn config_dir_watch_wakes_on_rename_and_symlink_swap_not_on_reads() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vfio.toml");
        std::fs::write(&config, "version = 1\n").unwrap();
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let mut rx = File::from(rx);
        let _watcher = watch_config_dir(&config, tx).unwrap();

        // Reading the config (what a reload does) is not a change.
        for _ in 0..3 {
            std::fs::read_to_string(&config).unwrap();
        }
        assert!(
            !woke(&mut rx, Duration::from_millis(300)),
            "a read woke the loop"
        );

        // Unrelated files in the same directory are not either.
        std::fs::write(dir.path().join("other.conf"), "x").unwrap();
        assert!(
            !woke(&mut rx, Duration::from_millis(300)),
            "another file woke the loop"
        );

        // An editor's save: write a temporary file, rename it over the config.
        let tmp = dir.path().join(".vfio.toml.swp");
        std::fs::write(&tmp, "version = 1\n# edited\n").unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        assert!(
            woke(&mut rx, Duration::from_secs(5)),
            "the rename was missed"
        );

        // A Kubernetes ConfigMap update: a new `..data` symlink renamed over the old one.
        std::os::unix::fs::symlink("..2026_11_25", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(
            woke(&mut rx, Duration::from_secs(5)),
            "the ..data swap was missed"
        );
    }
}
