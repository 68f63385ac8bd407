//! The real event source: one `poll(2)` over three file descriptors, no threads of our own.
//!
//! - the udev monitor socket, subsystems `pci` and `vfio`;
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
use std::os::fd::{AsFd, OwnedFd};
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

/// Which netlink group the udev monitor listens on.
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

/// udev + config directory + signals, multiplexed with poll.
pub struct LiveSource {
    monitor: udev::MonitorSocket,
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

        let builder = match uevents {
            UeventSource::Udev => udev::MonitorBuilder::new(),
            UeventSource::Kernel => udev::MonitorBuilder::new_kernel(),
        };
        let monitor = builder
            .and_then(|b| b.match_subsystem("pci"))
            .and_then(|b| b.match_subsystem("vfio"))
            .and_then(|b| b.listen())
            .map_err(|e| WatchError::source("opening the udev monitor", e))?;

        let (wake, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| WatchError::source("creating the wake-up pipe", e.into()))?;
        let watcher = watch_config_dir(config, wake_tx)?;

        Ok(LiveSource {
            monitor,
            signals,
            wake: File::from(wake),
            _watcher: watcher,
        })
    }

    fn drain_udev(&self, events: &mut Vec<Event>) {
        for e in self.monitor.iter() {
            if let Some(event) = translate(&e) {
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
        let (udev_ready, signals_ready, wake_ready) = {
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
        if udev_ready {
            self.drain_udev(&mut events);
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

/// A udev event as the loop sees it; `None` for events it does not care about.
fn translate(e: &udev::Event) -> Option<Event> {
    match e.subsystem().and_then(OsStr::to_str)? {
        "vfio" => Some(Event::VfioNode),
        "pci" => {
            let action = match e.event_type() {
                udev::EventType::Add => DeviceAction::Add,
                udev::EventType::Remove => DeviceAction::Remove,
                udev::EventType::Bind => DeviceAction::Bind,
                udev::EventType::Unbind => DeviceAction::Unbind,
                udev::EventType::Change => DeviceAction::Change,
                udev::EventType::Unknown => return None,
            };
            let address = e.sysname().to_str()?.parse().ok()?;
            let prop = |k: &str| e.property_value(k).and_then(OsStr::to_str);
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
