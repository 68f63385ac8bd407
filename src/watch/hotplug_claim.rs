//! The hot-plug claimer: a thread of `watch` that does one thing, at once: when the kernel
//! announces a PCI function, make its early claim ([`crate::apply::early_claim`]: the config's
//! driver into its `driver_override`, if the config names it and it may be taken) before the
//! kernel probes it. This module owns only the uevent socket and the thread.
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
//! It runs beside the loop, at a raised priority, on a kernel uevent socket of its own
//! (`NETLINK_KOBJECT_UEVENT`, read and parsed here: a few hundred bytes of `KEY=VALUE` text,
//! no library between the kernel and the write), so a claim never waits behind a pass. It
//! blocks in `recv` with no timeout: no CPU when idle. It follows the config of the latest pass
//! ([`ClaimConfig::set`]). The loop's own udev monitor still sees the same `add` and runs the
//! scoped pass that binds the function (if the kernel did not already) and owns its node.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::apply::early_claim::{self, EarlyClaim, EarlyClaimError};
use crate::config::Config;
use crate::host::Roots;
use crate::kernel::linux::{LinuxHost, Timeouts};
use crate::kernel::Host;
use crate::pci::PciAddress;

use super::events::{uevent_ids, DeviceAction, DeviceEvent};
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

/// Makes the early claim of every function `events` announce (`add` only), by the config as
/// it is now, and logs each outcome. What the thread does with each uevent, apart from
/// reading it; returns the outcomes for tests.
pub fn claim_announced(
    host: &dyn Host,
    run_dir: &Path,
    config: &ClaimConfig,
    events: impl IntoIterator<Item = DeviceEvent>,
) -> Vec<(PciAddress, Result<EarlyClaim, EarlyClaimError>)> {
    let mut out = Vec::new();
    for event in events {
        if event.action != DeviceAction::Add {
            continue;
        }
        let received = Instant::now();
        let config = config.get();
        let (r, times) = early_claim::early_claim_timed(
            host,
            &config,
            run_dir,
            event.address,
            event.ids.as_ref(),
        );
        log_outcome(event.address, &r, received, times);
        out.push((event.address, r));
    }
    out
}

fn log_outcome(
    device: PciAddress,
    r: &Result<EarlyClaim, EarlyClaimError>,
    received: Instant,
    times: early_claim::ClaimTimes,
) {
    match r {
        Ok(EarlyClaim::Written { driver, .. }) => tracing::info!(
            %device,
            driver = driver.as_str(),
            claim_us = received.elapsed().as_micros() as u64,
            decide_us = times.decide_us,
            write_us = times.write_us,
            "claimed on add: driver_override written"
        ),
        // Logged by the early claim itself, with its reasons.
        Ok(EarlyClaim::Refused { .. }) => {}
        Ok(EarlyClaim::NotWanted | EarlyClaim::AlreadySet { .. }) => {}
        Err(e) => tracing::warn!(%device, "claim on add failed (the pass takes it over): {e}"),
    }
}

/// Starts the claimer thread. Call it after the loop's signal mask is in place (threads inherit
/// it). The thread lives as long as the process; it stops on its own only if its socket fails.
pub fn spawn(roots: Roots, run_dir: PathBuf, config: ClaimConfig) -> Result<(), WatchError> {
    let socket = open_socket()?;
    // The records' directory and the staged record are made now, not on the first claim:
    // that one must be quick.
    if let Err(e) = early_claim::records::stage(&run_dir) {
        tracing::warn!("the hot-plug claimer's staged record could not be written: {e}");
    }
    let host = LinuxHost::new(roots, Timeouts::default());
    std::thread::Builder::new()
        .name("hotplug-claim".into())
        .spawn(move || {
            raise_priority();
            if let Err(e) = serve(&socket, &host, &run_dir, &config) {
                tracing::warn!("hot-plug claimer stopped (passes still take devices over): {e}");
            }
        })
        .map_err(|e| WatchError::source("starting the hot-plug claimer", e))?;
    Ok(())
}

/// A socket on the kernel's uevent multicast group (1), with a large receive buffer so a burst
/// of VF creations is not dropped.
fn open_socket() -> Result<OwnedFd, WatchError> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    let err = |what: &'static str| move |e: nix::errno::Errno| WatchError::source(what, e.into());
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .map_err(err("opening the hot-plug claimer's uevent socket"))?;
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))
        .map_err(err("binding the hot-plug claimer's uevent socket"))?;
    Ok(fd)
}

/// The claimer does microseconds of work per event and must get a CPU at once: nice -10 for
/// this thread only (best effort; without CAP_SYS_NICE it keeps the default).
fn raise_priority() {
    use nix::libc;
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -10) != 0 };
    if failed {
        tracing::debug!("hot-plug claimer keeps the default priority");
    }
}

fn serve(
    socket: &OwnedFd,
    host: &dyn Host,
    run_dir: &Path,
    config: &ClaimConfig,
) -> Result<(), WatchError> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match nix::sys::socket::recvfrom::<nix::sys::socket::NetlinkAddr>(
            socket.as_raw_fd(),
            &mut buf,
        ) {
            // Only the kernel (port 0) speaks for devices; anything else on the group is
            // ignored, as udev does.
            Ok((n, Some(from))) if from.pid() == 0 => n,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // The kernel dropped messages (buffer full): later ones still count.
            Err(nix::errno::Errno::ENOBUFS) => continue,
            Err(e) => return Err(WatchError::source("reading kernel uevents", e.into())),
        };
        if let Some(event) = parse_added(&buf[..n]) {
            for (device, outcome) in claim_announced(host, run_dir, config, [event]) {
                count_claim(host, device, &outcome);
            }
        }
    }
}

/// Counts a claim for the metrics (after it is made and logged, outside its timing): won when
/// the override names the wanted driver and no other driver is bound (the host driver did not
/// get there first), lost when the claim failed or a host driver was first. Functions the
/// config does not name, and refusals for safety, are not races and are not counted.
fn count_claim(host: &dyn Host, device: PciAddress, outcome: &Result<EarlyClaim, EarlyClaimError>) {
    use crate::metrics::counters::{claim_won, HOTPLUG_CLAIMS_LOST, HOTPLUG_CLAIMS_WON};
    let (written, driver) = match outcome {
        Ok(EarlyClaim::Written { driver, .. } | EarlyClaim::AlreadySet { driver }) => {
            (true, driver.as_str())
        }
        Ok(EarlyClaim::NotWanted | EarlyClaim::Refused { .. }) => return,
        Err(_) => (false, ""),
    };
    let bound = host.device_state(device).ok().and_then(|s| s.driver);
    if claim_won(written, bound.as_deref(), driver) {
        HOTPLUG_CLAIMS_WON.inc();
    } else {
        HOTPLUG_CLAIMS_LOST.inc();
    }
}

/// A kernel uevent (`add@/devices/...` then NUL-separated `KEY=VALUE` pairs) reduced to what
/// the decision needs, when it is the `add` of a PCI function; `None` for anything else
/// (other actions and subsystems, udevd's own re-broadcasts, malformed messages).
pub fn parse_added(message: &[u8]) -> Option<DeviceEvent> {
    let mut parts = message.split(|b| *b == 0);
    // The header is the first field, whatever the rest holds (found by fuzzing: skipping a
    // header that is not UTF-8 made the next field the header).
    let header = std::str::from_utf8(parts.next()?).ok()?;
    let fields = parts.filter_map(|f| std::str::from_utf8(f).ok());
    if !header.starts_with("add@") {
        return None;
    }
    let (mut subsystem, mut slot, mut pci_id, mut subsys_id, mut class) =
        (None, None, None, None, None);
    for f in fields {
        match f.split_once('=') {
            Some(("SUBSYSTEM", v)) => subsystem = Some(v),
            Some(("PCI_SLOT_NAME", v)) => slot = Some(v),
            Some(("PCI_ID", v)) => pci_id = Some(v),
            Some(("PCI_SUBSYS_ID", v)) => subsys_id = Some(v),
            Some(("PCI_CLASS", v)) => class = Some(v),
            _ => {}
        }
    }
    if subsystem != Some("pci") {
        return None;
    }
    Some(DeviceEvent {
        action: DeviceAction::Add,
        address: slot?.parse().ok()?,
        ids: uevent_ids(pci_id, subsys_id, class),
        driver: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceSpec, Origin, Selector};
    use crate::kernel::simulated::{fixtures, Call, SimKernel};

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

    /// Two fresh driverless NICs at 03:00.0 and 04:00.0.
    fn host() -> SimKernel {
        SimKernel::from_snapshot(&fixtures::snapshot(
            vec![
                fixtures::device("0000:03:00.0", 0x8086, 0x10d3, 0x020000, None, 3),
                fixtures::device("0000:04:00.0", 0x8086, 0x10d3, 0x020000, None, 4),
            ],
            &[],
        ))
    }

    /// What the claimer wrote, on `host`, for the adds of 03:00.0 and 04:00.0.
    fn claims_of_two_adds(host: &SimKernel, run: &Path, shared: &ClaimConfig) -> Vec<Call> {
        let before = host.call_count();
        for (_, r) in claim_announced(
            host,
            run,
            shared,
            [add("0000:03:00.0"), add("0000:04:00.0")],
        ) {
            r.unwrap();
        }
        host.calls()[before..].to_vec()
    }

    #[test]
    fn claims_only_what_the_current_config_names() {
        let run = tempfile::tempdir().unwrap();
        let host = host();
        let shared = ClaimConfig::new(&config_naming("0000:03:00.0"));
        assert_eq!(
            claims_of_two_adds(&host, run.path(), &shared),
            vec![Call::SetOverride(
                addr("0000:03:00.0"),
                Some("vfio-pci".into())
            )]
        );
        // A pass with an edited config moves the claimer along with it.
        shared.set(&config_naming("0000:04:00.0"));
        assert_eq!(
            claims_of_two_adds(&host, run.path(), &shared),
            vec![Call::SetOverride(
                addr("0000:04:00.0"),
                Some("vfio-pci".into())
            )]
        );
    }

    #[test]
    fn a_bind_is_never_claimed() {
        let run = tempfile::tempdir().unwrap();
        let host = host();
        let shared = ClaimConfig::new(&config_naming("0000:03:00.0"));
        let mut bind = add("0000:03:00.0");
        bind.action = DeviceAction::Bind;
        bind.driver = Some("e1000e".into());
        assert!(claim_announced(&host, run.path(), &shared, [bind]).is_empty());
        assert!(host.calls().is_empty());
    }

    #[test]
    fn a_kernel_add_of_a_pci_function_is_parsed() {
        let msg = b"add@/devices/pci0000:00/0000:00:06.0/0000:03:00.0\0ACTION=add\0\
DEVPATH=/devices/pci0000:00/0000:00:06.0/0000:03:00.0\0SUBSYSTEM=pci\0PCI_CLASS=20000\0\
PCI_ID=8086:10D3\0PCI_SUBSYS_ID=8086:0000\0PCI_SLOT_NAME=0000:03:00.0\0\
MODALIAS=pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00\0SEQNUM=2291\0";
        let e = parse_added(msg).unwrap();
        assert_eq!(e.address, addr("0000:03:00.0"));
        assert_eq!(e.action, DeviceAction::Add);
        let ids = e.ids.unwrap();
        assert_eq!(ids.vendor, crate::pci::PciId(0x8086));
        assert_eq!(ids.class, Some(crate::pci::PciClass(0x020000)));
    }

    #[test]
    fn other_uevents_are_not_adds_of_pci_functions() {
        for msg in [
            &b"bind@/devices/pci0000:00/0000:03:00.0\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:03:00.0\0"
                [..],
            b"add@/devices/virtual/net/tap0\0SUBSYSTEM=net\0INTERFACE=tap0\0",
            b"add@/devices/pci0000:00/0000:03:00.0\0SUBSYSTEM=pci\0",
            // udevd's re-broadcast format starts with "libudev", never "add@".
            b"libudev\0\xfe\xed\xca\xfe",
            b"",
            // The header is the first field: one that is not UTF-8 does not promote the next
            // (found by fuzz/fuzz_targets/uevent.rs).
            b"Z\xff\xff\0add@/:02:00.0\0SUBSYSTEM=pci\0PCI_SLOT_NAME=0000:03:00.0\0",
        ] {
            assert_eq!(parse_added(msg), None, "{:?}", String::from_utf8_lossy(msg));
        }
    }
}
