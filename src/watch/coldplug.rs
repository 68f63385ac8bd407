//! At boot `watch` starts while udevd may still be working through the coldplug events, and the
//! udev rule claims configured functions during those events (`udev-claim`, then a scoped
//! `reconcile`). Before its first pass `watch` waits until udevd has handled every function the
//! config names, so the pass never runs half-way through a claim (`systemd-udev-settle`, which
//! waits for every device of the machine, is not needed).
//!
//! udevd's own marks, under `/run/udev`: `control` (its socket) exists while it runs, `queue`
//! while events are pending, and `data/+pci:ADDRESS` once it has handled that function (the
//! rule's `VFIOCTL_CLAIM` property lands there). A function counts as handled when its entry
//! exists, or when udevd has nothing queued at all.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::pci::PciAddress;

use super::hotplug_claim::parse_added;
use super::relevance;

/// The functions under `sysfs` that `config` names and udevd (state under `udev_run`) has not
/// handled yet; empty when udevd is not running or has nothing queued.
pub fn unhandled(sysfs: &Path, udev_run: &Path, config: &Config) -> Vec<PciAddress> {
    if !udev_run.join("control").exists() || !udev_run.join("queue").exists() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir(sysfs.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut pending = Vec::new();
    for entry in dir.flatten() {
        let Ok(uevent) = std::fs::read(entry.path().join("uevent")) else {
            continue;
        };
        // The function's uevent file holds the same KEY=VALUE lines its `add` carried.
        let mut message = b"add@/sysfs\0SUBSYSTEM=pci\0".to_vec();
        message.extend(uevent.iter().map(|b| if *b == b'\n' { 0 } else { *b }));
        let Some(event) = parse_added(&message) else {
            continue;
        };
        if relevance::wanted(config, &event).is_none() {
            continue;
        }
        let handled = udev_run
            .join("data")
            .join(format!("+pci:{}", event.address))
            .exists();
        if !handled {
            pending.push(event.address);
        }
    }
    pending.sort();
    pending
}

/// Waits up to `limit` until [`unhandled`] is empty; returns what is still unhandled then.
pub fn wait_for_udev(
    sysfs: &Path,
    udev_run: &Path,
    config: &Config,
    limit: Duration,
) -> Vec<PciAddress> {
    let start = Instant::now();
    let mut said = false;
    loop {
        let pending = unhandled(sysfs, udev_run, config);
        if pending.is_empty() || start.elapsed() >= limit {
            if said && pending.is_empty() {
                tracing::info!(waited = ?start.elapsed(), "udevd has handled the configured functions");
            }
            return pending;
        }
        if !said {
            tracing::info!(
                "waiting for udevd to handle {} configured function(s) before the first pass: {}",
                pending.len(),
                pending
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceSpec, Origin, Selector};

    fn config() -> Config {
        Config {
            version: 1,
            devices: vec![DeviceSpec {
                name: "nvme".into(),
                selector: Selector::Address("0000:01:00.0".parse().unwrap()),
                driver: "vfio-pci".into(),
                companions: vec![],
                force: false,
                origin: Origin::default(),
            }],
            ..Config::default()
        }
    }

    #[test]
    fn a_configured_function_counts_as_handled_once_udevd_has_its_entry_or_is_idle() {
        let root = tempfile::tempdir().unwrap();
        let sysfs = root.path().join("sys");
        let udev = root.path().join("run/udev");
        for (addr, id) in [("0000:01:00.0", "1B36:0010"), ("0000:00:01.0", "8086:10D3")] {
            let dev = sysfs.join("bus/pci/devices").join(addr);
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(
                dev.join("uevent"),
                format!("DRIVER=nvme\nPCI_CLASS=10802\nPCI_ID={id}\nPCI_SLOT_NAME={addr}\n"),
            )
            .unwrap();
        }
        let cfg = config();
        // udevd not running: nothing to wait for.
        assert!(unhandled(&sysfs, &udev, &cfg).is_empty());
        std::fs::create_dir_all(udev.join("data")).unwrap();
        std::fs::write(udev.join("control"), "").unwrap();
        // Running, idle: nothing either.
        assert!(unhandled(&sysfs, &udev, &cfg).is_empty());
        // Busy with coldplug: the configured function (only it) is waited for...
        std::fs::write(udev.join("queue"), "").unwrap();
        let nvme: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(unhandled(&sysfs, &udev, &cfg), vec![nvme]);
        let left = wait_for_udev(&sysfs, &udev, &cfg, Duration::from_millis(120));
        assert_eq!(left, vec![nvme], "the wait is bounded");
        // ... until udevd has written its entry.
        std::fs::write(
            udev.join("data/+pci:0000:01:00.0"),
            "E:VFIOCTL_CLAIM=vfio-pci\n",
        )
        .unwrap();
        assert!(wait_for_udev(&sysfs, &udev, &cfg, Duration::from_secs(5)).is_empty());
    }
}
