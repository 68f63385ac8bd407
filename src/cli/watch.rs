//! `vfioctl watch`: wires the watch loop (issue 8) to the command line: the config as it is
//! on disk, the live event sources, the apply reconciler on the real host, systemd
//! notifications.

use std::time::Duration;

use crate::apply;
use crate::broker::handout::Handout;
use crate::broker::server::Server;
use crate::domain::adopt::adopt_passed;
use crate::domain::fdstore::{take_passed, FdStore};
use crate::domain::linux::LinuxIommu;
use crate::domain::stored::StoreSync;
use crate::domain::Domains;
use crate::kernel::linux::{LinuxHost, Timeouts};
use crate::watch::domain_layer::{DomainLayer, OnPass};
use crate::watch::host_reconciler::ApplyReconciler;
use crate::watch::hotplug_claim::{self, ClaimConfig};
use crate::watch::live_source::{LiveSource, UeventSource};
use crate::watch::reload::load_from_disk;
use crate::watch::{ConfigState, SystemdNotifier, Timing, WatchLoop};

use super::{args, Exit};

pub fn run(global: &args::GlobalArgs, args: &args::WatchArgs) -> Exit {
    if global.host.is_some() {
        eprintln!(
            "vfioctl watch: --host reads a snapshot file, which never changes; watch needs the live host"
        );
        return Exit::Usage;
    }
    // First, before any thread exists: it clears the LISTEN_* variables.
    let passed = take_passed();
    let path = &args.config.config;
    let mut loader = load_from_disk;
    let config = match ConfigState::load(path, &mut loader) {
        Ok(c) => c,
        Err(rejected) => {
            // No last good config to fall back on at start: refuse, loudly.
            eprintln!("vfioctl watch: {rejected}");
            return Exit::Failed;
        }
    };
    // Before any thread exists: the signal mask must be inherited by the watcher thread.
    let source = match LiveSource::open(path, UeventSource::Kernel) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfioctl watch: {e}");
            return Exit::Failed;
        }
    };
    // A thread of its own, so a claim never waits behind a pass; after the source, whose
    // signal mask it inherits.
    let claims = ClaimConfig::new(config.current());
    if let Err(e) = hotplug_claim::spawn(global.roots(), global.run_dir.clone(), claims.clone()) {
        tracing::warn!("{e}; hot-plugged devices are taken over by the pass instead");
    }
    let host = LinuxHost::new(global.roots(), Timeouts::default());
    // The domain layer holds `[[domain]]`s around each binding pass (see watch::domain_layer).
    let roots = global.roots();
    let opts = apply::Options::new(global.state_dir.clone(), global.run_dir.clone());
    let timing = Timing::new(
        Duration::from_millis(args.debounce_ms),
        Duration::from_secs(args.resync),
    );
    // The fd broker (issue 10) serves duplicates of the held fds from its own thread; the
    // domain layer refreshes them after every pass.
    let handout = Handout::new();
    let broker = match Server::start(&global.run_dir, &global.proc_root, handout.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                "fd broker: cannot listen on {}: {e}; domains will not be handed to users",
                crate::broker::socket_path(&global.run_dir).display()
            );
            None
        }
    };
    // Domains a previous watch left in systemd's fd store (issue 10) are adopted, not
    // rebuilt; the store is used only under systemd with a store allowed (`$FDSTORE`, set by
    // systemd from FileDescriptorStoreMax=).
    let store = FdStore::from_env().filter(|_| {
        std::env::var("FDSTORE")
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 0)
    });
    let mut domains = Domains::new(LinuxIommu::new(global.roots()));
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
    let mut sync = StoreSync::adopted(domains.held());
    let offers = handout.clone();
    let store_for_pass = store.clone();
    let refresh: OnPass<LinuxIommu> = Box::new(move |config, domains, host| {
        offers.refresh(
            domains,
            host,
            config.clone(),
            crate::host::accounts::resolve(&crate::plan::ownership::account_names(config)),
        );
        if let Some(store) = &store_for_pass {
            if let Err(e) = sync.sync(domains.held(), store) {
                tracing::warn!("fd store: {e}; held domains may be rebuilt after a restart");
            }
        }
    });
    let mut layer = DomainLayer::new(
        ApplyReconciler::new(host, opts, |c| {
            crate::host::accounts::resolve(&crate::plan::ownership::account_names(c))
        })
        .with_claim_config(claims)
        .with_cdi_dir(global.cdi_dir.clone()),
        domains,
        Box::new(move || crate::host::observe(&roots, None).map_err(|e| e.to_string())),
    )
    .publish_to(global.run_dir.clone())
    .on_pass(refresh);
    if store.is_some() {
        layer = layer.hand_over_on_exit();
    }
    let mut watch = WatchLoop::new(
        source,
        layer,
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
    match result {
        Ok(()) => Exit::Done,
        Err(e) => {
            eprintln!("vfioctl watch: {e}");
            Exit::Failed
        }
    }
}
