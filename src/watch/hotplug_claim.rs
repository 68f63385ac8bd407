//! The hot-plug claimer: a thread of `watch` that does one thing, at once: when the kernel
//! announces a function the config names, write its `driver_override` before the kernel probes
//! it.
//!
//! On hot-plug the kernel sends the `add` uevent, assigns the function's resources, then probes
//! drivers (`pci_bus_add_device`), a few milliseconds later (~7 ms in the VM suite). A host
//! driver that is already loaded (e1000e for a second NIC) binds in that probe, and taking the
//! function back costs its whole probe and remove (~200 ms). An override written inside the
//! window makes the probe pick the configured driver instead (vfio-pci binds in the same probe,
//! or, when its module is not loaded yet, nothing binds and the pass binds it). Missing the
//! window costs nothing: the write waits for the probe's device lock and the scoped pass takes
//! the function over as before.
//!
//! It runs beside the loop, on its own kernel uevent socket, so a claim never waits behind a
//! pass. It blocks in `poll` with no timeout: no CPU when idle. It follows the config of the
//! latest pass ([`ClaimConfig::set`]); the decision is [`relevance::claim_on_add`], made from
//! the uevent alone, and the write is [`early_claim::claim`] (which records the override it
//! replaces, for the release).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::Config;
use crate::host::Roots;
use crate::pci::PciAddress;

use super::early_claim::{self, Claim};
use super::events::{uevent_ids, DeviceAction, DeviceEvent};
use super::relevance;
use super::WatchError;

/// The config the claimer decides by, shared with whoever runs the passes.
#[derive(Debug, Clone, Default)]
pub struct ClaimConfig(Arc<Mutex<Arc<Config>>>);

impl ClaimConfig {
    pub fn new(config: &Config) -> Self {
        ClaimConfig(Arc::new(Mutex::new(Arc::new(config.clone()))))
    }

    /// Makes `config` the one claims are decided by (a no-op when it is already).
    pub fn set(&self, config: &Config) {
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if **current != *config {
            *current = Arc::new(config.clone());
        }
    }

    pub fn get(&self) -> Arc<Config> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Claims the functions `events` announce that `config` names, through `claim(function,
/// driver)`. The claimer thread's whole decision, apart from the socket it reads.
pub fn claim_announced(
    config: &ClaimConfig,
    events: impl IntoIterator<Item = DeviceEvent>,
    mut claim: impl FnMut(PciAddress, &str),
) {
    for event in events {
        let config = config.get();
        if let Some(driver) = relevance::claim_on_add(&config, &event) {
            claim(event.address, driver);
        }
    }
}

/// Starts the claimer thread. Call it after the loop's signal mask is in place (threads inherit
/// it). The thread lives as long as the process; it stops on its own only if its socket fails.
pub fn spawn(roots: Roots, run_dir: PathBuf, config: ClaimConfig) -> Result<(), WatchError> {
    // Opened here, so a failure is reported to the caller; a MonitorSocket cannot move between
    // threads, so the thread opens its own and this one only proves it can be done.
    drop(open_monitor()?);
    // Created now, not on the first claim: that one must be quick.
    let _ = std::fs::create_dir_all(crate::apply::early_claims::record_dir(&run_dir));
    std::thread::Builder::new()
        .name("hotplug-claim".into())
        .spawn(move || {
            if let Err(e) = serve(&roots, &run_dir, &config) {
                tracing::warn!("hot-plug claimer stopped (passes still take devices over): {e}");
            }
        })
        .map_err(|e| WatchError::source("starting the hot-plug claimer", e))?;
    Ok(())
}

fn open_monitor() -> Result<udev::MonitorSocket, WatchError> {
    udev::MonitorBuilder::new_kernel()
        .and_then(|b| b.match_subsystem("pci"))
        .and_then(|b| b.listen())
        .map_err(|e| WatchError::source("opening the hot-plug claimer's uevent socket", e))
}

fn serve(roots: &Roots, run_dir: &std::path::Path, config: &ClaimConfig) -> Result<(), WatchError> {
    let monitor = open_monitor()?;
    loop {
        let mut fds = [PollFd::new(monitor.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(WatchError::source("poll", e.into())),
        }
        let adds = monitor.iter().filter_map(|e| added(&e));
        claim_announced(config, adds, |device, driver| {
            let started = std::time::Instant::now();
            match early_claim::claim(roots, run_dir, &device, driver) {
                Ok(Claim::Written { .. }) => tracing::info!(
                    %device,
                    driver,
                    us = started.elapsed().as_micros() as u64,
                    "claimed on add: driver_override written"
                ),
                Ok(Claim::AlreadySet) => {}
                Err(e) => {
                    tracing::warn!(%device, "claim on add failed (the pass takes it over): {e}")
                }
            }
        });
    }
}

/// An `add` uevent of a PCI function, reduced to what the decision needs.
fn added(e: &udev::Event) -> Option<DeviceEvent> {
    if e.event_type() != udev::EventType::Add {
        return None;
    }
    let prop = |k: &str| e.property_value(k).and_then(OsStr::to_str);
    Some(DeviceEvent {
        action: DeviceAction::Add,
        address: e.sysname().to_str()?.parse().ok()?,
        ids: uevent_ids(prop("PCI_ID"), prop("PCI_SUBSYS_ID"), prop("PCI_CLASS")),
        driver: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceSpec, Origin, Selector};

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn config_naming(address: &str) -> Config {
        Config {
            version: 1,
            devices: vec![DeviceSpec {
                name: "nic".into(),
                selector: Selector::Address(addr(address)),
                driver: "vfio-pci".into(),
                companions: vec![],
                force: false,
                origin: Origin::default(),
            }],
            ..Config::default()
        }
    }

    fn add(a: &str) -> DeviceEvent {
        DeviceEvent {
            action: DeviceAction::Add,
            address: addr(a),
            ids: None,
            driver: None,
        }
    }

    #[test]
    fn claims_only_what_the_current_config_names() {
        let shared = ClaimConfig::new(&config_naming("0000:03:00.0"));
        let mut claimed = Vec::new();
        claim_announced(
            &shared,
            [add("0000:03:00.0"), add("0000:04:00.0")],
            |a, d| claimed.push((a, d.to_string())),
        );
        assert_eq!(
            claimed,
            vec![(addr("0000:03:00.0"), "vfio-pci".to_string())]
        );

        // A pass with an edited config moves the claimer along with it.
        shared.set(&config_naming("0000:04:00.0"));
        claimed.clear();
        claim_announced(
            &shared,
            [add("0000:03:00.0"), add("0000:04:00.0")],
            |a, d| claimed.push((a, d.to_string())),
        );
        assert_eq!(
            claimed,
            vec![(addr("0000:04:00.0"), "vfio-pci".to_string())]
        );
    }

    #[test]
    fn a_bind_is_never_claimed() {
        let shared = ClaimConfig::new(&config_naming("0000:03:00.0"));
        let mut bind = add("0000:03:00.0");
        bind.action = DeviceAction::Bind;
        bind.driver = Some("e1000e".into());
        let mut claimed = 0;
        claim_announced(&shared, [bind], |_, _| claimed += 1);
        assert_eq!(claimed, 0);
    }
}
