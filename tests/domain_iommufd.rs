//! Held domains on the iommufd backend (issue 19), on the simulated kernel: the `backend` key,
//! the auto rule, IOASes in one iommufd with bound and attached device cdevs, windows that
//! converge like on legacy, per-group placement, refusals (a second bind, the legacy group
//! while cdevs are held), the fd store round trip with adoption, and the broker's hand-over.

use std::path::Path;

use nix::errno::Errno;
use vfioctl::config::model::{
    BackendChoice, Config, DeviceSpec, DomainSpec, Origin, Placement, Selector, WindowSpec,
};
use vfioctl::domain::iommu::{AttachError, Iommu};
use vfioctl::domain::simulated::{msi_region, SimIommu};
use vfioctl::domain::{Action, Domains};
use vfioctl::host::snapshot::{DeviceCdev, IommuGroup, NodeInfo, PciDevice, Snapshot, Usage};
use vfioctl::pci::{PciAddress, PciClass, PciId};
use vfioctl::plan::backend::Backend;

const MIB: u64 = 1 << 20;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// A host with one function per `(address, group)` on vfio-pci; with `iommufd`, `/dev/iommu`
/// and a cdev `vfioN` per function (N in order).
fn host(functions: &[(&str, u32)], iommufd: bool) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.vfio.iommufd = iommufd;
    for (i, &(a, g)) in functions.iter().enumerate() {
        snap.devices.push(PciDevice {
            address: addr(a),
            vendor: PciId(0x1234),
            device: PciId(0x11e8),
            subsystem_vendor: None,
            subsystem_device: None,
            class: PciClass(0x00ff00),
            revision: None,
            driver: Some("vfio-pci".into()),
            driver_override: Some("vfio-pci".into()),
            iommu_group: Some(g),
            iommu: None,
            numa_node: None,
            bridge: false,
            parent: None,
            sriov: None,
            physfn: None,
            boot_vga: None,
            reset_method: None,
            usage: Usage::default(),
            vfio_cdev: iommufd.then(|| DeviceCdev {
                name: format!("vfio{i}"),
                path: format!("/dev/vfio/devices/vfio{i}"),
                major: 247,
                minor: i as u32,
                node: None,
            }),
        });
        if snap.groups.iter().all(|x| x.id != g) {
            snap.groups.push(IommuGroup {
                id: g,
                devices: vec![],
                domain_type: Some("DMA".into()),
                reserved_regions: vec![msi_region()],
                node: Some(NodeInfo {
                    path: format!("/dev/vfio/{g}"),
                    uid: 0,
                    gid: 0,
                    mode: 0o600,
                }),
            });
        }
        if let Some(grp) = snap.groups.iter_mut().find(|x| x.id == g) {
            grp.devices.push(addr(a));
        }
    }
    snap.normalize();
    snap
}

fn window(name: &str, iova: u64, size: u64) -> WindowSpec {
    WindowSpec {
        name: Some(name.into()),
        iova,
        size,
        hugepages: false,
        origin: Origin::default(),
    }
}

fn config(
    addrs: &[&str],
    placement: Placement,
    backend: BackendChoice,
    windows: Vec<WindowSpec>,
) -> Config {
    let devices: Vec<DeviceSpec> = addrs
        .iter()
        .map(|a| DeviceSpec {
            name: format!("dev-{a}"),
            selector: Selector::Address(addr(a)),
            driver: "vfio-pci".into(),
            companions: vec![],
            force: false,
            origin: Origin::default(),
        })
        .collect();
    Config {
        version: 1,
        domains: vec![DomainSpec {
            name: "dma".into(),
            devices: devices.iter().map(|d| d.name.clone()).collect(),
            placement,
            backend,
            windows,
            origin: Origin::default(),
        }],
        devices,
        ..Config::default()
    }
}

/// The simulated kernel of `host(functions, true)`: groups behind one unit, cdevs in order.
fn sim(functions: &[(&str, u32)]) -> SimIommu {
    let mut groups: Vec<(u32, &str)> = functions.iter().map(|&(_, g)| (g, "dmar0")).collect();
    groups.dedup();
    let mut s = SimIommu::with_cdevs(&groups, functions);
    s.memlock_soft = 1 << 40;
    s.memlock_hard = 1 << 40;
    s
}

// ---- the config key ----

#[test]
fn the_backend_key_is_read_file_wide_and_per_domain() {
    let src =
        "version = 1\nbackend = \"legacy\"\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
               [[device]]\nname = \"b\"\naddress = \"02:00.0\"\n\
               [[domain]]\nname = \"d\"\ndevices = [\"a\"]\nbackend = \"iommufd\"\n\
               [[domain]]\nname = \"e\"\ndevices = [\"b\"]\n";
    let c = vfioctl::config::parse_str(src, Path::new("t.toml")).expect("valid");
    assert_eq!(c.backend, BackendChoice::Legacy);
    assert_eq!(c.domains[0].backend, BackendChoice::Iommufd);
    assert_eq!(c.domains[1].backend, BackendChoice::Legacy, "inherits");
    let c = vfioctl::config::parse_str(
        "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n[[domain]]\nname = \"d\"\ndevices = [\"a\"]\n",
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.backend, BackendChoice::Auto);
    assert_eq!(c.domains[0].backend, BackendChoice::Auto);
}

#[test]
fn an_unknown_backend_is_located_with_a_suggestion() {
    use vfioctl::config::diagnostic::Severity;
    for (src, line, column, message, hint) in [
        (
            "version = 1\n[[device]]\nname = \"a\"\naddress = \"01:00.0\"\n\
             [[domain]]\nname = \"d\"\ndevices = [\"a\"]\nbackend = \"iommfd\"\n",
            8,
            11,
            "backend `iommfd` of domain `d` is not known",
            "did you mean \"iommufd\"?",
        ),
        (
            "version = 1\nbackend = 2\n",
            2,
            11,
            "backend of the file-wide default must be a string, found an integer",
            "\"auto\"",
        ),
    ] {
        let d = vfioctl::config::check_str(src, Path::new("t.toml")).diagnostics;
        let first = d
            .items()
            .iter()
            .find(|x| x.severity == Severity::Error && x.message.contains(message))
            .unwrap_or_else(|| panic!("no {message:?} in\n{d}"));
        let loc = first.location.as_ref().expect("located");
        assert_eq!((loc.line, loc.column), (line, column), "{}", first.message);
        let h = first.hint.as_deref().unwrap_or("");
        assert!(h.contains(hint), "{h}");
        assert!(vfioctl::config::parse_str(src, Path::new("t.toml")).is_err());
    }
}

// ---- held domains ----

#[test]
fn auto_holds_an_iommufd_with_the_device_bound_and_attached_and_the_window_mapped() {
    let f = [("0000:00:05.0", 5)];
    let snap = host(&f, true);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    let sim = d.iommu();
    let live = sim.live_containers();
    assert_eq!(live.len(), 1);
    assert!(live[0].ioas.is_some(), "an IOAS, not a type1 container");
    assert_eq!(live[0].mappings.get(&0x10_0000), Some(&(2 * MIB)));
    let cdev = &sim.cdevs["0000:00:05.0"];
    assert!(cdev.bound.is_some() && cdev.attached == Some(0), "{cdev:?}");
    assert!(sim.open.is_empty(), "no group node is open");
    assert!(
        sim.log.iter().any(|l| l == "open-cdev vfio0"),
        "{:?}",
        sim.log
    );
    let st = d.status();
    assert_eq!(st[0].backend, Backend::Iommufd);
    assert_eq!(
        st[0].backend_why,
        "auto: /dev/iommu present, every member has a cdev"
    );
    let json = serde_json::to_value(&st[0]).unwrap();
    assert_eq!(json["backend"], "iommufd");
    assert!(json["containers"][0]["ioas"].is_u64(), "{json}");
    let text = vfioctl::domain::status::render_text(&st);
    assert!(
        text.contains("  dma (shared, iommufd): 1 container(s)"),
        "{text}"
    );
    assert!(
        text.contains(
            "    domain \"dma\" backend iommufd (auto: /dev/iommu present, every member has a cdev)\n"
        ),
        "{text}"
    );

    // Another process: the device is bound already (EINVAL), the legacy group is busy.
    let mut other = d.iommu().clone();
    let g = other
        .open_devices(
            5,
            &[vfioctl::domain::iommu::Cdev {
                address: "0000:00:05.0".into(),
                name: "vfio0".into(),
            }],
        )
        .unwrap();
    let mut ioas = other.new_ioas(None).unwrap();
    match other.attach(&mut ioas, &g, true) {
        Err(AttachError::Failed(e)) => assert_eq!(e.errno, Errno::EINVAL, "{e}"),
        other => panic!("a second bind went through: {other:?}"),
    }
    let busy = d.iommu().clone().open_group(5).unwrap_err();
    assert_eq!(busy.errno, Errno::EBUSY);

    // Nothing changed: a second pass does nothing.
    let calls = d.iommu().log.len();
    let again = d.reconcile(&cfg, &snap);
    assert!(again.ok() && again.events.is_empty(), "{again}");
    assert_eq!(d.iommu().log.len(), calls, "{:?}", d.iommu().log);
}

#[test]
fn a_host_without_iommufd_holds_legacy_as_before() {
    let f = [("0000:00:05.0", 5)];
    let snap = host(&f, false);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert!(d.iommu().live_containers()[0].ioas.is_none());
    assert!(d.iommu().open.contains(&5));
    let st = d.status();
    assert_eq!(st[0].backend, Backend::Legacy);
    assert_eq!(st[0].backend_why, "auto: /dev/iommu absent");
    // The same events a legacy domain always had.
    let kinds: Vec<Action> = r.events.iter().map(|e| e.action).collect();
    assert_eq!(
        kinds,
        [Action::CreateDomain, Action::AttachGroup, Action::MapWindow]
    );
}

#[test]
fn explicit_iommufd_on_a_host_without_it_holds_nothing_and_says_why() {
    let f = [("0000:00:05.0", 5)];
    let snap = host(&f, false);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        BackendChoice::Iommufd,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    let r = d.reconcile(&cfg, &snap);
    assert!(!r.ok());
    let text = r.to_string();
    assert!(
        text.contains("domain \"dma\": backend \"iommufd\" is set")
            && text.contains("/dev/iommu absent"),
        "{text}"
    );
    assert!(d.iommu().live_containers().is_empty());
    assert!(d.iommu().open.is_empty());
    let bad = vfioctl::plan::backend::unrealisable(&cfg, &snap);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].domain, "dma");
}

#[test]
fn per_group_placement_gives_one_ioas_per_group_in_one_iommufd() {
    let f = [("0000:00:05.0", 5), ("0000:00:06.0", 6)];
    let snap = host(&f, true);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::PerGroup,
        BackendChoice::Iommufd,
        vec![window("a", 0, 2 * MIB), window("b", 0x4000_0000, MIB)],
    );
    let mut d = Domains::new(sim(&f));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    let live = d.iommu().live_containers();
    assert_eq!(live.len(), 2);
    let (ctx0, id0) = live[0].ioas.unwrap();
    let (ctx1, id1) = live[1].ioas.unwrap();
    assert_eq!(ctx0, ctx1, "one iommufd");
    assert_ne!(id0, id1, "two IOASes");
    assert_eq!(live[0].groups, vec![5]);
    assert_eq!(live[1].groups, vec![6]);
    assert_eq!(live[0].mappings, live[1].mappings);
    assert_eq!(live[0].mappings.len(), 2);
    let fds = d.held()["dma"].fds();
    assert_eq!(fds.ioas, vec![id0, id1]);
    assert_eq!(fds.devices.len(), 2);
    assert!(fds.groups.is_empty(), "no group nodes on iommufd");
}

#[test]
fn windows_grow_shrink_and_go_and_domain_removal_converges() {
    let f = [("0000:00:05.0", 5)];
    let snap = host(&f, true);
    let with =
        |w: Vec<WindowSpec>| config(&["0000:00:05.0"], Placement::Shared, BackendChoice::Auto, w);
    let mut d = Domains::new(sim(&f));
    assert!(d
        .reconcile(&with(vec![window("buf", 0x10_0000, 2 * MIB)]), &snap)
        .ok());
    // Grow.
    let r = d.reconcile(&with(vec![window("buf", 0x10_0000, 4 * MIB)]), &snap);
    assert!(r.ok() && r.count(Action::ResizeWindow) == 1, "{r}");
    assert_eq!(
        d.iommu().live_containers()[0].mappings.get(&0x10_0000),
        Some(&(4 * MIB))
    );
    // Shrink, and add another.
    let r = d.reconcile(
        &with(vec![
            window("buf", 0x10_0000, MIB),
            window("more", 0x100_0000, MIB),
        ]),
        &snap,
    );
    assert!(r.ok(), "{r}");
    assert_eq!(d.iommu().pinned(), 2 * MIB);
    // Remove one.
    let r = d.reconcile(&with(vec![window("more", 0x100_0000, MIB)]), &snap);
    assert!(r.ok() && r.count(Action::UnmapWindow) == 1, "{r}");
    assert_eq!(d.iommu().pinned(), MIB);
    // The domain goes: the IOAS is closed, the cdev released (unbound).
    let r = d.reconcile(
        &Config {
            domains: vec![],
            ..with(vec![])
        },
        &snap,
    );
    assert!(r.ok() && r.count(Action::DestroyDomain) == 1, "{r}");
    assert!(d.iommu().live_containers().is_empty());
    let cdev = &d.iommu().cdevs["0000:00:05.0"];
    assert_eq!((cdev.open, cdev.bound), (0, None));
}

#[test]
fn unmapping_a_range_nothing_is_mapped_at_is_enoent_on_an_ioas() {
    let mut s = sim(&[("0000:00:05.0", 5)]);
    let mut ioas = s.new_ioas(None).unwrap();
    let w = vfioctl::domain::windows::Window {
        name: "x".into(),
        iova: 0,
        size: MIB,
        hugepages: false,
    };
    let e = s.unmap(&mut ioas, &w).unwrap_err();
    assert_eq!(
        (e.what.as_str(), e.errno),
        ("IOMMU_IOAS_UNMAP", Errno::ENOENT)
    );
    // No /dev/iommu: no iommufd.
    s.dev_iommu = false;
    assert_eq!(s.new_ioas(None).unwrap_err().errno, Errno::ENOENT);
}

#[test]
fn changing_the_backend_rebuilds_the_domain() {
    let f = [("0000:00:05.0", 5)];
    let snap = host(&f, true);
    let legacy = config(
        &["0000:00:05.0"],
        Placement::Shared,
        BackendChoice::Legacy,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    assert!(d.reconcile(&legacy, &snap).ok());
    assert!(d.iommu().open.contains(&5));
    let auto = config(
        &["0000:00:05.0"],
        Placement::Shared,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let r = d.reconcile(&auto, &snap);
    assert!(r.ok(), "{r}");
    assert!(
        r.count(Action::DestroyDomain) == 1 && r.count(Action::CreateDomain) == 1,
        "{r}"
    );
    assert!(d.iommu().open.is_empty(), "the group node was closed first");
    assert_eq!(d.held()["dma"].backend, Backend::Iommufd);
    assert_eq!(d.iommu().live_containers().len(), 1);
    assert_eq!(d.iommu().pinned(), 2 * MIB);
}

/// The fd store on iommufd: the iommufd once, each device cdev and window, the layout with
/// the IOAS ids; a restarted process adopts them and converges with no change.
#[test]
fn an_iommufd_domain_is_stored_adopted_and_converges_with_no_change() {
    use std::os::fd::AsFd;
    use vfioctl::domain::adopt::{adopt_passed, layout_memfd, stored_names, Layout};
    use vfioctl::domain::fdstore::Part;

    let f = [("0000:00:05.0", 5), ("0000:00:06.0", 6)];
    let snap = host(&f, true);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::PerGroup,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    assert!(d.reconcile(&cfg, &snap).ok());
    let held = &d.held()["dma"];
    let layout = Layout::of(held);
    assert_eq!(layout.backend, Backend::Iommufd);
    assert!(layout.containers.iter().all(|c| c.ioas.is_some()));
    assert_eq!(layout.devices.len(), 2);
    let names: Vec<String> = stored_names("dma", &layout)
        .iter()
        .map(|n| n.encode().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "vfioctl.dma.layout.0",
            "vfioctl.dma.iommufd.0",
            "vfioctl.dma.device.0",
            "vfioctl.dma.device.1",
            "vfioctl.dma.window.0",
        ]
    );
    let record = layout_memfd(&layout).unwrap();
    let fds = held.fds();
    let passed: Vec<(std::os::fd::OwnedFd, String)> = stored_names("dma", &layout)
        .into_iter()
        .map(|n| {
            let fd = match n.part {
                Part::Layout => record.as_fd(),
                Part::Iommufd => fds.containers[0],
                Part::Device(i) => fds.devices[i].2,
                Part::Window(i) => fds.windows[i].1,
                other => panic!("not stored for an iommufd domain: {other:?}"),
            };
            (fd.try_clone_to_owned().unwrap(), n.encode().unwrap())
        })
        .collect();
    let kernel = d.iommu().clone();
    drop(fds);
    drop(d);

    // Without the iommufd among the fds handed back, the domain is not adopted (it is closed
    // and rebuilt), and the error says what is missing.
    let partial: Vec<(std::os::fd::OwnedFd, String)> = passed
        .iter()
        .filter(|(_, n)| n != "vfioctl.dma.iommufd.0")
        .map(|(f, n)| (f.try_clone().unwrap(), n.clone()))
        .collect();
    let mut probe = kernel.clone();
    let refused = adopt_passed(&mut probe, partial, &["dma".to_string()], None);
    assert!(refused.domains.is_empty());
    let why = format!("{:?}", refused.report.errors);
    assert!(why.contains("the iommufd"), "{why}");

    let mut next = Domains::new(kernel);
    let adopted = adopt_passed(next.iommu_mut(), passed, &["dma".to_string()], None);
    assert!(adopted.report.errors.is_empty(), "{:?}", adopted.report);
    next.adopt(adopted.domains);
    assert!(
        next.iommu().log.iter().any(|l| l == "adopt ioas c1"),
        "{:?}",
        next.iommu().log
    );
    let again = next.reconcile(&cfg, &snap);
    assert!(again.ok(), "{again}");
    assert!(again.events.is_empty(), "nothing changes: {again}");
    assert_eq!(next.held()["dma"].backend, Backend::Iommufd);
    assert_eq!(Layout::of(&next.held()["dma"]), layout);
    assert_eq!(next.iommu().pinned(), 2 * 2 * MIB);
}

/// The broker offers an iommufd domain as the iommufd, each bound and attached device cdev and
/// the window memfds, with the IOAS ids (`domain open`'s variables from such a description:
/// `cli::domain`'s unit tests).
#[test]
fn the_broker_offers_the_iommufd_the_devices_and_the_windows() {
    use vfioctl::broker::handout::Handout;

    let f = [("0000:00:05.0", 5), ("0000:00:06.0", 6)];
    let snap = host(&f, true);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::PerGroup,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    assert!(d.reconcile(&cfg, &snap).ok());
    let handout = Handout::new();
    handout.refresh(&d, Some(&snap), cfg.clone(), Default::default());
    let offer = handout.lock().domains.remove("dma").expect("offered");
    let desc = &offer.description;
    assert!(
        desc.containers.is_empty() && desc.groups.is_empty(),
        "{desc:?}"
    );
    let iommufd = desc.iommufd.as_ref().expect("an iommufd");
    let ids: Vec<u32> = d.held()["dma"].fds().ioas;
    assert_eq!(
        iommufd
            .ioas
            .iter()
            .map(|i| (i.id, i.groups.clone()))
            .collect::<Vec<_>>(),
        vec![(ids[0], vec![5]), (ids[1], vec![6])]
    );
    let devices: Vec<(&str, Option<u32>)> = desc
        .devices
        .iter()
        .map(|x| (x.address.as_str(), x.ioas))
        .collect();
    assert_eq!(
        devices,
        [
            ("0000:00:05.0", Some(ids[0])),
            ("0000:00:06.0", Some(ids[1]))
        ]
    );
    assert_eq!(offer.fds.len(), 4, "iommufd, two devices, one window");
    assert_eq!(desc.fd_count(), 4);

    // The fds are what they say: the simulated tokens name the iommufd context and the cdevs.
    let token = |fd: &std::os::fd::OwnedFd| {
        let mut b = [0u8; 8];
        nix::sys::uio::pread(fd, &mut b, 0).unwrap();
        u64::from_le_bytes(b)
    };
    let ctx = d.iommu().live_containers()[0].ioas.unwrap().0;
    assert_eq!(token(&offer.fds[iommufd.fd]), ctx);
    assert_eq!(
        token(&offer.fds[desc.devices[1].fd]),
        d.iommu().cdevs["0000:00:06.0"].id
    );
}

/// A function that leaves an iommufd domain while another member of its group stays: before
/// the binding pass gives it back, its cdev is closed (the group is placed again with the
/// member that stays), so its unbind does not wait on an open fd.
#[test]
fn a_function_leaving_the_domain_has_its_cdev_closed_before_release() {
    let f = [("0000:00:05.0", 5), ("0000:00:05.1", 5)];
    let snap = host(&f, true);
    let both = config(
        &["0000:00:05.0", "0000:00:05.1"],
        Placement::Shared,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    assert!(d.reconcile(&both, &snap).ok());
    assert_eq!(d.iommu().cdevs["0000:00:05.1"].open, 1);
    let mut one = both.clone();
    one.domains[0].devices.retain(|n| n == "dev-0000:00:05.0");
    let r = d.release_departed(&one, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(
        d.iommu().cdevs["0000:00:05.1"].open,
        0,
        "closed before release"
    );
    let r = d.reconcile(&one, &snap);
    assert!(r.ok(), "{r}");
    let cdevs = &d.iommu().cdevs;
    assert_eq!(cdevs["0000:00:05.0"].open, 1);
    assert!(cdevs["0000:00:05.0"].bound.is_some());
    assert_eq!(cdevs["0000:00:05.1"].open, 0);
    assert_eq!(d.iommu().pinned(), 2 * MIB, "the window is still mapped");
}

/// `domain hold --status-file` names an iommufd domain's device fds by address and its IOAS
/// ids; a layout record written before issue 19 (no `backend`) still reads as legacy.
#[test]
fn the_hold_status_names_device_fds_and_old_records_read_as_legacy() {
    let f = [("0000:00:05.0", 5)];
    let snap = host(&f, true);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        BackendChoice::Auto,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim(&f));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    let status = vfioctl::domain::hold::status_json(1, &d, &r);
    let fds = &status["fds"]["dma"];
    assert!(fds["devices"]["0000:00:05.0"].is_i64(), "{status:#}");
    assert_eq!(fds["ioas"].as_array().map(Vec::len), Some(1), "{status:#}");
    assert_eq!(fds["groups"].as_object().map(|m| m.len()), Some(0));
    assert_eq!(status["domains"][0]["backend"], "iommufd");

    let old = r#"{"version":1,"placement":"shared","containers":[{"role":"shared","groups":[5]}],"windows":[]}"#;
    let layout = vfioctl::domain::adopt::parse_layout("dma", old).unwrap();
    assert_eq!(layout.backend, Backend::Legacy);
    assert_eq!(layout.containers[0].ioas, None);
    assert_eq!(
        serde_json::to_string(&layout).unwrap(),
        old,
        "written as before"
    );
}

// ---- the command line ----

fn dry_run(config: &str, host: &str, extra: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(["reconcile", "--dry-run", "--config", config, "--host", host])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run vfioctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GPU_DOMAIN: &str = r#"version = 1
[[device]]
name = "gpu"
address = "01:00.0"
companions = ["01:00.1"]
[[domain]]
name = "vm1"
devices = ["gpu"]
BACKEND
[[domain.window]]
name = "ram"
iova = 0
size = "2GiB"
"#;

/// The dry run names each domain's backend and why; an explicit iommufd on a host without
/// `/dev/iommu` exits 1 naming the domain and what is missing; with `/dev/iommu` and cdevs in
/// the snapshot, auto picks iommufd.
#[test]
fn the_dry_run_says_the_backend_and_refuses_an_iommufd_the_host_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, backend: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, GPU_DOMAIN.replace("BACKEND", backend)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let workstation = "examples/hosts/workstation.json";
    let auto = write("auto.toml", "");
    let (code, out, err) = dry_run(&auto, workstation, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("  domain \"vm1\" backend legacy (auto: /dev/iommu absent)\n"),
        "{out}"
    );
    let (code, out, _) = dry_run(&auto, workstation, &["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["domain_backends"][0]["backend"], "legacy");
    assert_eq!(v["domain_backends"][0]["why"], "auto: /dev/iommu absent");

    let explicit = write("iommufd.toml", "backend = \"iommufd\"");
    let (code, out, err) = dry_run(&explicit, workstation, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("error: domain \"vm1\": backend \"iommufd\" is set, but this host cannot hold it that way: /dev/iommu absent"),
        "{err}"
    );

    // The same host with iommufd: the plan binds the GPU pair, whose cdevs then appear.
    let mut snap: Snapshot =
        serde_json::from_str(&std::fs::read_to_string(workstation).unwrap()).unwrap();
    snap.vfio.iommufd = true;
    let with = dir.path().join("with-iommufd.json");
    std::fs::write(&with, serde_json::to_string(&snap).unwrap()).unwrap();
    let with = with.to_str().unwrap();
    let (code, out, err) = dry_run(&auto, with, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("  domain \"vm1\" backend iommufd (auto: /dev/iommu present, every member has a cdev)\n"),
        "{out}"
    );
    let (code, _, err) = dry_run(&explicit, with, &[]);
    assert_eq!(code, 0, "{err}");
}
