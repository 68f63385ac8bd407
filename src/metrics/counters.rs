//! Event counts kept for the life of the process by threads that have no other channel to the
//! metrics (the hot-plug claimer runs beside the watch loop, not inside a pass).

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Hot-plugged functions whose `driver_override` the claimer wrote before any host driver bound
/// them.
pub static HOTPLUG_CLAIMS_WON: Counter = Counter::new();
/// Hot-plugged functions the claimer could not take first: the write failed, or a host driver
/// had already bound the function (the pass then takes it over with an unbind).
pub static HOTPLUG_CLAIMS_LOST: Counter = Counter::new();

/// Whether a hot-plug claim won: the override was written and no driver other than the wanted
/// one is bound (`bound`: the function's driver right after the write).
pub fn claim_won(written: bool, bound: Option<&str>, wanted: &str) -> bool {
    written && !matches!(bound, Some(b) if b != wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_counts() {
        let c = Counter::new();
        c.inc();
        c.inc();
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn a_claim_is_lost_when_a_host_driver_got_there_first_or_the_write_failed() {
        assert!(claim_won(true, None, "vfio-pci"));
        assert!(claim_won(true, Some("vfio-pci"), "vfio-pci"));
        assert!(!claim_won(true, Some("e1000e"), "vfio-pci"));
        assert!(!claim_won(false, None, "vfio-pci"));
    }
}
