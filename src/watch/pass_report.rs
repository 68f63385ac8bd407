//! What each pass of `watch` tells the outside: a [`Reconciler`] wrapper that times every pass,
//! takes the host as read after it (the domain layer's reading, or its own after a failed
//! pass), and hands a [`PassReport`] to sinks (the metrics textfile, the
//! kubelet device plugin's unit feed). The sinks see the same converged view the next pass
//! starts from; they never change the host.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::broker::handout::Handout;
use crate::config::Config;
use crate::domain::iommu::Iommu;
use crate::domain::status::DomainStatus;
use crate::host::Snapshot;
use crate::metrics::{self, counters, Sample, WatchStats};
use crate::plan::{Accounts, Context};

use super::domain_layer::DomainLayer;
use super::run_loop::{Outcome, Reconciler, Scope};

/// One pass, as the sinks see it.
pub struct PassReport<'a> {
    pub config: &'a Config,
    pub scope: Scope,
    pub outcome: &'a Outcome,
    /// The host read after the pass (`None`: it could not be read).
    pub host: Option<&'a Snapshot>,
    /// The domains held after the pass.
    pub domains: &'a [DomainStatus],
    pub took: Duration,
    pub ended: SystemTime,
}

/// Receives every pass's report.
pub type Sink = Box<dyn FnMut(&PassReport)>;

/// Reads the host.
pub type Observe = Box<dyn FnMut() -> Result<Snapshot, String>>;

/// Reconcilers that hold domains say which, and what host they read after their pass.
pub trait HeldDomains {
    fn held_status(&self) -> Vec<DomainStatus>;
    /// The host read after the latest converged pass, if the reconciler keeps it.
    fn host_after_pass(&self) -> Option<&Snapshot>;
}

impl<R, I: Iommu> HeldDomains for DomainLayer<R, I> {
    fn held_status(&self) -> Vec<DomainStatus> {
        self.domains().status()
    }

    fn host_after_pass(&self) -> Option<&Snapshot> {
        self.last_host()
    }
}

/// A reconciler whose passes are reported to sinks.
pub struct Reported<R> {
    inner: R,
    observe: Observe,
    sinks: Vec<Sink>,
}

impl<R> Reported<R> {
    pub fn new(inner: R, observe: Observe) -> Self {
        Reported {
            inner,
            observe,
            sinks: Vec::new(),
        }
    }

    pub fn sink(mut self, sink: Sink) -> Self {
        self.sinks.push(sink);
        self
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }
}

impl<R: Reconciler + HeldDomains> Reconciler for Reported<R> {
    fn reconcile(&mut self, config: &Config, scope: Scope) -> Outcome {
        let started = Instant::now();
        let outcome = self.inner.reconcile(config, scope);
        let took = started.elapsed();
        // A pass that waited for the lock did nothing: nothing to report.
        if self.sinks.is_empty() || outcome == Outcome::Busy {
            return outcome;
        }
        // A converged pass leaves the host it read in the domain layer; after a failed one
        // (or without that reading) the host is read here.
        let kept = matches!(outcome, Outcome::Converged { .. })
            .then(|| self.inner.host_after_pass())
            .flatten();
        // Not after a failed pass: it may have abandoned a write still blocked in the kernel,
        // and reading that device's attributes would block this loop on its device lock. The
        // sinks get no host for such a pass (the next good pass reports it).
        let failed = matches!(outcome, Outcome::Failed(_));
        let read = match kept {
            Some(_) => None,
            None if failed => None,
            None => match (self.observe)() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!("after the pass, the host could not be read for reporting: {e}");
                    None
                }
            },
        };
        let host = kept.or(read.as_ref());
        let domains = self.inner.held_status();
        let report = PassReport {
            config,
            scope,
            outcome: &outcome,
            host,
            domains: &domains,
            took,
            ended: SystemTime::now(),
        };
        for sink in &mut self.sinks {
            sink(&report);
        }
        outcome
    }

    /// What the wrapped reconciler holds: the service status (`STATUS=`) must not lose it to
    /// the wrapper.
    fn holding(&self) -> String {
        self.inner.holding()
    }
}

/// The `--metrics-dir` sink: renders the metrics after every pass and replaces
/// `DIR/vfioctl.prom`. `accounts` resolves the config's names for the drift plan; `broker`
/// supplies the fd broker's grant and refusal counts.
pub fn metrics_sink(dir: PathBuf, accounts: fn(&Config) -> Accounts, broker: Handout) -> Sink {
    let mut stats = WatchStats::default();
    Box::new(move |r: &PassReport| {
        stats.passes += 1;
        if matches!(r.outcome, Outcome::Failed(_)) {
            stats.passes_failed += 1;
        }
        stats.last_pass_seconds = r.took.as_secs_f64();
        stats.last_pass_end = r
            .ended
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        stats.hotplug_claims_won = counters::HOTPLUG_CLAIMS_WON.get();
        stats.hotplug_claims_lost = counters::HOTPLUG_CLAIMS_LOST.get();
        {
            let offers = broker.lock();
            stats.broker_grants = offers.granted;
            stats.broker_refusals = offers.refused;
        }
        // Without a host reading the previous file stays: better stale than wrong.
        let Some(host) = r.host else { return };
        let ctx = Context {
            accounts: accounts(r.config),
            ..Context::default()
        };
        let pending = crate::plan::plan_with(r.config, host, &ctx);
        let text = metrics::render(&Sample {
            host,
            config: Some(r.config),
            pending: Some(&pending),
            domains: Some(r.domains),
            watch: Some(stats),
        });
        if let Err(e) = metrics::textfile::write(&dir, &text) {
            tracing::warn!("metrics: {e}");
        }
    })
}

/// The `--kubelet-dir` sink: hands the units the pass left to the device plugin. A pass whose
/// host could not be read changes nothing (the plugin keeps the last known units).
pub fn kubelet_sink(mut publisher: crate::kubelet::Publisher) -> Sink {
    Box::new(move |r: &PassReport| {
        if let Some(host) = r.host {
            publisher.pass(r.config, host);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reconciler that holds something and fails its passes.
    struct Holder;

    impl Reconciler for Holder {
        fn reconcile(&mut self, _: &Config, _: Scope) -> Outcome {
            Outcome::Failed("an unbind was abandoned".into())
        }
        fn holding(&self) -> String {
            "holding dma: group 5".into()
        }
    }

    impl HeldDomains for Holder {
        fn held_status(&self) -> Vec<DomainStatus> {
            Vec::new()
        }
        fn host_after_pass(&self) -> Option<&Snapshot> {
            None
        }
    }

    #[test]
    fn the_wrapper_keeps_what_the_reconciler_holds_for_the_service_status() {
        let reported = Reported::new(Holder, Box::new(|| Err("not read".into())));
        assert_eq!(reported.holding(), "holding dma: group 5");
    }

    #[test]
    fn after_a_failed_pass_the_host_is_not_read_and_sinks_get_none() {
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = std::rc::Rc::new(std::cell::Cell::new(None));
        let (r, s) = (reads.clone(), seen.clone());
        let mut reported = Reported::new(
            Holder,
            Box::new(move || {
                r.set(r.get() + 1);
                Err("would block on a stuck device".into())
            }),
        )
        .sink(Box::new(move |p: &PassReport| {
            s.set(Some(p.host.is_some()))
        }));
        let config =
            crate::config::parse_str("version = 1\n", std::path::Path::new("t.toml")).unwrap();
        let out = reported.reconcile(&config, Scope::All);
        assert!(matches!(out, Outcome::Failed(_)));
        assert_eq!(reads.get(), 0, "a failed pass must not read the host");
        assert_eq!(seen.get(), Some(false));
    }
}
