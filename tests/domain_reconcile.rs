//! Held domains on the simulated IOMMU: placement (shared, per-group, mirrored when the kernel
//! refuses a group), windows following the config, teardown, and the errors that name what is
//! wrong.

use vfioctl::config::model::{
    Config, DeviceSpec, DomainSpec, Origin, Placement, Selector, WindowSpec,
};
use vfioctl::domain::placement::Role;
use vfioctl::domain::simulated::{msi_region, SimIommu};
use vfioctl::domain::{Action, Domains};
use vfioctl::host::snapshot::{IommuGroup, NodeInfo, PciDevice, Snapshot, Usage};
use vfioctl::pci::{PciAddress, PciClass, PciId};

const MIB: u64 = 1 << 20;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// A host with one function per `(address, group)`, every group on vfio-pci with a node.
fn host(functions: &[(&str, u32)]) -> Snapshot {
    let mut snap = Snapshot::default();
    for &(a, g) in functions {
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
            vfio_cdev: None,
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

/// A config with one device entry per address (named `dev-ADDR`) and one domain over them.
fn config(addrs: &[&str], placement: Placement, windows: Vec<WindowSpec>) -> Config {
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
            backend: vfioctl::config::model::BackendChoice::Auto,
            windows,
            origin: Origin::default(),
        }],
        devices,
        ..Config::default()
    }
}

fn sim_with_memlock(groups: &[(u32, &str)]) -> SimIommu {
    let mut sim = SimIommu::with_groups(groups);
    sim.memlock_soft = 1 << 40;
    sim.memlock_hard = 1 << 40;
    sim
}

#[test]
fn shared_placement_holds_both_groups_in_one_container_and_maps_the_window() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::Shared,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    let sim = d.iommu();
    let live = sim.live_containers();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].groups, vec![5, 6]);
    assert_eq!(live[0].mappings.get(&0x10_0000), Some(&(2 * MIB)));
    assert_eq!(sim.pinned(), 2 * MIB);

    let st = d.status();
    assert_eq!(st[0].name, "dma");
    assert_eq!(st[0].bytes_pinned, 2 * MIB);
    assert!(!st[0].mirrored);
    assert_eq!(st[0].containers[0].dma_avail, Some(65534));

    // The groups are held: nobody else can open them.
    let mut other = d.iommu().clone();
    use vfioctl::domain::iommu::Iommu;
    let busy = other.open_group(5).unwrap_err();
    assert_eq!(busy.errno, nix::errno::Errno::EBUSY);
}

#[test]
fn a_second_pass_with_nothing_changed_does_nothing() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("buf", 0, 4 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    let calls = d.iommu().log.len();
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok() && r.events.is_empty(), "{r}");
    assert_eq!(d.iommu().log.len(), calls, "{:?}", d.iommu().log);
}

#[test]
fn per_group_placement_gives_two_containers_with_identical_mappings() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::PerGroup,
        vec![window("a", 0, 2 * MIB), window("b", 0x4000_0000, MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    let live = d.iommu().live_containers();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].groups, vec![5]);
    assert_eq!(live[1].groups, vec![6]);
    assert_eq!(live[0].mappings, live[1].mappings);
    assert_eq!(live[0].mappings.len(), 2);
    let st = d.status();
    assert!(st[0].containers.iter().all(|c| c.role == Role::PerGroup));
    // Each container pins its own copy, as type1 accounts it.
    assert_eq!(st[0].bytes_pinned, 2 * 3 * MIB);
    assert_eq!(d.iommu().pinned(), 2 * 3 * MIB);
}

#[test]
fn a_group_the_kernel_refuses_to_share_is_mirrored_not_dropped() {
    let snap = host(&[
        ("0000:00:05.0", 5),
        ("0000:00:06.0", 6),
        ("0000:00:07.0", 7),
    ]);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0", "0000:00:07.0"],
        Placement::Shared,
        vec![window("buf", 0, 2 * MIB)],
    );
    // 6 sits behind another IOMMU unit than 5 and 7.
    let mut d = Domains::new(sim_with_memlock(&[
        (5, "dmar0"),
        (6, "dmar1"),
        (7, "dmar0"),
    ]));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(r.count(Action::MirrorGroup), 1, "{r}");
    assert!(r
        .notes
        .iter()
        .any(|n| n.message.contains("refused group 6")));
    let live = d.iommu().live_containers();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].groups, vec![5, 7]);
    assert_eq!(live[1].groups, vec![6]);
    assert_eq!(live[0].mappings, live[1].mappings);
    let st = d.status();
    assert!(st[0].mirrored);
    assert_eq!(st[0].containers[1].role, Role::Mirror);
    let text = vfioctl::domain::status::render_text(&st);
    assert!(
        text.contains("dma (shared, mirrored): 2 container(s)"),
        "{text}"
    );
}

#[test]
fn a_window_added_to_a_mirrored_domain_goes_into_every_container() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let mut cfg = config(&["0000:00:05.0", "0000:00:06.0"], Placement::Shared, vec![]);
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar1")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    assert_eq!(d.iommu().pinned(), 0);
    cfg.domains[0].windows.push(window("late", 0x20_0000, MIB));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert!(d
        .iommu()
        .live_containers()
        .iter()
        .all(|c| c.mappings.get(&0x20_0000) == Some(&MIB)));
}

#[test]
fn windows_grow_shrink_and_go_with_the_config() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let mut cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("a", 0, 2 * MIB), window("b", 2 * MIB, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    assert_eq!(d.iommu().pinned(), 4 * MIB);

    // a grows into the range b moves away from.
    cfg.domains[0].windows = vec![window("a", 0, 4 * MIB), window("b", 4 * MIB, MIB)];
    let before = d.iommu().log.len();
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(r.count(Action::ResizeWindow), 2, "{r}");
    assert_eq!(d.iommu().pinned(), 5 * MIB);
    let calls: Vec<&String> = d.iommu().log[before..]
        .iter()
        .filter(|l| l.starts_with("map") || l.starts_with("unmap"))
        .collect();
    assert_eq!(
        calls,
        vec![
            "unmap c0 0x0+0x200000",
            "unmap c0 0x200000+0x200000",
            "map c0 0x0+0x400000",
            "map c0 0x400000+0x100000",
        ]
    );

    cfg.domains[0].windows = vec![window("a", 0, MIB)];
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(r.count(Action::UnmapWindow), 1);
    assert_eq!(d.iommu().pinned(), MIB);
    assert_eq!(d.status()[0].windows.len(), 1);

    cfg.domains[0].windows.clear();
    assert!(d.reconcile(&cfg, &snap).ok());
    assert_eq!(d.iommu().pinned(), 0);
    // The group stays held without windows.
    assert_eq!(d.iommu().live_containers().len(), 1);
}

#[test]
fn a_removed_domain_releases_its_groups() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let mut cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::PerGroup,
        vec![window("a", 0, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    assert_eq!(d.iommu().open.len(), 2);
    cfg.domains.clear();
    let r = d.release_removed(&cfg);
    assert_eq!(r.count(Action::DestroyDomain), 1);
    assert!(d.iommu().open.is_empty());
    assert!(d.iommu().live_containers().is_empty());
    assert_eq!(d.pinned_bytes(), 0);
    assert!(d.status().is_empty());
    use vfioctl::domain::iommu::Iommu;
    assert!(d.iommu_mut().open_group(5).is_ok());
}

#[test]
fn a_device_leaving_the_domain_releases_only_its_group() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let mut cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::Shared,
        vec![window("a", 0, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    cfg.domains[0].devices.retain(|n| n != "dev-0000:00:06.0");
    let r = d.reconcile(&cfg, &snap);
    assert_eq!(r.count(Action::ReleaseGroup), 1, "{r}");
    assert_eq!(d.iommu().open.iter().copied().collect::<Vec<_>>(), vec![5]);
    assert_eq!(d.iommu().pinned(), 2 * MIB);
}

#[test]
fn changing_the_placement_rebuilds_the_domain() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let mut cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::Shared,
        vec![window("a", 0, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    assert_eq!(d.iommu().live_containers().len(), 1);
    cfg.domains[0].placement = Placement::PerGroup;
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(r.count(Action::DestroyDomain), 1);
    assert_eq!(r.count(Action::CreateDomain), 1);
    assert_eq!(d.iommu().live_containers().len(), 2);
    assert_eq!(d.iommu().pinned(), 4 * MIB);
}

#[test]
fn a_window_in_the_msi_hole_is_refused_by_name_and_the_others_are_mapped() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("good", 0, MIB), window("irq", 0xfee0_0000, MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0")]));
    let r = d.reconcile(&cfg, &snap);
    assert!(!r.ok());
    let text = r.to_string();
    assert!(text.contains("window \"irq\""), "{text}");
    assert!(text.contains("reserved region 0xfee00000-0xfeefffff (msi) of IOMMU group 5"));
    let live = d.iommu().live_containers();
    assert_eq!(
        live[0].mappings.keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn a_memlock_shortfall_is_reported_before_mapping_anything() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("big", 0, 64 * MIB)],
    );
    let mut sim = SimIommu::with_groups(&[(5, "dmar0")]);
    sim.may_raise_hard = false; // 8 MiB, unprivileged
    let mut d = Domains::new(sim);
    let r = d.reconcile(&cfg, &snap);
    let text = r.to_string();
    assert!(text.contains("RLIMIT_MEMLOCK is 8 MiB"), "{text}");
    assert!(text.contains("56 MiB short"), "{text}");
    assert!(!d.iommu().log.iter().any(|l| l.starts_with("map")));

    // Privileged: the limit is raised and the window mapped.
    d.iommu_mut().may_raise_hard = true;
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(d.iommu().memlock_soft, 64 * MIB);
    assert_eq!(d.iommu().pinned(), 64 * MIB);
}

#[test]
fn a_busy_group_is_an_error_and_the_rest_is_still_held() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::Shared,
        vec![window("a", 0, MIB)],
    );
    let mut sim = sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]);
    sim.groups.get_mut(&5).unwrap().held_elsewhere = true;
    let mut d = Domains::new(sim);
    let r = d.reconcile(&cfg, &snap);
    let text = r.to_string();
    assert!(text.contains("group 5 cannot be held"), "{text}");
    assert!(text.contains("another process holds the group"), "{text}");
    assert_eq!(d.iommu().live_containers()[0].groups, vec![6]);

    // Once the other process lets go, the next pass takes the group.
    d.iommu_mut().groups.get_mut(&5).unwrap().held_elsewhere = false;
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(d.iommu().live_containers()[0].groups, vec![6, 5]);
}

#[test]
fn a_member_not_yet_on_vfio_is_reported_pending() {
    let mut snap = host(&[("0000:00:05.0", 5)]);
    snap.groups[0].node = None;
    let cfg = config(&["0000:00:05.0"], Placement::Shared, vec![]);
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0")]));
    let r = d.reconcile(&cfg, &snap);
    assert!(
        r.to_string().contains("/dev/vfio/5 does not exist yet"),
        "{r}"
    );
    assert!(d.iommu().live_containers().is_empty());
}

#[test]
fn a_failed_map_leaves_no_window_behind_and_the_next_pass_retries() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("a", 0, MIB)],
    );
    let mut sim = sim_with_memlock(&[(5, "dmar0")]);
    sim.fail_next.insert("map", nix::errno::Errno::ENOSPC);
    let mut d = Domains::new(sim);
    let r = d.reconcile(&cfg, &snap);
    assert!(r.to_string().contains("no DMA mappings left"), "{r}");
    assert!(d.status()[0].windows.is_empty());
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(d.status()[0].windows.len(), 1);
}

#[test]
fn release_all_closes_everything() {
    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::Shared,
        vec![window("a", 0, MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar1")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    d.release_all();
    assert!(d.iommu().live_containers().is_empty());
    assert!(d.iommu().open.is_empty());
}

mod watch_layer {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use vfioctl::watch::domain_layer::DomainLayer;
    use vfioctl::watch::run_loop::{Outcome, Reconciler, Scope};

    /// A binding pass that answers what it is told and counts its calls.
    struct Binding {
        busy: Rc<Cell<bool>>,
        calls: Rc<Cell<u32>>,
    }

    impl Reconciler for Binding {
        fn reconcile(&mut self, _: &Config, _: Scope) -> Outcome {
            self.calls.set(self.calls.get() + 1);
            if self.busy.get() {
                Outcome::Busy
            } else {
                Outcome::Converged {
                    changed: 0,
                    waiting: 0,
                    problems: 0,
                }
            }
        }
    }

    #[test]
    fn domains_are_built_after_a_binding_pass_and_released_before_one() {
        let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
        let mut cfg = config(
            &["0000:00:05.0", "0000:00:06.0"],
            Placement::Shared,
            vec![window("a", 0, MIB)],
        );
        let busy = Rc::new(Cell::new(true));
        let calls = Rc::new(Cell::new(0));
        let binding = Binding {
            busy: busy.clone(),
            calls: calls.clone(),
        };
        let observed = snap.clone();
        let mut layer = DomainLayer::new(
            binding,
            Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")])),
            Box::new(move || Ok(observed.clone())),
        );

        // A binding pass that did not converge: nothing is built on top of it.
        assert_eq!(layer.reconcile(&cfg, Scope::All), Outcome::Busy);
        assert_eq!(calls.get(), 1);
        assert!(layer.domains().held().is_empty());

        busy.set(false);
        match layer.reconcile(&cfg, Scope::All) {
            Outcome::Converged {
                changed, problems, ..
            } => {
                assert_eq!(problems, 0);
                assert!(changed >= 3, "create, attach x2, map: {changed}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(layer.domains().iommu().open.len(), 2);
        // What the service status says it holds.
        let holding = layer.holding();
        assert!(
            holding.starts_with("holding ") && holding.contains(": groups 5 6, 1 window 1024 KiB"),
            "{holding}"
        );

        // Device 6 leaves the domain: its group is released even though the binding pass
        // that follows does not converge, so the release ran before it.
        cfg.domains[0].devices.retain(|n| n != "dev-0000:00:06.0");
        busy.set(true);
        assert_eq!(layer.reconcile(&cfg, Scope::All), Outcome::Busy);
        let open: Vec<u32> = layer.domains().iommu().open.iter().copied().collect();
        assert_eq!(open, vec![5]);

        // The whole domain goes: released before the binding pass too.
        cfg.domains.clear();
        assert_eq!(layer.reconcile(&cfg, Scope::All), Outcome::Busy);
        assert!(layer.domains().iommu().open.is_empty());
        assert!(layer.domains().held().is_empty());
        assert_eq!(layer.holding(), "");
    }
}

mod dry_run_preview {
    use super::*;
    use vfioctl::domain::preview::preview;

    #[test]
    fn with_nothing_held_the_preview_builds_everything() {
        let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
        let cfg = config(
            &["0000:00:05.0", "0000:00:06.0"],
            Placement::PerGroup,
            vec![window("a", 0, MIB)],
        );
        let actions: Vec<Action> = preview(&cfg, &snap, &[]).iter().map(|e| e.action).collect();
        assert_eq!(
            actions,
            vec![
                Action::CreateDomain,
                Action::AttachGroup,
                Action::AttachGroup,
                Action::MapWindow
            ]
        );
    }

    #[test]
    fn after_a_pass_the_preview_is_empty_and_then_shows_each_edit() {
        let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
        let mut cfg = config(
            &["0000:00:05.0", "0000:00:06.0"],
            Placement::Shared,
            vec![window("a", 0, MIB), window("b", 8 * MIB, 2 * MIB)],
        );
        cfg.domains[0].windows[1].hugepages = true; // the simulation has no huge pages
        let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
        assert!(d.reconcile(&cfg, &snap).ok());
        assert_eq!(preview(&cfg, &snap, &d.status()), vec![]);

        cfg.domains[0].windows = vec![window("a", 0, 2 * MIB), window("c", 16 * MIB, MIB)];
        cfg.domains[0].devices.retain(|n| n != "dev-0000:00:06.0");
        let text: Vec<String> = preview(&cfg, &snap, &d.status())
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            text,
            vec![
                "domain \"dma\": release-group group 6",
                "domain \"dma\": unmap-window window \"b\" (IOVA 0x800000..0xa00000, 2 MiB)",
                "domain \"dma\": resize-window resize window \"a\": IOVA 0x0..0x100000 (1 MiB) -> 0x0..0x200000 (2 MiB)",
                "domain \"dma\": map-window window \"c\" (IOVA 0x1000000..0x1100000, 1 MiB)",
            ]
        );

        cfg.domains[0].placement = Placement::PerGroup;
        let actions: Vec<Action> = preview(&cfg, &snap, &d.status())
            .iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions[0], Action::DestroyDomain);
        assert_eq!(actions[1], Action::CreateDomain);
    }
}

#[test]
fn a_resize_whose_unmap_fails_keeps_the_old_mapping_and_retries() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let mut cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("a", 0, MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0")]));
    assert!(d.reconcile(&cfg, &snap).ok());
    cfg.domains[0].windows = vec![window("a", 0, 2 * MIB)];
    d.iommu_mut()
        .fail_next
        .insert("unmap", nix::errno::Errno::EIO);
    let r = d.reconcile(&cfg, &snap);
    assert!(
        r.to_string().contains("its old range is still mapped"),
        "{r}"
    );
    assert_eq!(d.status()[0].windows[0].size, MIB);
    assert_eq!(d.iommu().pinned(), MIB);
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(d.iommu().pinned(), 2 * MIB);
}

/// Adoption and hand-out run over the `Iommu` seam: a domain held on the simulated IOMMU is
/// offered by the broker, handed to "systemd" on exit (not torn down), adopted by the next
/// process from the fds alone, converges with no change, and is offered again.
#[test]
fn a_domain_on_the_simulated_iommu_is_handed_out_adopted_and_handed_out_again() {
    use std::os::fd::AsFd;
    use vfioctl::broker::handout::Handout;
    use vfioctl::domain::adopt::{adopt_passed, layout_memfd, stored_names, Layout};
    use vfioctl::domain::fdstore::Part;

    let snap = host(&[("0000:00:05.0", 5), ("0000:00:06.0", 6)]);
    let cfg = config(
        &["0000:00:05.0", "0000:00:06.0"],
        Placement::Shared,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0"), (6, "dmar0")]));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");

    let offer_of = |d: &Domains<SimIommu>| {
        let handout = Handout::new();
        handout.refresh(d, Some(&snap), cfg.clone(), Default::default());
        let mut offers = handout.lock();
        offers.domains.remove("dma").expect("dma is offered")
    };
    let first = offer_of(&d);
    assert_eq!(first.description.containers, vec![0]);
    let groups: Vec<(u32, usize)> = first
        .description
        .groups
        .iter()
        .map(|g| (g.group, g.container))
        .collect();
    assert_eq!(groups, vec![(5, 0), (6, 0)]);
    assert_eq!(first.description.windows[0].size, 2 * MIB);
    assert_eq!(first.description.devices.len(), 2);
    assert_eq!(first.fds.len(), 4, "container, two groups, one window");

    // Exit with a hand-over: the fds go to the store, the kernel keeps the domain.
    let held = &d.held()["dma"];
    let layout = Layout::of(held);
    let record = layout_memfd(&layout).unwrap();
    let fds = held.fds();
    let passed: Vec<(std::os::fd::OwnedFd, String)> = stored_names("dma", &layout)
        .into_iter()
        .map(|n| {
            let fd = match n.part {
                Part::Layout => record.as_fd(),
                Part::Container(i) => fds.containers[i],
                Part::Group(g) => fds.groups.iter().find(|x| x.0 == g).unwrap().1,
                Part::Window(i) => fds.windows[i].1,
                Part::Iommufd | Part::Device(_) => panic!("not stored for a legacy domain"),
            };
            (fd.try_clone_to_owned().unwrap(), n.encode().unwrap())
        })
        .collect();
    let kernel = d.iommu().clone();
    drop(fds);
    drop(d);

    // The next process adopts from the fds alone.
    let mut next = Domains::new(kernel);
    let adopted = adopt_passed(next.iommu_mut(), passed, &["dma".to_string()], None);
    assert!(adopted.report.errors.is_empty(), "{:?}", adopted.report);
    assert_eq!(adopted.domains.len(), 1);
    next.adopt(adopted.domains);
    assert!(
        next.iommu().log.iter().any(|l| l == "adopt c0"),
        "{:?}",
        next.iommu().log
    );
    let again = next.reconcile(&cfg, &snap);
    assert!(again.ok(), "{again}");
    assert!(again.events.is_empty(), "nothing changes: {again}");
    assert_eq!(next.iommu().live_containers().len(), 1);
    assert_eq!(next.iommu().pinned(), 2 * MIB);

    let second = offer_of(&next);
    assert_eq!(second.description, first.description);
    assert_eq!(second.fds.len(), 4);
}

/// Windows are capped against the host's memory (MemTotal): growth past three quarters of it
/// is refused by name, with the figures, and nothing is mapped for it; what fits is mapped.
#[test]
fn windows_beyond_the_hosts_memory_are_refused_with_the_figures() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let mut sim = sim_with_memlock(&[(5, "dmar0")]);
    sim.mem_total = Some(8 * MIB);
    let mut d = Domains::new(sim);
    let too_big = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("big", 0x10_0000, 8 * MIB)],
    );
    let r = d.reconcile(&too_big, &snap);
    assert_eq!(r.errors.len(), 1, "{r}");
    let text = format!("{r}");
    assert!(
        text.contains("big") && text.contains("not mapped"),
        "{text}"
    );
    assert!(text.contains("three quarters"), "{text}");
    assert!(text.contains("8.0 MiB") || text.contains("8 MiB"), "{text}");
    assert_eq!(d.iommu().pinned(), 0);

    let fits = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("small", 0x10_0000, 4 * MIB)],
    );
    let r = d.reconcile(&fits, &snap);
    assert!(r.ok(), "{r}");
    assert_eq!(d.iommu().pinned(), 4 * MIB);
}

/// `domain hold --status-file`: each held fd is listed by container index, group id and
/// window name (the VM suite's `domains` scenario follows them to the memfd).
#[test]
fn the_hold_status_names_each_fd_by_group_and_window() {
    let snap = host(&[("0000:00:05.0", 5)]);
    let cfg = config(
        &["0000:00:05.0"],
        Placement::Shared,
        vec![window("buf", 0x10_0000, 2 * MIB)],
    );
    let mut d = Domains::new(sim_with_memlock(&[(5, "dmar0")]));
    let r = d.reconcile(&cfg, &snap);
    assert!(r.ok(), "{r}");
    let status = vfioctl::domain::hold::status_json(1, &d, &r);
    let fds = &status["fds"]["dma"];
    assert!(fds["groups"]["5"].is_i64(), "{status:#}");
    assert!(fds["windows"]["buf"].is_i64(), "{status:#}");
    assert_eq!(fds["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(status["pass"], 1);
}
