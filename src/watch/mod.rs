//! `vfioctl watch`: keeps a host converged while it changes under us.
//!
//! Level-triggered, in the style of a Kubernetes controller: every event (udev, an edit in the
//! config's directory, SIGHUP, the resync timer) only says "look again". The loop coalesces bursts
//! and asks a [`Reconciler`] to converge from the full desired and observed state, so a missed or
//! duplicated event costs nothing. The pieces:
//!
//! - [`events`]: the event type and the [`EventSource`] trait the loop waits on;
//! - [`live_source`]: the real source: a uevent socket (no libudev), `notify` on the config's directory, signalfd;
//! - [`coalesce`]: debounce, urgent per-device passes, resync and retry deadlines (pure, timed
//!   by the caller's clock);
//! - [`reload`]: re-reading the config, keeping the last good one when a new one is invalid;
//! - [`hotplug_claim`]: a thread that makes the early claim ([`crate::apply::early_claim`]: the
//!   `driver_override` write ahead of any driver) the moment the kernel announces a hot-plugged
//!   function, inside the few milliseconds before it probes drivers;
//! - [`relevance`]: whether a device event names a configured device;
//! - [`host_reconciler`]: the production reconciler, one `apply::reconcile` pass per call;
//! - [`run_loop`]: the single loop tying them together, generic over all its collaborators;
//! - [`notify_systemd`]: READY / RELOADING / STATUS / STOPPING for systemd;
//! - [`domain_layer`]: the domain adapter: holds the config's `[[domain]]`s around each binding
//!   pass (releases before it, builds after it) and publishes them;
//! - [`pass_report`]: times each pass and reports it (with the host read after it) to the
//!   metrics textfile and the kubelet device plugin;
//! - [`daemon`]: the production `watch`, all of the above wired on the real host.

pub mod coalesce;
pub mod coldplug;
pub mod daemon;
pub mod domain_layer;
pub mod events;
pub mod host_reconciler;
pub mod hotplug_claim;
pub mod live_source;
pub mod notify_systemd;
pub mod pass_report;
pub mod relevance;
pub mod reload;
pub mod run_loop;

pub use coalesce::{Coalescer, Timing, Work};
pub use events::{DeviceAction, DeviceEvent, Event, EventSource};
pub use notify_systemd::{ServiceNotifier, SystemdNotifier};
pub use reload::{ConfigLoader, ConfigRejected, ConfigState, ReloadOutcome};
pub use run_loop::{Outcome, Reconciler, Scope, WatchLoop};

/// Why the watch loop stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Setting up or reading an event source failed.
    #[error("{what}: {source}")]
    Source {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl WatchError {
    pub(crate) fn source(what: impl Into<String>, source: std::io::Error) -> Self {
        WatchError::Source {
            what: what.into(),
            source,
        }
    }
}
