//! Telling the service manager how `watch` is doing: `READY=1` once the first pass is done,
//! `RELOADING=1` while a SIGHUP reload runs, `STATUS=` after every pass, `STOPPING=1` on the way
//! out, and watchdog pings when the unit asks for them.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op. A failed notification is logged,
//! never fatal: the host's convergence does not depend on the service manager hearing us.

use std::time::Duration;

use sd_notify::NotifyState;

/// The notifications the loop sends; a recording fake implements it in tests.
pub trait ServiceNotifier {
    fn ready(&mut self);
    fn reloading(&mut self);
    fn stopping(&mut self);
    fn status(&mut self, status: &str);
    fn watchdog(&mut self);
    /// The watchdog period the service manager expects pings within, if any.
    fn watchdog_period(&self) -> Option<Duration>;
}

/// The real notifier (sd_notify protocol over `NOTIFY_SOCKET`).
#[derive(Debug, Default)]
pub struct SystemdNotifier {
    watchdog: Option<Duration>,
}

impl SystemdNotifier {
    pub fn new() -> Self {
        SystemdNotifier {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("sd_notify {states:?}: {e}");
        }
    }
}

impl ServiceNotifier for SystemdNotifier {
    fn ready(&mut self) {
        self.send(&[NotifyState::Ready]);
    }

    fn reloading(&mut self) {
        // systemd needs the monotonic timestamp to pair RELOADING=1 with the next READY=1
        // (Type=notify-reload); older managers ignore it.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    fn watchdog(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }
}
