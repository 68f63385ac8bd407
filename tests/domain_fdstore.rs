//! The fd store against a stand-in for systemd's notify socket that keeps fds as systemd
//! does (`FDSTORE=1` + `FDNAME=` keeps the message's fds under that name, `FDSTOREREMOVE=1`
//! drops them) and hands them back on "restart", as `LISTEN_FDNAMES` would.

use std::collections::BTreeMap;
use std::io::{IoSliceMut, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use vfioctl::domain::fdstore::{sort, FdStore, Part, StoredName};

/// systemd's side: name -> fds.
struct StandIn {
    sock: UnixDatagram,
    store: BTreeMap<String, Vec<OwnedFd>>,
}

impl StandIn {
    fn drain(&mut self) {
        self.sock.set_nonblocking(true).unwrap();
        loop {
            let mut buf = [0u8; 4096];
            let mut space = nix::cmsg_space!([RawFd; 16]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => panic!("{e}"),
            };
            let mut fds = Vec::new();
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(r) = c {
                    fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
            let n = msg.bytes;
            let text = String::from_utf8(buf[..n].to_vec()).unwrap();
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("FDNAME="))
                .unwrap_or("stored")
                .to_string();
            if text.lines().any(|l| l == "FDSTORE=1") {
                self.store.entry(name).or_default().extend(fds);
            } else if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
                self.store.remove(&name);
            }
        }
    }

    fn hand_back(&mut self) -> Vec<(OwnedFd, String)> {
        std::mem::take(&mut self.store)
            .into_iter()
            .flat_map(|(name, fds)| fds.into_iter().map(move |f| (f, name.clone())))
            .collect()
    }
}

fn file(content: &str) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

fn content(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn stored_domains_come_back_sorted_and_removed_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let mut systemd = StandIn {
        sock: UnixDatagram::bind(&path).unwrap(),
        store: BTreeMap::new(),
    };
    let store = FdStore::at(&path);
    let (c, g, w, other) = (file("c0"), file("g7"), file("w0"), file("gone"));
    let name = |domain: &str, part| StoredName {
        domain: domain.into(),
        part,
    };
    store
        .store(&[
            (name("dma", Part::Container(0)), c.as_fd()),
            (name("dma", Part::Group(7)), g.as_fd()),
            (name("dma", Part::Window(0)), w.as_fd()),
            (name("old", Part::Group(9)), other.as_fd()),
        ])
        .unwrap();
    store.remove(&[name("old", Part::Group(9))]).unwrap();
    systemd.drain();
    // Our own copies go away, as they do when watch exits.
    drop((c, g, w, other));
    let mut back = systemd.hand_back();
    back.push((file("socket").into(), "unrelated".into()));
    let (mut domains, rest) = sort(back);
    assert_eq!(domains.keys().collect::<Vec<_>>(), ["dma"]);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, "unrelated");
    let d = domains.remove("dma").unwrap();
    let got: Vec<String> = d
        .containers
        .into_values()
        .chain(d.groups.into_values())
        .chain(d.windows.into_values())
        .map(content)
        .collect();
    assert_eq!(got, ["c0", "g7", "w0"]);
}

#[test]
fn a_missing_notify_socket_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = FdStore::at(&dir.path().join("none"));
    let f = file("x");
    let err = store
        .store(&[(
            StoredName {
                domain: "dma".into(),
                part: Part::Group(1),
            },
            f.as_fd(),
        )])
        .unwrap_err();
    assert!(err.to_string().contains("notify socket"), "{err}");
}

#[test]
fn a_restart_adopts_wanted_domains_and_drops_the_rest_from_the_store() {
    use vfioctl::domain::adopt::{
        adopt_passed, layout_memfd, Layout, LayoutContainer, LayoutWindow, LAYOUT_VERSION,
    };
    use vfioctl::domain::iommu::Backing;
    use vfioctl::domain::memory::WindowMemory;
    use vfioctl::domain::placement::Role;
    use vfioctl::domain::windows::Window;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let mut systemd = StandIn {
        sock: UnixDatagram::bind(&path).unwrap(),
        store: BTreeMap::new(),
    };
    let store = FdStore::at(&path);
    let name = |domain: &str, part| StoredName {
        domain: domain.into(),
        part,
    };
    let w = Window {
        name: "buf".into(),
        iova: 1 << 20,
        size: 64 << 10,
        hugepages: false,
    };
    let mem = WindowMemory::allocate(&w, std::path::Path::new("/nonexistent")).unwrap();
    std::fs::File::from(mem.fd().try_clone_to_owned().unwrap())
        .write_all(b"kept")
        .unwrap();
    let layout = Layout {
        version: LAYOUT_VERSION,
        placement: "shared".into(),
        backend: vfioctl::plan::backend::Backend::Legacy,
        devices: vec![],
        containers: vec![LayoutContainer {
            role: Role::Shared,
            groups: vec![5],
            ioas: None,
        }],
        windows: vec![LayoutWindow {
            name: w.name.clone(),
            iova: w.iova,
            size: w.size,
            hugepages: false,
        }],
    };
    let layout_fd = layout_memfd(&layout).unwrap();
    let (c, g, old, broken) = (file("c"), file("g"), file("old"), file("broken"));
    store
        .store(&[
            (name("dma", Part::Layout), layout_fd.as_fd()),
            (name("dma", Part::Container(0)), c.as_fd()),
            (name("dma", Part::Group(5)), g.as_fd()),
            (name("dma", Part::Window(0)), mem.fd()),
            (name("old", Part::Group(9)), old.as_fd()),
            // No layout record: cannot be adopted.
            (name("broken", Part::Group(3)), broken.as_fd()),
        ])
        .unwrap();
    systemd.drain();
    drop((c, g, old, broken, layout_fd, mem));

    let wanted = ["dma".to_string(), "broken".to_string()];
    let adopted = adopt_passed(
        &mut vfioctl::domain::linux::LinuxIommu::new(vfioctl::host::Roots::default()),
        systemd.hand_back(),
        &wanted,
        Some(&store),
    );
    assert_eq!(adopted.domains.len(), 1, "{:?}", adopted.report);
    let d = &adopted.domains[0];
    assert_eq!(d.name, "dma");
    assert_eq!(d.groups(), [5]);
    assert_eq!(d.held_windows(), std::slice::from_ref(&w));
    // SAFETY: nothing else writes the memory in this test.
    assert_eq!(&unsafe { d.windows[0].memory.as_slice() }[..4], b"kept");
    assert_eq!(d.windows[0].memory.len(), w.size);
    let text = format!("{:?}", adopted.report);
    assert!(text.contains("no layout record"), "{text}");
    // The store handed everything back; the removals for "old" and "broken" arrive as
    // FDSTOREREMOVE messages, which the stand-in applies to what it holds again.
    systemd
        .store
        .insert("vfioctl.old.group.9".into(), vec![file("x").into()]);
    systemd
        .store
        .insert("vfioctl.broken.group.3".into(), vec![file("y").into()]);
    systemd
        .store
        .insert("vfioctl.dma.group.5".into(), vec![file("z").into()]);
    systemd.drain();
    assert_eq!(
        systemd.store.keys().collect::<Vec<_>>(),
        ["vfioctl.dma.group.5"]
    );
}

#[test]
fn only_changed_domains_are_stored_again_and_released_ones_are_removed() {
    use vfioctl::domain::adopt::{adopt, Layout, LayoutContainer, LayoutWindow, LAYOUT_VERSION};
    use vfioctl::domain::fdstore::Stored;
    use vfioctl::domain::memory::WindowMemory;
    use vfioctl::domain::placement::Role;
    use vfioctl::domain::stored::StoreSync;
    use vfioctl::domain::windows::Window;
    use vfioctl::domain::Report;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let mut systemd = StandIn {
        sock: UnixDatagram::bind(&path).unwrap(),
        store: BTreeMap::new(),
    };
    let store = FdStore::at(&path);
    let w = Window {
        name: "buf".into(),
        iova: 1 << 20,
        size: 64 << 10,
        hugepages: false,
    };
    let mem = WindowMemory::allocate(&w, std::path::Path::new("/nonexistent")).unwrap();
    let layout = Layout {
        version: LAYOUT_VERSION,
        placement: "shared".into(),
        backend: vfioctl::plan::backend::Backend::Legacy,
        devices: vec![],
        containers: vec![LayoutContainer {
            role: Role::Shared,
            groups: vec![5],
            ioas: None,
        }],
        windows: vec![LayoutWindow {
            name: w.name.clone(),
            iova: w.iova,
            size: w.size,
            hugepages: false,
        }],
    };
    let mut parts = Stored::default();
    parts.containers.insert(0, file("c").into());
    parts.groups.insert(5, file("g").into());
    parts.windows.insert(
        0,
        vfioctl::domain::iommu::Backing::fd(&mem)
            .try_clone_to_owned()
            .unwrap(),
    );
    let mut report = Report::default();
    let held = adopt(
        &mut vfioctl::domain::linux::LinuxIommu::new(vfioctl::host::Roots::default()),
        "dma",
        &layout,
        parts,
        &mut report,
    )
    .unwrap();
    let mut domains = BTreeMap::new();
    domains.insert("dma".to_string(), held);

    let mut sync = StoreSync::default();
    assert_eq!(sync.sync(&domains, &store).unwrap(), ["dma"]);
    systemd.drain();
    let keys = |s: &StandIn| s.store.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&systemd),
        [
            "vfioctl.dma.container.0",
            "vfioctl.dma.group.5",
            "vfioctl.dma.layout.0",
            "vfioctl.dma.window.0"
        ]
    );
    // Unchanged: nothing sent.
    assert!(sync.sync(&domains, &store).unwrap().is_empty());
    // A window released: stored again, without it, one fd per name.
    domains.get_mut("dma").unwrap().windows.clear();
    assert_eq!(sync.sync(&domains, &store).unwrap(), ["dma"]);
    systemd.drain();
    assert_eq!(
        keys(&systemd),
        [
            "vfioctl.dma.container.0",
            "vfioctl.dma.group.5",
            "vfioctl.dma.layout.0"
        ]
    );
    assert!(systemd.store.values().all(|fds| fds.len() == 1));
    // The domain released: removed.
    domains.clear();
    assert_eq!(sync.sync(&domains, &store).unwrap(), ["dma"]);
    systemd.drain();
    assert!(systemd.store.is_empty(), "{:?}", keys(&systemd));
}
