//! The domain layer of `vfioctl watch`: a [`Reconciler`] that wraps the binding reconciler and
//! holds the config's domains around it, in the order the lifecycle needs: groups and domains
//! that are going away are released *before* the binding pass (so no device goes back to a host
//! driver while its group is held), and domains are built and converged *after* it (once the
//! members are on vfio-pci and `/dev/vfio/N` exists).

use super::run_loop::{Outcome, Reconciler, Scope};
use crate::config::model::Config;
use crate::host::snapshot::Snapshot;

use std::path::PathBuf;

use crate::domain::iommu::Iommu;
use crate::domain::published;
use crate::domain::{Domains, Report};

/// Reads the host after the binding pass.
pub type Observe = Box<dyn FnMut() -> Result<Snapshot, String>>;

/// Runs after every change to the held domains (the fd broker refreshes its offers here),
/// with the config and the last host seen.
pub type OnPass<I> = Box<dyn FnMut(&Config, &Domains<I>, Option<&Snapshot>)>;

/// A binding reconciler with the domain layer around it.
pub struct DomainLayer<R, I: Iommu> {
    inner: R,
    domains: Domains<I>,
    observe: Observe,
    last_host: Option<Snapshot>,
    /// Where to publish the held domains after each pass (`RUN_DIR`), if anywhere.
    publish: Option<PathBuf>,
    passes: u64,
    on_pass: Option<OnPass<I>>,
    /// Leave the domains to systemd's fd store on exit instead of tearing them down.
    hand_over: bool,
}

impl<R, I: Iommu> DomainLayer<R, I> {
    pub fn new(inner: R, domains: Domains<I>, observe: Observe) -> Self {
        DomainLayer {
            inner,
            domains,
            observe,
            last_host: None,
            publish: None,
            passes: 0,
            on_pass: None,
            hand_over: false,
        }
    }

    /// Publishes the held domains under `run_dir` after every pass (see [`published`]).
    pub fn publish_to(mut self, run_dir: PathBuf) -> Self {
        self.publish = Some(run_dir);
        self
    }

    /// Calls `f` after every pass and after groups are released before a binding pass.
    pub fn on_pass(mut self, f: OnPass<I>) -> Self {
        self.on_pass = Some(f);
        self
    }

    /// On exit, close this process's fds without detaching anything: systemd's fd store
    /// holds duplicates, so the domains live on for the next `watch` to adopt (and are
    /// released by systemd when the unit stops for good).
    pub fn hand_over_on_exit(mut self) -> Self {
        self.hand_over = true;
        self
    }

    fn notify(&mut self, config: &Config) {
        if let Some(f) = &mut self.on_pass {
            f(config, &self.domains, self.last_host.as_ref());
        }
    }

    fn publish(&mut self) {
        self.passes += 1;
        let Some(dir) = &self.publish else { return };
        let p = published::Published {
            pid: std::process::id(),
            pass: self.passes,
            domains: self.domains.status(),
        };
        if let Err(e) = published::write(dir, &p) {
            tracing::warn!("cannot publish the held domains in {}: {e}", dir.display());
        }
    }

    /// The held domains (status, and the fd broker).
    pub fn domains(&self) -> &Domains<I> {
        &self.domains
    }

    /// The host as read after the latest converged pass (metrics and the kubelet plugin
    /// reuse it rather than scan again).
    pub fn last_host(&self) -> Option<&Snapshot> {
        self.last_host.as_ref()
    }
}

fn log(report: &Report) {
    for e in &report.events {
        tracing::info!("{e}");
    }
    for n in &report.notes {
        tracing::info!("{n}");
    }
    for e in &report.errors {
        tracing::warn!("{e}");
    }
}

impl<R: Reconciler, I: Iommu> Reconciler for DomainLayer<R, I> {
    fn reconcile(&mut self, config: &Config, scope: Scope) -> Outcome {
        let before = match &self.last_host {
            Some(host) => self.domains.release_departed(config, host),
            None => self.domains.release_removed(config),
        };
        log(&before);
        if !before.events.is_empty() {
            // Before the binding pass: the broker must let go of released groups too.
            self.notify(config);
        }
        let outcome = self.inner.reconcile(config, scope);
        if !before.events.is_empty() {
            self.publish();
        }
        let (changed, waiting, problems) = match outcome {
            Outcome::Converged {
                changed,
                waiting,
                problems,
            } => (changed, waiting, problems),
            other => return other,
        };
        let host = match (self.observe)() {
            Ok(h) => h,
            Err(e) => return Outcome::Failed(format!("domains: cannot read the host: {e}")),
        };
        let report = self.domains.reconcile(config, &host);
        log(&report);
        self.last_host = Some(host);
        self.publish();
        self.notify(config);
        Outcome::Converged {
            changed: changed + before.events.len() + report.events.len(),
            waiting,
            problems: problems + report.errors.len(),
        }
    }

    fn holding(&self) -> String {
        let held: Vec<String> = self
            .domains
            .held()
            .values()
            .filter(|d| !d.containers.is_empty())
            .map(|d| {
                let mut groups: Vec<String> = d
                    .containers
                    .iter()
                    .flat_map(|c| c.group_ids())
                    .map(|g| g.to_string())
                    .collect();
                groups.sort();
                let bytes: u64 = d.windows.iter().map(|w| w.window.size).sum();
                format!(
                    "{}: group{} {}, {} window{} {} KiB",
                    d.name,
                    if groups.len() == 1 { "" } else { "s" },
                    groups.join(" "),
                    d.windows.len(),
                    if d.windows.len() == 1 { "" } else { "s" },
                    bytes / 1024
                )
            })
            .collect();
        if held.is_empty() {
            String::new()
        } else {
            format!("holding {}", held.join("; "))
        }
    }
}

impl<R, I: Iommu> Drop for DomainLayer<R, I> {
    fn drop(&mut self) {
        if !self.hand_over {
            log(&self.domains.release_all());
        }
        if let Some(dir) = &self.publish {
            published::remove(dir);
        }
    }
}
