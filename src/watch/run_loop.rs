//! The one loop of `vfioctl watch`: wait for events (never longer than the next deadline, never
//! busy), note them, run what is due, report to the service manager.
//!
//! Generic over its collaborators (event source, reconciler, config loader, notifier), so tests
//! drive it with a scripted source on a virtual clock and a recording reconciler.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::pci::PciAddress;

use super::coalesce::{Coalescer, Timing, Work};
use super::events::{DeviceEvent, Event, EventSource};
use super::notify_systemd::ServiceNotifier;
use super::relevance;
use super::reload::{ConfigLoader, ConfigState, ReloadOutcome};
use super::WatchError;

/// What one pass covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every configured device (and every device vfioctl holds that the config dropped).
    All,
    /// One function and its IOMMU group closure.
    Device(PciAddress),
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pass completed. `changed` actions were applied; `waiting` configured devices are
    /// absent (hot-plug or VF creation will bring them); `problems` parts of the config cannot
    /// be realised on this host as it is (logged by the reconciler; a later change may fix
    /// them, so they are no reason to retry).
    Converged {
        changed: usize,
        waiting: usize,
        problems: usize,
    },
    /// Another reconcile holds the lock; retry shortly.
    Busy,
    /// The pass failed (and undid what it did); the reason, for the log. Retried with backoff.
    Failed(String),
}

/// Converges the host to a config, level-triggered: computes from the full desired and
/// observed state every time, takes the reconcile lock for the pass only.
pub trait Reconciler {
    fn reconcile(&mut self, config: &Config, scope: Scope) -> Outcome;

    /// What this reconciler holds after its last pass, for the service status (`holding
    /// domain dma: groups 5, 1 window 2 MiB`); empty when it holds nothing.
    fn holding(&self) -> String {
        String::new()
    }
}

/// The watch loop and everything it owns.
pub struct WatchLoop<S, R, L, N> {
    source: S,
    reconciler: R,
    loader: L,
    notifier: N,
    config: ConfigState,
    coalescer: Coalescer,
    next_ping: Option<Instant>,
}

impl<S, R, L, N> WatchLoop<S, R, L, N>
where
    S: EventSource,
    R: Reconciler,
    L: ConfigLoader,
    N: ServiceNotifier,
{
    pub fn new(
        source: S,
        reconciler: R,
        loader: L,
        notifier: N,
        config: ConfigState,
        timing: Timing,
    ) -> Self {
        let now = source.now();
        let next_ping = notifier.watchdog_period().map(|_| now);
        WatchLoop {
            coalescer: Coalescer::new(timing, now),
            source,
            reconciler,
            loader,
            notifier,
            config,
            next_ping,
        }
    }

    pub fn reconciler(&self) -> &R {
        &self.reconciler
    }

    pub fn notifier(&self) -> &N {
        &self.notifier
    }

    pub fn config(&self) -> &ConfigState {
        &self.config
    }

    /// Runs until SIGTERM/SIGINT (`Ok`) or until an event source fails (`Err`). The first full
    /// pass runs before `READY=1`.
    pub fn run(&mut self) -> Result<(), WatchError> {
        let start = self.source.now();
        self.pass(Scope::All, start);
        self.notifier.ready();
        loop {
            let now = self.source.now();
            self.ping_watchdog(now);
            let timeout = min_timeout(self.coalescer.timeout(now), self.ping_timeout(now));
            let events = self.source.wait(timeout)?;
            let now = self.source.now();
            // Per function, only the newest uevent of a batch decides urgency: a `bind` to the
            // host driver already followed by our own `bind` needs no pass of its own.
            let mut newest: BTreeMap<PciAddress, DeviceEvent> = BTreeMap::new();
            for event in events {
                match event {
                    Event::Terminate => {
                        tracing::info!("stopping");
                        self.notifier.stopping();
                        return Ok(());
                    }
                    Event::Reload => self.reload_on_signal(now),
                    Event::ConfigChanged => self.coalescer.reload(now),
                    Event::VfioNode => self.coalescer.look_again(now),
                    Event::Device(device) => {
                        self.coalescer.look_again(now);
                        newest.insert(device.address, device);
                    }
                }
            }
            for device in newest.values() {
                if relevance::is_urgent(self.config.current(), device) {
                    tracing::info!(
                        device = %device.address,
                        action = ?device.action,
                        "configured device appeared: claiming it now"
                    );
                    self.coalescer.urgent(device.address);
                }
            }
            let work = self.coalescer.take(now);
            if !work.is_empty() {
                self.run_work(work, now);
            }
        }
    }

    fn run_work(&mut self, work: Work, now: Instant) {
        // The reload runs whenever it is due, even when the pass is due anyway: the config's
        // edit must not be lost in a burst of uevents.
        let changed = work.reload && self.reload(now);
        let full = work.full || changed;
        if full {
            self.pass(Scope::All, now);
        } else {
            for device in work.devices {
                self.pass(Scope::Device(device), now);
            }
        }
    }

    /// SIGHUP: reload now; a valid config (changed or not) gets a full pass.
    fn reload_on_signal(&mut self, now: Instant) {
        self.notifier.reloading();
        tracing::info!("SIGHUP: reloading {}", self.config.path().display());
        match self.config.reload(&mut self.loader) {
            ReloadOutcome::Rejected(rejected) => self.report_rejected(&rejected.report),
            ReloadOutcome::Replaced | ReloadOutcome::Unchanged => self.pass(Scope::All, now),
        }
        self.notifier.ready();
    }

    /// Re-reads the config after an edit; true when it changed (a full pass is due).
    fn reload(&mut self, _now: Instant) -> bool {
        match self.config.reload(&mut self.loader) {
            ReloadOutcome::Replaced => {
                tracing::info!(
                    generation = self.config.generation(),
                    "config changed: {}",
                    self.config.path().display()
                );
                true
            }
            ReloadOutcome::Unchanged => {
                tracing::debug!("config directory changed, desired state did not");
                false
            }
            ReloadOutcome::Rejected(rejected) => {
                self.report_rejected(&rejected.report);
                false
            }
        }
    }

    fn report_rejected(&mut self, report: &str) {
        tracing::error!(
            "new config rejected, keeping the last good one (generation {}); nothing changed:\n{report}",
            self.config.generation()
        );
        self.notifier.status(&format!(
            "config {} invalid; keeping generation {}",
            self.config.path().display(),
            self.config.generation()
        ));
    }

    fn pass(&mut self, scope: Scope, now: Instant) {
        let started = self.source.now();
        let outcome = self.reconciler.reconcile(self.config.current(), scope);
        let took = self.source.now().saturating_duration_since(started);
        if scope == Scope::All {
            self.coalescer.full_pass_ran(now);
        }
        let what = match scope {
            Scope::All => "all devices".to_string(),
            Scope::Device(a) => a.to_string(),
        };
        let status = match &outcome {
            Outcome::Converged {
                changed,
                waiting,
                problems,
            } => {
                self.coalescer.succeeded();
                tracing::info!(scope = %what, changed, waiting, problems, ?took, "pass done");
                let mut status = format!("converged ({changed} changes)");
                if *waiting > 0 {
                    status += &format!("; waiting for {waiting} absent device(s)");
                }
                if *problems > 0 {
                    status += &format!("; {problems} problem(s) keep parts of the config out");
                }
                status
            }
            Outcome::Busy => {
                let delay = self.coalescer.busy(now);
                tracing::info!(scope = %what, "reconcile lock held elsewhere; retrying in {delay:?}");
                format!("waiting for the reconcile lock; retrying in {delay:?}")
            }
            Outcome::Failed(reason) => {
                let delay = self.coalescer.failed(now);
                tracing::error!(scope = %what, ?took, "reconcile failed, retrying in {delay:?}: {reason}");
                format!("reconcile of {what} failed; retrying in {delay:?}: {reason}")
            }
        };
        let holding = self.reconciler.holding();
        let holding = if holding.is_empty() {
            "no domains held".to_string()
        } else {
            holding
        };
        // `systemctl status` shows this line: the outcome, what is held, when the pass ran.
        self.notifier.status(&format!(
            "{status}; {holding}; last pass ({what}) at {} UTC",
            utc_time_of_day()
        ));
    }

    fn ping_watchdog(&mut self, now: Instant) {
        let (Some(period), Some(at)) = (self.notifier.watchdog_period(), self.next_ping) else {
            return;
        };
        if at <= now {
            self.notifier.watchdog();
            self.next_ping = Some(now + period / 2);
        }
    }

    fn ping_timeout(&self, now: Instant) -> Option<Duration> {
        self.next_ping.map(|at| at.saturating_duration_since(now))
    }
}

/// The wall-clock time of day, `HH:MM:SS`, in UTC (no time zone database needed).
fn utc_time_of_day() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

fn min_timeout(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
