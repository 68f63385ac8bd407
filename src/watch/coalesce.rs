//! When to reconcile: turns a stream of "look again" notes into few passes.
//!
//! Pure state over the caller's clock. A burst of notes coalesces into one full pass that runs
//! once the burst has been quiet for `debounce` (but never later than `max_delay` after its first
//! note, so a steady trickle cannot starve the host). A configured device that just appeared is
//! urgent: its own scoped pass is due at once. The resync timer and the retry backoff after a
//! failed pass are deadlines of the same kind. Nothing here sleeps; [`Coalescer::timeout`] tells
//! the loop how long it may block.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::pci::PciAddress;

/// The loop's time constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Quiet period that ends a burst.
    pub debounce: Duration,
    /// Longest a burst may postpone its pass, counted from its first note.
    pub max_delay: Duration,
    /// Periodic full pass that catches anything missed; `None` turns it off.
    pub resync: Option<Duration>,
    /// First retry delay after a failed or lock-busy pass; doubles on each failure in a row.
    pub retry_min: Duration,
    /// Ceiling of the retry delay.
    pub retry_max: Duration,
}

impl Timing {
    /// The defaults for a debounce and a resync period (`0` turns resync off).
    pub fn new(debounce: Duration, resync: Duration) -> Self {
        Timing {
            debounce,
            max_delay: (debounce * 10).max(Duration::from_secs(2)),
            resync: (!resync.is_zero()).then_some(resync),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// What is due now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Work {
    /// Re-read the config before the pass.
    pub reload: bool,
    /// Reconcile everything.
    pub full: bool,
    /// Reconcile only these functions (their group closures); empty when `full`.
    pub devices: Vec<PciAddress>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        !self.reload && !self.full && self.devices.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    first: Instant,
    due: Instant,
}

/// Pending passes and their deadlines.
#[derive(Debug, Clone)]
pub struct Coalescer {
    timing: Timing,
    burst: Option<Burst>,
    /// The burst includes a host change (not only a config edit).
    dirty: bool,
    /// The burst includes a config edit.
    reload: bool,
    urgent: BTreeSet<PciAddress>,
    retry_at: Option<Instant>,
    backoff: Duration,
    resync_at: Option<Instant>,
}

impl Coalescer {
    /// Nothing pending; the first resync is one period after `now`.
    pub fn new(timing: Timing, now: Instant) -> Self {
        Coalescer {
            timing,
            burst: None,
            dirty: false,
            reload: false,
            urgent: BTreeSet::new(),
            retry_at: None,
            backoff: timing.retry_min,
            resync_at: timing.resync.map(|p| now + p),
        }
    }

    /// Something changed on the host: a full pass once the burst is quiet.
    pub fn look_again(&mut self, now: Instant) {
        self.dirty = true;
        self.extend_burst(now);
    }

    /// The config's directory changed: re-read it once the burst is quiet. Whether a pass
    /// follows depends on what the file then says (see [`Work::reload`]).
    pub fn reload(&mut self, now: Instant) {
        self.reload = true;
        self.extend_burst(now);
    }

    fn extend_burst(&mut self, now: Instant) {
        let first = self.burst.map_or(now, |b| b.first);
        let due = (now + self.timing.debounce).min(first + self.timing.max_delay);
        self.burst = Some(Burst { first, due });
    }

    /// A configured device appeared or was grabbed: a pass of its own, now.
    pub fn urgent(&mut self, address: PciAddress) {
        self.urgent.insert(address);
    }

    /// How long the loop may block before something is due (`None`: until an event).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.urgent.is_empty() {
            return Some(Duration::ZERO);
        }
        [self.burst.map(|b| b.due), self.retry_at, self.resync_at]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Takes what is due at `now`. When anything calls for a full pass, the pending burst is
    /// taken with it (the pass reads the host as it is now) and so are pending scoped passes.
    pub fn take(&mut self, now: Instant) -> Work {
        let due = |at: Option<Instant>| at.is_some_and(|t| t <= now);
        let burst_due = due(self.burst.map(|b| b.due));
        let retry_due = due(self.retry_at);
        let resync_due = due(self.resync_at);
        if burst_due || retry_due || resync_due {
            let full = std::mem::take(&mut self.dirty) || retry_due || resync_due;
            let reload = std::mem::take(&mut self.reload);
            self.burst = None;
            if retry_due {
                self.retry_at = None;
            }
            if full {
                self.urgent.clear();
            }
            return Work {
                reload,
                full,
                devices: if full {
                    Vec::new()
                } else {
                    std::mem::take(&mut self.urgent).into_iter().collect()
                },
            };
        }
        Work {
            reload: false,
            full: false,
            devices: std::mem::take(&mut self.urgent).into_iter().collect(),
        }
    }

    /// A full pass ran (whatever its result): the next resync is one period from now.
    pub fn full_pass_ran(&mut self, now: Instant) {
        self.resync_at = self.timing.resync.map(|p| now + p);
        self.retry_at = None;
    }

    /// A pass converged: the next failure starts the backoff afresh.
    pub fn succeeded(&mut self) {
        self.backoff = self.timing.retry_min;
    }

    /// Another reconcile held the lock: a full retry after the shortest delay, no backoff
    /// (the other holder is a short `reconcile --device`). Returns the delay.
    pub fn busy(&mut self, now: Instant) -> Duration {
        let delay = self.timing.retry_min;
        self.schedule_retry(now + delay);
        delay
    }

    fn schedule_retry(&mut self, at: Instant) {
        self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
    }

    /// A pass failed: a full retry after the current backoff, which then doubles (up to
    /// `retry_max`). Returns the delay chosen.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff;
        self.schedule_retry(now + delay);
        self.backoff = (self.backoff * 2).min(self.timing.retry_max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timing() -> Timing {
        Timing {
            debounce: ms(200),
            max_delay: ms(1000),
            resync: Some(Duration::from_secs(60)),
            retry_min: ms(500),
            retry_max: ms(2000),
        }
    }

    #[test]
    fn burst_waits_for_quiet_then_one_full_pass() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        c.look_again(t0);
        c.look_again(t0 + ms(100));
        assert_eq!(c.timeout(t0 + ms(100)), Some(ms(200)));
        assert!(
            c.take(t0 + ms(250)).is_empty(),
            "still inside the quiet period"
        );
        let w = c.take(t0 + ms(300));
        assert!(w.full && !w.reload && w.devices.is_empty());
        assert!(c.take(t0 + ms(301)).is_empty(), "the burst was consumed");
    }

    #[test]
    fn steady_trickle_cannot_postpone_past_max_delay() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        let mut now = t0;
        while now < t0 + ms(1500) {
            c.look_again(now);
            if now >= t0 + ms(1000) {
                assert!(c.take(now).full, "due at max_delay");
                return;
            }
            assert!(c.take(now).is_empty());
            now += ms(150);
        }
        panic!("never became due");
    }

    #[test]
    fn urgent_device_is_due_at_once_and_alone() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        let a: PciAddress = "0000:03:00.0".parse().unwrap();
        c.look_again(t0);
        c.urgent(a);
        assert_eq!(c.timeout(t0), Some(Duration::ZERO));
        let w = c.take(t0);
        assert_eq!(w.devices, vec![a]);
        assert!(!w.full, "the debounced full pass stays pending");
        assert_eq!(c.timeout(t0), Some(ms(200)));
    }

    #[test]
    fn resync_fires_and_rearms() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        assert_eq!(c.timeout(t0), Some(Duration::from_secs(60)));
        assert!(c.take(t0 + Duration::from_secs(59)).is_empty());
        let at = t0 + Duration::from_secs(60);
        assert!(c.take(at).full);
        c.full_pass_ran(at);
        assert_eq!(c.timeout(at), Some(Duration::from_secs(60)));
    }

    #[test]
    fn no_resync_and_nothing_pending_blocks_forever() {
        let t0 = Instant::now();
        let mut t = timing();
        t.resync = None;
        let c = Coalescer::new(t, t0);
        assert_eq!(c.timeout(t0), None);
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_ceiling() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        let delays: Vec<_> = (0..4).map(|_| c.failed(t0)).collect();
        assert_eq!(delays, vec![ms(500), ms(1000), ms(2000), ms(2000)]);
        c.succeeded();
        assert_eq!(c.failed(t0), ms(500));
    }

    #[test]
    fn config_edit_alone_asks_for_a_reload_not_a_pass() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        c.reload(t0);
        assert!(c.take(t0 + ms(100)).is_empty());
        let w = c.take(t0 + ms(200));
        assert!(w.reload && !w.full);
    }

    #[test]
    fn config_edit_and_host_change_in_one_burst() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        c.reload(t0);
        c.look_again(t0 + ms(50));
        let w = c.take(t0 + ms(250));
        assert!(w.reload && w.full);
    }

    #[test]
    fn busy_retries_soon_without_backoff() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        assert_eq!(c.busy(t0), ms(500));
        assert_eq!(c.busy(t0), ms(500));
        assert!(c.take(t0 + ms(500)).full);
    }

    // 10,000 notes, urgent ones for 64 functions among them: what is pending stays one burst
    // and at most one entry per function, however long the storm.
    #[test]
    fn a_storm_of_notes_keeps_bounded_state() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(timing(), t0);
        let mut taken = Vec::new();
        for n in 0..10_000u64 {
            let now = t0 + Duration::from_micros(n * 100);
            c.look_again(now);
            if n % 3 == 0 {
                let a = PciAddress::from_routing_id(0, 0x100 + (n % 64) as u16);
                c.urgent(a);
            }
            assert!(c.urgent.len() <= 64);
            if n % 1000 == 999 {
                taken.push(c.take(now));
            }
        }
        assert!(taken.iter().all(|w| w.devices.len() <= 64));
        // Fully drained after the storm: one full pass, nothing left.
        let end = t0 + Duration::from_secs(2);
        let w = c.take(end);
        assert!(w.full);
        assert!(c.urgent.is_empty() && c.burst.is_none());
        assert!(c.take(end).is_empty());
    }
}
