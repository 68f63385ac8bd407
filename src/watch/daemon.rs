//! The production `watch`: the live event sources, the hot-plug claimer, the apply reconciler
//! on the real host, the domain layer with the fd broker and systemd's fd store, wired into one
//! [`WatchLoop`] and run until SIGTERM. The command line only resolves its options
//! ([`Daemon`]) and reports how it ended.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apply;
use crate::broker::handout::Handout;
use crate::broker::server::Server;
use crate::config::{Access, Config};
use crate::domain::adopt::adopt_passed;
use crate::domain::fdstore::{take_passed, FdStore};
use crate::domain::linux::LinuxIommu;
use crate::domain::stored::StoreSync;
use crate::domain::Domains;
use crate::host::Roots;
use crate::kernel::linux::{LinuxHost, Timeouts};
use crate::plan::Accounts;
use crate::watch::domain_layer::{DomainLayer, OnPass};
use crate::watch::host_reconciler::ApplyReconciler;
use crate::watch::hotplug_claim::{self, ClaimConfig};
use crate::watch::live_source::{LiveSource, UeventSource};
use crate::watch::pass_report::{self, Reported};
use crate::watch::reload::load_from_disk_with;
use crate::watch::{ConfigState, SystemdNotifier, Timing, WatchError, WatchLoop};

/// What a `watch` daemon needs, resolved by the command line.
pub struct Daemon {
    pub roots: Roots,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Where each pass refreshes the CDI spec (`vfioctl.json`) of what the config hands out.
    pub cdi_dir: PathBuf,
    /// The config file, re-read on edits and SIGHUP.
    pub config_path: PathBuf,
    /// The config as first loaded from `config_path`.
    pub config: Config,
    /// How a reload treats a config others can change.
    pub access: Access,
    pub debounce: Duration,
    /// Periodic full resync (zero disables).
    pub resync: Duration,
    /// Resolves the user and group names a config mentions.
    pub accounts: fn(&Config) -> Accounts,
    /// Write metrics here after each pass (`--metrics-dir`).
    pub metrics_dir: Option<PathBuf>,
    /// Serve the kubelet device plugin here (`--kubelet-dir`).
    pub kubelet_dir: Option<PathBuf>,
}

/// Runs `watch` until asked to stop. Call it before any thread exists: it takes the fds
/// systemd passed (clearing `LISTEN_*`) and blocks the signals its signalfd reads, a mask the
/// threads it starts inherit.
pub fn run(d: Daemon) -> Result<(), WatchError> {
    let passed = take_passed();
    let access = d.access;
    let loader = move |p: &Path| load_from_disk_with(p, access);
    let config = ConfigState::new(&d.config_path, d.config);
    let source = LiveSource::open(&d.config_path, UeventSource::Kernel)?;
    // A thread of its own, so a claim never waits behind a pass; after the source, whose
    // signal mask it inherits.
    let claims = ClaimConfig::new(config.current());
    if let Err(e) = hotplug_claim::spawn(d.roots.clone(), d.run_dir.clone(), claims.clone()) {
        tracing::warn!("{e}; hot-plugged devices are taken over by the pass instead");
    }
    let host = LinuxHost::new(d.roots.clone(), Timeouts::default());
    let opts = apply::Options::new(d.state_dir.clone(), d.run_dir.clone());
    let timing = Timing::new(d.debounce, d.resync);
    // The fd broker (issue 10) serves duplicates of the held fds from its own thread; the
    // domain layer refreshes them after every pass.
    let handout = Handout::new();
    // Fresh iommufds (`vfioctl iommufd open`), through a seam instance of the broker's own.
    handout.serve_iommufd(LinuxIommu::new(d.roots.clone()));
    let broker = match Server::start(&d.run_dir, &d.roots.proc, handout.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "fd broker: cannot listen on {}: {e}; domains will not be handed to users",
                crate::broker::socket_path(&d.run_dir).display()
            );
            None
        }
    };
    let store = fd_store();
    let mut domains = Domains::new(LinuxIommu::new(d.roots.clone()));
    if !passed.is_empty() {
        let wanted: Vec<String> = config
            .current()
            .domains
            .iter()
            .map(|d| d.name.clone())
            .collect();
        let adopted = adopt_passed(domains.iommu_mut(), passed, &wanted, store.as_ref());
        for name in &adopted.foreign {
            tracing::warn!("fd store: passed fd \"{name}\" is not a vfioctl domain fd; closed");
        }
        for n in &adopted.report.notes {
            tracing::info!("{n}");
        }
        for e in &adopted.report.errors {
            tracing::warn!("{e}");
        }
        domains.adopt(adopted.domains);
    }
    let refresh = refresh_after_pass(
        handout.clone(),
        store.clone(),
        StoreSync::adopted(domains.held()),
        d.accounts,
    );
    let roots = d.roots.clone();
    let mut layer = DomainLayer::new(
        ApplyReconciler::new(host, opts, d.accounts)
            .with_claim_config(claims)
            .with_cdi_dir(d.cdi_dir.clone()),
        domains,
        Box::new(move || crate::host::observe(&roots, None).map_err(|e| e.to_string())),
    )
    .publish_to(d.run_dir.clone())
    .on_pass(refresh);
    if store.is_some() {
        layer = layer.hand_over_on_exit();
    }
    // At boot: let udevd finish the rule's claims of configured functions first (see
    // watch::coldplug); events meanwhile wait in the uevent socket.
    let left = super::coldplug::wait_for_udev(
        &d.roots.sysfs,
        Path::new("/run/udev"),
        config.current(),
        Duration::from_secs(30),
    );
    if !left.is_empty() {
        tracing::warn!(
            "udevd has not handled {} configured function(s) after 30 s; going ahead",
            left.len()
        );
    }
    // What each pass tells the outside (issue 18): the metrics textfile, the kubelet plugin.
    let observe_roots = d.roots.clone();
    let mut reported = Reported::new(
        layer,
        Box::new(move || crate::host::observe(&observe_roots, None).map_err(|e| e.to_string())),
    );
    if let Some(dir) = &d.metrics_dir {
        reported = reported.sink(pass_report::metrics_sink(
            dir.clone(),
            d.accounts,
            handout.clone(),
        ));
    }
    let _plugin = match &d.kubelet_dir {
        None => None,
        Some(dir) => {
            let opts = crate::kubelet::Options::new(dir.clone(), d.roots.dev.clone());
            let (plugin, publisher) = crate::kubelet::Plugin::start(opts)
                .map_err(|e| WatchError::source("starting the kubelet plugin", e))?;
            reported = reported.sink(pass_report::kubelet_sink(publisher));
            Some(plugin)
        }
    };
    let mut watch = WatchLoop::new(
        source,
        reported,
        loader,
        SystemdNotifier::new(),
        config,
        timing,
    );
    let result = watch.run();
    // Stop handing out before the domains are released.
    drop(broker);
    handout.clear();
    drop(watch);
    result
}

/// systemd's fd store, where domains a previous `watch` left are adopted from, not rebuilt:
/// only under systemd with a store allowed (`$FDSTORE`, set from FileDescriptorStoreMax=).
fn fd_store() -> Option<FdStore> {
    FdStore::from_env().filter(|_| {
        std::env::var("FDSTORE")
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 0)
    })
}

/// After every pass: offer the held domains to the broker (with the config's accounts) and
/// keep systemd's fd store in step with them.
fn refresh_after_pass(
    offers: Handout,
    store: Option<FdStore>,
    mut sync: StoreSync,
    accounts: fn(&Config) -> Accounts,
) -> OnPass<LinuxIommu> {
    Box::new(move |config, domains, host| {
        offers.refresh(domains, host, config.clone(), accounts(config));
        if let Some(store) = &store {
            if let Err(e) = sync.sync(domains.held(), store) {
                tracing::warn!("fd store: {e}; held domains may be rebuilt after a restart");
            }
        }
    })
}
