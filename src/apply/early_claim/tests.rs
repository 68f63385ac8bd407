//! The early claim on the simulated kernel (decisions, safety, faults) and on a fake sysfs
//! tree through the real host's seam.

use std::fs;
use std::path::Path;

use super::records::{record_path, Records};
use super::*;
use crate::config::{DeviceSpec, Origin, Selector};
use crate::host::{BlockDevice, NetInterface, PciDevice, Roots};
use crate::kernel::linux::{LinuxHost, Timeouts};
use crate::kernel::simulated::{fixtures, Call, Fault, SimKernel};
use crate::pci::{PciClass, PciId};

const NIC: &str = "0000:03:00.0";
const NVME: &str = "0000:01:00.0";
const GPU: &str = "0000:00:02.0";

fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn ids_entry(name: &str, vendor: u16, device: u16, force: bool) -> DeviceSpec {
    DeviceSpec {
        name: name.into(),
        selector: Selector::Ids {
            vendor: PciId(vendor),
            device: PciId(device),
            subsystem_vendor: None,
            subsystem_device: None,
            class: None,
        },
        driver: "vfio-pci".into(),
        companions: vec![],
        force,
        origin: Origin::default(),
    }
}

/// Ids selectors for the NIC, every NVMe of its kind, and the GPU.
fn config(force: bool) -> Config {
    Config {
        version: 1,
        devices: vec![
            ids_entry("nic", 0x8086, 0x10d3, false),
            ids_entry("nvme", 0x1b36, 0x0010, force),
            ids_entry("gpu", 0x1234, 0x1111, force),
        ],
        ..Config::default()
    }
}

fn host_with(nvme: impl FnOnce(&mut PciDevice), gpu: impl FnOnce(&mut PciDevice)) -> SimKernel {
    let mut n = fixtures::device(NVME, 0x1b36, 0x0010, 0x010802, None, 8);
    nvme(&mut n);
    let mut g = fixtures::device(GPU, 0x1234, 0x1111, 0x030000, None, 2);
    gpu(&mut g);
    SimKernel::from_snapshot(&fixtures::snapshot(
        vec![
            fixtures::device(NIC, 0x8086, 0x10d3, 0x020000, None, 3),
            n,
            g,
            fixtures::device("0000:05:00.0", 0x8086, 0x100e, 0x020000, Some("e1000"), 5),
        ],
        &[],
    ))
}

fn host() -> SimKernel {
    host_with(|_| {}, |_| {})
}

fn claim(host: &SimKernel, run: &Path, config: &Config, dev: &str) -> EarlyClaim {
    early_claim(host, config, run, a(dev), None).unwrap()
}

fn written(previous: Option<&str>) -> EarlyClaim {
    EarlyClaim::Written {
        driver: "vfio-pci".into(),
        previous: previous.map(str::to_string),
        forced: vec![],
    }
}

fn records(run: &Path) -> Vec<(PciAddress, Option<String>)> {
    Records::load(run).unwrap().records.into_iter().collect()
}

#[test]
fn a_named_function_is_claimed_through_the_seam_and_recorded_once() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    let c = config(false);
    assert_eq!(claim(&host, run.path(), &c, NIC), written(None));
    assert_eq!(
        host.calls(),
        vec![Call::SetOverride(a(NIC), Some("vfio-pci".into()))]
    );
    assert_eq!(records(run.path()), vec![(a(NIC), None)]);
    // Again: already set, nothing written.
    assert_eq!(
        claim(&host, run.path(), &c, NIC),
        EarlyClaim::AlreadySet {
            driver: "vfio-pci".into()
        }
    );
    assert_eq!(host.call_count(), 1);
    // Not named: nothing read or written.
    assert_eq!(
        claim(&host, run.path(), &c, "0000:05:00.0"),
        EarlyClaim::NotWanted
    );
    assert_eq!(host.call_count(), 1);
}

#[test]
fn ids_from_the_event_decide_without_a_read() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    // Reads of the function fail: a function the event's ids say is not named is not read.
    host.fail_reads(a(NIC), true);
    let other = FunctionIds {
        vendor: PciId(0x10ec),
        device: PciId(0x8168),
        subsystem_vendor: None,
        subsystem_device: None,
        class: Some(PciClass(0x020000)),
    };
    assert_eq!(
        early_claim(&host, &config(false), run.path(), a(NIC), Some(&other)).unwrap(),
        EarlyClaim::NotWanted
    );
}

#[test]
fn a_companion_goes_to_vfio_pci_as_in_a_plan() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    let c = Config {
        version: 1,
        devices: vec![DeviceSpec {
            driver: "vfio-pci-variant".into(),
            companions: vec![a(NIC)],
            ..ids_entry("other", 0xffff, 0xffff, false)
        }],
        ..Config::default()
    };
    assert_eq!(claim(&host, run.path(), &c, NIC), written(None));
}

/// Issue 15: an ids selector must not claim the root NVMe or the console GPU at boot.
#[test]
fn the_root_disk_and_the_boot_console_are_refused_unless_forced() {
    let run = tempfile::tempdir().unwrap();
    let host = host_with(
        |n| n.usage.root_device = Some("root=UUID=ab-cd".into()),
        |g| {
            g.boot_vga = Some(true);
            g.usage.boot_console = true;
        },
    );
    for (dev, why) in [(NVME, "root filesystem"), (GPU, "boot console")] {
        match claim(&host, run.path(), &config(false), dev) {
            EarlyClaim::Refused { reasons, .. } => {
                assert!(reasons.join(";").contains(why), "{reasons:?}")
            }
            other => panic!("{dev}: {other:?}"),
        }
        // The refusal says why under the run directory.
        let text = fs::read_to_string(refusal_path(run.path(), &a(dev))).unwrap();
        assert!(text.contains(why), "{text}");
    }
    assert!(host.calls().is_empty());
    assert!(records(run.path()).is_empty());
    // force = true takes them, and says what it took.
    for dev in [NVME, GPU] {
        match claim(&host, run.path(), &config(true), dev) {
            EarlyClaim::Written { forced, .. } => assert!(!forced.is_empty()),
            other => panic!("{dev}: {other:?}"),
        }
        assert!(!refusal_path(run.path(), &a(dev)).exists());
    }
    assert_eq!(host.call_count(), 2);
}

#[test]
fn a_mounted_disk_an_up_interface_and_unknown_usage_are_refused() {
    let run = tempfile::tempdir().unwrap();
    let host = host_with(
        |n| {
            n.driver = Some("nvme".into());
            n.usage.block_devices = vec![BlockDevice {
                name: "nvme0n1".into(),
                mounts: vec!["/".into()],
                ..BlockDevice::default()
            }];
        },
        |g| {
            // Usage beyond the console exists only through a driver.
            g.driver = Some("bochs-drm".into());
            g.usage.unknown = vec!["/proc/self/mountinfo cannot be read".into()];
        },
    );
    let refused = |dev: &str| match claim(&host, run.path(), &config(false), dev) {
        EarlyClaim::Refused { reasons, .. } => reasons.join("; "),
        other => panic!("{dev}: {other:?}"),
    };
    assert!(refused(NVME).contains("mounted on /"));
    assert!(refused(GPU).contains("cannot tell"));
    assert!(host.calls().is_empty());
    // A NIC bound with an interface that is up with an address: in use.
    let mut nic = fixtures::device(NIC, 0x8086, 0x10d3, 0x020000, Some("e1000e"), 3);
    nic.usage.interfaces = vec![NetInterface {
        name: "eth1".into(),
        up: true,
        addresses: vec!["10.0.0.2/24".into()],
        routes: 1,
    }];
    let up = SimKernel::from_snapshot(&fixtures::snapshot(vec![nic], &[]));
    match claim(&up, run.path(), &config(false), NIC) {
        EarlyClaim::Refused { reasons, .. } => assert!(reasons[0].contains("eth1"), "{reasons:?}"),
        other => panic!("{other:?}"),
    }
    assert!(up.calls().is_empty());
}

#[test]
fn a_failing_write_leaves_no_record_and_no_override() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    host.inject(0, Fault::Fail);
    let err = early_claim(&host, &config(false), run.path(), a(NIC), None).unwrap_err();
    assert!(matches!(err, EarlyClaimError::Host(_)), "{err}");
    assert!(records(run.path()).is_empty());
    assert_eq!(host.device_state(a(NIC)).unwrap().driver_override, None);
    // The next add claims it.
    host.revive();
    assert_eq!(claim(&host, run.path(), &config(false), NIC), written(None));
}

#[test]
fn a_write_that_took_effect_but_failed_keeps_its_record() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    host.inject(0, Fault::FailAfterEffect);
    assert!(early_claim(&host, &config(false), run.path(), a(NIC), None).is_err());
    // The override is ours now: the record of the original must stay.
    assert_eq!(
        host.device_state(a(NIC))
            .unwrap()
            .driver_override
            .as_deref(),
        Some("vfio-pci")
    );
    assert_eq!(records(run.path()), vec![(a(NIC), None)]);
}

#[test]
fn a_function_removed_between_decision_and_write_leaves_nothing() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    host.inject(0, Fault::Unplug);
    let err = early_claim(&host, &config(false), run.path(), a(NIC), None).unwrap_err();
    assert!(
        matches!(err, EarlyClaimError::Host(KernelError::NoSuchDevice(_))),
        "{err}"
    );
    assert!(records(run.path()).is_empty());
}

#[test]
fn an_unreadable_function_is_not_claimed() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    host.fail_reads(a(NIC), true);
    let err = early_claim(&host, &config(false), run.path(), a(NIC), None).unwrap_err();
    assert!(
        err.to_string().contains("EIO") || err.to_string().contains("I/O"),
        "{err}"
    );
    assert!(host.calls().is_empty());
    assert!(records(run.path()).is_empty());
}

#[test]
fn a_failing_record_write_stops_the_claim() {
    let run = tempfile::tempdir().unwrap();
    // The run directory is a file: the record cannot be made, so the override is not written.
    let file = run.path().join("run");
    fs::write(&file, "").unwrap();
    let host = host();
    let err = early_claim(&host, &config(false), &file, a(NIC), None).unwrap_err();
    assert!(matches!(err, EarlyClaimError::Record(_)), "{err}");
    assert!(host.calls().is_empty());
}

#[test]
fn the_first_record_keeps_the_true_original() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    host.set_driver_override(a(NIC), Some("pci-stub")).unwrap();
    assert_eq!(
        claim(&host, run.path(), &config(false), NIC),
        written(Some("pci-stub"))
    );
    // Someone else changes it; a second add claims again but the first record stays.
    host.set_driver_override(a(NIC), Some("other")).unwrap();
    assert_eq!(
        claim(&host, run.path(), &config(false), NIC),
        written(Some("other"))
    );
    assert_eq!(records(run.path()), vec![(a(NIC), Some("pci-stub".into()))]);
}

/// The real host's seam on a fake sysfs tree: the write goes through
/// `Host::set_driver_override`, and the scan of the function sees the boot VGA flag.
#[test]
fn on_a_sysfs_tree_through_the_linux_host() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = Roots::under(tmp.path());
    for (dev, vendor, device, class) in [
        (NIC, "0x8086", "0x10d3", "0x020000"),
        (GPU, "0x1234", "0x1111", "0x030000"),
    ] {
        let dir = roots.pci_device(&a(dev));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        fs::write(dir.join("device"), format!("{device}\n")).unwrap();
        fs::write(dir.join("class"), format!("{class}\n")).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
    }
    fs::write(roots.pci_device(&a(GPU)).join("boot_vga"), "1\n").unwrap();
    let host = LinuxHost::new(roots.clone(), Timeouts::default());
    let run = tmp.path().join("run");
    assert_eq!(claim_linux(&host, &run, NIC), written(None));
    let ov = roots.pci_device(&a(NIC)).join("driver_override");
    assert_eq!(fs::read_to_string(&ov).unwrap().trim(), "vfio-pci");
    assert!(record_path(&run, &a(NIC)).exists());
    assert!(matches!(
        claim_linux(&host, &run, GPU),
        EarlyClaim::Refused { .. }
    ));
    assert_eq!(
        fs::read_to_string(roots.pci_device(&a(GPU)).join("driver_override")).unwrap(),
        "(null)\n"
    );
    // Gone from the tree: no such device, nothing recorded.
    let gone = "0000:09:00.0";
    assert!(matches!(
        early_claim(&host, &config(false), &run, a(gone), None),
        Err(EarlyClaimError::Host(KernelError::NoSuchDevice(_)))
    ));
}

fn claim_linux(host: &LinuxHost, run: &Path, dev: &str) -> EarlyClaim {
    early_claim(host, &config(false), run, a(dev), None).unwrap()
}

/// Hot-plug: an unbound function is decided on its identity alone, with no read of what the
/// host uses it for (it has no interfaces, disks or mounts without a driver).
#[test]
fn an_unbound_hot_plugged_function_is_claimed_without_a_usage_read() {
    let run = tempfile::tempdir().unwrap();
    let host = host();
    assert_eq!(claim(&host, run.path(), &config(false), NIC), written(None));
    assert_eq!(host.usage_reads(), 0);
    assert_eq!(
        host.calls(),
        vec![Call::SetOverride(a(NIC), Some("vfio-pci".into()))]
    );
    // The boot console is in the identity: an unbound boot GPU is refused, still without one.
    let console = host_with(
        |_| {},
        |g| {
            g.boot_vga = Some(true);
            g.usage.boot_console = true;
        },
    );
    assert!(matches!(
        claim(&console, run.path(), &config(false), GPU),
        EarlyClaim::Refused { .. }
    ));
    assert_eq!(console.usage_reads(), 0);
    assert!(console.calls().is_empty());
}

/// A bound function, and an unbound storage controller (it may hold the root device before
/// its driver probes), still get the full read, and are refused on what it finds.
#[test]
fn a_bound_function_and_a_storage_controller_get_the_full_usage_read() {
    let run = tempfile::tempdir().unwrap();
    let mut nic = fixtures::device(NIC, 0x8086, 0x10d3, 0x020000, Some("e1000e"), 3);
    nic.usage.interfaces = vec![NetInterface {
        name: "eth1".into(),
        up: true,
        addresses: vec![],
        routes: 2,
    }];
    let host = SimKernel::from_snapshot(&fixtures::snapshot(vec![nic], &[]));
    assert!(matches!(
        claim(&host, run.path(), &config(false), NIC),
        EarlyClaim::Refused { .. }
    ));
    assert_eq!(host.usage_reads(), 1);
    assert!(host.calls().is_empty());

    let nvme = host_with(
        |n| {
            n.usage.unknown = vec!["root=UUID=ab-cd cannot be traced".into()];
        },
        |_| {},
    );
    match claim(&nvme, run.path(), &config(false), NVME) {
        EarlyClaim::Refused { reasons, .. } => {
            assert!(reasons.join(";").contains("cannot tell"), "{reasons:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(nvme.usage_reads(), 1);
    assert!(nvme.calls().is_empty());
}

/// A bound function whose usage cannot be read is not claimed (fail closed): the identity
/// read succeeds, the full read fails, nothing is written.
#[test]
fn a_bound_function_whose_usage_cannot_be_read_is_not_claimed() {
    struct UsageFails(SimKernel);
    impl Host for UsageFails {
        fn snapshot(&self) -> Result<crate::host::Snapshot, KernelError> {
            self.0.snapshot()
        }
        fn device_state(&self, d: PciAddress) -> Result<crate::kernel::DeviceState, KernelError> {
            self.0.device_state(d)
        }
        fn function(&self, d: PciAddress) -> Result<PciDevice, KernelError> {
            Err(KernelError::Scan(format!("{d}: /proc/self/mountinfo: EIO")))
        }
        fn function_identity(&self, d: PciAddress) -> Result<PciDevice, KernelError> {
            self.0.function_identity(d)
        }
        fn num_vfs(&self, d: PciAddress) -> Result<u32, KernelError> {
            self.0.num_vfs(d)
        }
        fn node_owner(&self, g: u32) -> Result<Option<crate::kernel::NodeOwner>, KernelError> {
            self.0.node_owner(g)
        }
        fn virtfns(&self, d: PciAddress) -> Result<Vec<PciAddress>, KernelError> {
            self.0.virtfns(d)
        }
        fn iommu_group(&self, d: PciAddress) -> Result<Option<u32>, KernelError> {
            self.0.iommu_group(d)
        }
        fn set_driver_override(&self, d: PciAddress, v: Option<&str>) -> Result<(), KernelError> {
            self.0.set_driver_override(d, v)
        }
        fn unbind(&self, d: PciAddress) -> Result<(), KernelError> {
            self.0.unbind(d)
        }
        fn probe(&self, d: PciAddress) -> Result<Option<String>, KernelError> {
            self.0.probe(d)
        }
        fn bind(&self, d: PciAddress, v: &str) -> Result<(), KernelError> {
            self.0.bind(d, v)
        }
        fn set_num_vfs(&self, d: PciAddress, n: u32) -> Result<(), KernelError> {
            self.0.set_num_vfs(d, n)
        }
        fn set_node_owner(
            &self,
            g: u32,
            o: crate::kernel::NodeOwner,
            w: std::time::Duration,
        ) -> Result<(), KernelError> {
            self.0.set_node_owner(g, o, w)
        }
        fn load_module(&self, n: &str) -> Result<(), KernelError> {
            self.0.load_module(n)
        }
        fn module_loaded(&self, n: &str) -> Result<bool, KernelError> {
            self.0.module_loaded(n)
        }
        fn unload_module(&self, n: &str) -> Result<(), KernelError> {
            self.0.unload_module(n)
        }
        fn driver_devices(&self, n: &str) -> Result<Vec<PciAddress>, KernelError> {
            self.0.driver_devices(n)
        }
        fn group_status(&self, g: u32) -> Result<crate::vfio::GroupStatus, KernelError> {
            self.0.group_status(g)
        }
        fn writer_blocked(&self, pid: u32) -> bool {
            self.0.writer_blocked(pid)
        }
    }
    let run = tempfile::tempdir().unwrap();
    let bound = fixtures::device(NIC, 0x8086, 0x10d3, 0x020000, Some("e1000e"), 3);
    let host = UsageFails(SimKernel::from_snapshot(&fixtures::snapshot(
        vec![bound],
        &[],
    )));
    let err = early_claim(&host, &config(false), run.path(), a(NIC), None).unwrap_err();
    assert!(err.to_string().contains("mountinfo"), "{err}");
    assert!(host.0.calls().is_empty());
    assert!(records(run.path()).is_empty());
    // Unbound, the same host claims it: the usage read is never made.
    let unbound = fixtures::device(NIC, 0x8086, 0x10d3, 0x020000, None, 3);
    let host = UsageFails(SimKernel::from_snapshot(&fixtures::snapshot(
        vec![unbound],
        &[],
    )));
    assert_eq!(claim_any(&host, run.path(), NIC), written(None));
}

fn claim_any(host: &dyn Host, run: &Path, dev: &str) -> EarlyClaim {
    early_claim(host, &config(false), run, a(dev), None).unwrap()
}

/// On a fake sysfs tree through the real host: the identity read sees ids, driver, override;
/// an unbound NIC is claimed on it; a bound storage controller takes the full read, which
/// finds the command line's `root=` cannot be traced (no such disk), so it is refused.
#[test]
fn on_a_sysfs_tree_identity_first_and_the_full_read_when_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = Roots::under(tmp.path());
    let nvme_driver = roots.sysfs.join("bus/pci/drivers/nvme");
    fs::create_dir_all(&nvme_driver).unwrap();
    for (dev, vendor, device, class) in [
        (NIC, "0x8086", "0x10d3", "0x020000"),
        (NVME, "0x1b36", "0x0010", "0x010802"),
    ] {
        let dir = roots.pci_device(&a(dev));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        fs::write(dir.join("device"), format!("{device}\n")).unwrap();
        fs::write(dir.join("class"), format!("{class}\n")).unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
    }
    std::os::unix::fs::symlink(&nvme_driver, roots.pci_device(&a(NVME)).join("driver")).unwrap();
    fs::create_dir_all(&roots.proc).unwrap();
    fs::write(roots.proc.join("cmdline"), "ro root=/dev/nvme9n1p1\n").unwrap();
    let host = LinuxHost::new(roots.clone(), Timeouts::default());

    let id = host.function_identity(a(NVME)).unwrap();
    assert_eq!(id.driver.as_deref(), Some("nvme"));
    assert_eq!(id.ids().vendor, PciId(0x1b36));
    assert!(id.usage.reasons().is_empty());
    assert!(crate::host::scan::usage::needs_usage_read(&id));
    let nic = host.function_identity(a(NIC)).unwrap();
    assert!(!crate::host::scan::usage::needs_usage_read(&nic));

    let run = tmp.path().join("run");
    assert_eq!(claim_linux(&host, &run, NIC), written(None));
    match claim_linux(&host, &run, NVME) {
        EarlyClaim::Refused { reasons, .. } => {
            assert!(
                reasons.join(";").contains("root=/dev/nvme9n1p1"),
                "{reasons:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fs::read_to_string(roots.pci_device(&a(NVME)).join("driver_override")).unwrap(),
        "(null)\n"
    );
}

/// Hot-plug, the race with the kernel's probe: with the whole ids of the `add` uevent, the
/// decision reads only the driver link and the override (here the tree has nothing else for
/// the NIC); a display controller's `boot_vga` is still read, and ids without a subsystem send
/// the claim to the function's own files.
#[test]
fn whole_event_ids_leave_only_the_driver_and_override_to_read() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = Roots::under(tmp.path());
    let nic = roots.pci_device(&a(NIC));
    fs::create_dir_all(&nic).unwrap();
    fs::write(nic.join("driver_override"), "(null)\n").unwrap();
    let gpu = roots.pci_device(&a(GPU));
    fs::create_dir_all(&gpu).unwrap();
    for (f, v) in [
        ("vendor", "0x1234"),
        ("device", "0x1111"),
        ("class", "0x030000"),
        ("boot_vga", "1"),
        ("driver_override", "(null)"),
    ] {
        fs::write(gpu.join(f), format!("{v}\n")).unwrap();
    }
    let host = LinuxHost::new(roots.clone(), Timeouts::default());
    let run = tmp.path().join("run");
    let ids = |vendor, device, class, subsystem: bool| FunctionIds {
        vendor: PciId(vendor),
        device: PciId(device),
        subsystem_vendor: subsystem.then_some(PciId(0x8086)),
        subsystem_device: subsystem.then_some(PciId(0)),
        class: Some(PciClass(class)),
    };
    let cfg = config(false);
    // Ids without a subsystem: the function's files are read, and the NIC's are missing.
    assert!(early_claim(
        &host,
        &cfg,
        &run,
        a(NIC),
        Some(&ids(0x8086, 0x10d3, 0x020000, false))
    )
    .is_err());
    assert_eq!(
        early_claim(
            &host,
            &cfg,
            &run,
            a(NIC),
            Some(&ids(0x8086, 0x10d3, 0x020000, true))
        )
        .unwrap(),
        written(None)
    );
    assert_eq!(
        fs::read_to_string(nic.join("driver_override"))
            .unwrap()
            .trim(),
        "vfio-pci"
    );
    assert!(matches!(
        early_claim(
            &host,
            &cfg,
            &run,
            a(GPU),
            Some(&ids(0x1234, 0x1111, 0x030000, true))
        )
        .unwrap(),
        EarlyClaim::Refused { .. }
    ));
}
