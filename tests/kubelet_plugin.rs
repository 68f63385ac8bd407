//! The kubelet device plugin against a kubelet stand-in built from the same vendored
//! `api.proto`: the stand-in serves `Registration` on `kubelet.sock` in a temp directory, then
//! calls the plugin's `ListAndWatch`, `GetPreferredAllocation` and `Allocate` as kubelet does.
//! The plugin runs its real server thread, fed from scans of fake host trees (the real reader).
//!
//! Figures (Allocate p99 over 1000 calls, ListAndWatch latency after a pass) are printed, not
//! asserted; see README.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use vfioctl::config::Config;
use vfioctl::fixtures::{FakeHost, Function};
use vfioctl::host::Snapshot;
use vfioctl::kubelet::api;
use vfioctl::kubelet::api::device_plugin_client::DevicePluginClient;
use vfioctl::kubelet::api::registration_server::{Registration, RegistrationServer};
use vfioctl::kubelet::server::connect_unix;
use vfioctl::kubelet::{Options, Plugin, Publisher};

const WAIT: Duration = Duration::from_secs(10);

/// The stand-in's Registration service: forwards every request to the test.
struct Registrar(mpsc::UnboundedSender<api::RegisterRequest>);

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let r = request.into_inner();
        if r.version != "v1beta1" {
            return Err(Status::invalid_argument("unsupported version"));
        }
        let _ = self.0.send(r);
        Ok(Response::new(api::Empty {}))
    }
}

/// A kubelet stand-in listening on `DIR/kubelet.sock`.
struct Kubelet {
    dir: PathBuf,
    registrations: mpsc::UnboundedReceiver<api::RegisterRequest>,
    stop: Option<oneshot::Sender<()>>,
}

impl Kubelet {
    fn start(dir: &Path) -> Kubelet {
        let socket = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(
                    RegistrationServer::new(Registrar(tx)),
                    UnixListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Kubelet {
            dir: dir.to_path_buf(),
            registrations: rx,
            stop: Some(stop),
        }
    }

    /// Stops like a kubelet restart does: the socket goes away, and kubelet clears the
    /// directory's plugin sockets.
    fn restart(mut self) -> Kubelet {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sock") {
                std::fs::remove_file(p).unwrap();
            }
        }
        Kubelet::start(&self.dir)
    }

    /// The next registration, by resource name; all that arrive within `WAIT`.
    async fn registered(&mut self, resources: &[&str]) -> Vec<api::RegisterRequest> {
        let mut got: Vec<api::RegisterRequest> = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !resources
            .iter()
            .all(|r| got.iter().any(|g| g.resource_name == *r))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.registrations.recv()).await {
                Ok(Some(r)) => got.push(r),
                _ => panic!("no registration of {resources:?} within {WAIT:?}; got {got:?}"),
            }
        }
        got
    }

    /// Connects to a registered plugin, as kubelet does after `Register`.
    async fn plugin(
        &self,
        r: &api::RegisterRequest,
    ) -> DevicePluginClient<tonic::transport::Channel> {
        let options = r.options.unwrap();
        assert!(options.get_preferred_allocation_available);
        assert!(!options.pre_start_required);
        DevicePluginClient::new(connect_unix(&self.dir.join(&r.endpoint)).await.unwrap())
    }
}

/// The fake host: the edu-like pair in group 5 (one unit of two functions), a NIC in group 6
/// on NUMA node 1, another in group 7 on node 0; all on vfio-pci with their nodes.
fn host_tree(dir: &Path, with_nic: bool) -> Snapshot {
    vfioctl::host::scan(&host_roots(dir, with_nic)).unwrap()
}

fn host_roots(dir: &Path, with_nic: bool) -> vfioctl::host::Roots {
    let mut h = FakeHost::new();
    h.vfio_loaded();
    h.add(
        Function::new("0000:05:00.0", 0x1234, 0x11e8, 0x00ff00)
            .driver("vfio-pci")
            .group(5),
    );
    h.add(
        Function::new("0000:05:00.1", 0x1234, 0x11e8, 0x00ff00)
            .driver("vfio-pci")
            .group(5),
    );
    if with_nic {
        h.add(
            Function::new("0000:06:00.0", 0x8086, 0x1889, 0x020000)
                .driver("vfio-pci")
                .group(6)
                .numa_node(1),
        );
        h.group_node(6, 0o600);
    }
    h.add(
        Function::new("0000:07:00.0", 0x8086, 0x1889, 0x020000)
            .driver("vfio-pci")
            .group(7)
            .numa_node(0),
    );
    h.group_node(5, 0o600).group_node(7, 0o600);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    h.write(dir).unwrap()
}

fn config(text: &str) -> Config {
    vfioctl::config::parse_str(text, Path::new("vfio.toml")).unwrap()
}

const CONFIG: &str = r#"
version = 1
[[device]]
name = "pair"
address = "0000:05:00.0"
companions = ["0000:05:00.1"]
[[device]]
name = "nic"
vendor = "8086"
device = "1889"
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    hostdir: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device-plugins");
    std::fs::create_dir(&dir).unwrap();
    Setup {
        hostdir: tmp.path().join("host"),
        dir,
        _tmp: tmp,
    }
}

fn start(dir: &Path) -> (Plugin, Publisher) {
    let mut opts = Options::new(dir.to_path_buf(), PathBuf::from("/dev"));
    opts.check_every = Duration::from_millis(100);
    Plugin::start(opts).unwrap()
}

async fn next_list(stream: &mut Streaming<api::ListAndWatchResponse>) -> Vec<(String, String)> {
    let list = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a list within the wait")
        .expect("the stream is open")
        .unwrap();
    list.devices.into_iter().map(|d| (d.id, d.health)).collect()
}

fn pair(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn a_group_of_two_functions_is_advertised_and_allocated_as_one_unit() {
    let s = setup();
    let mut kubelet = Kubelet::start(&s.dir);
    let (_plugin, mut publisher) = start(&s.dir);
    let host = host_tree(&s.hostdir, true);
    publisher.pass(&config(CONFIG), &host);
    let regs = kubelet
        .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
        .await;
    let reg = regs
        .iter()
        .find(|r| r.resource_name == "vfioctl.io/pair")
        .unwrap();
    assert_eq!(reg.endpoint, "vfioctl-pair.sock");
    let mut client = kubelet.plugin(reg).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:05:00.0", "Healthy")])
    );

    let resp = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["0000:05:00.0".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    assert_eq!(
        c.envs["PCI_RESOURCE_VFIOCTL_IO_PAIR"],
        "0000:05:00.0,0000:05:00.1"
    );
    let nodes: Vec<(&str, &str, &str)> = c
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.host_path.as_str(),
                d.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
            ("/dev/vfio/5", "/dev/vfio/5", "rw")
        ]
    );
    let cdi: Vec<&str> = c.cdi_devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        cdi,
        [
            "vfioctl.io/device=0000:05:00.0",
            "vfioctl.io/device=0000:05:00.1"
        ]
    );

    // Allocate p99 over 1000 calls (reported, not asserted).
    let mut took = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        client
            .allocate(api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest {
                    devices_ids: vec!["0000:05:00.0".into()],
                }],
            })
            .await
            .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    eprintln!(
        "figure: Allocate over a unix socket, 1000 calls: p50 {:?}, p99 {:?}, max {:?}",
        took[500], took[989], took[999]
    );

    // GetPreferredAllocation keeps to one NUMA node: node 1 holds one NIC, node 0 one; with
    // the node-1 unit required, a second unit from node 0 is the only choice; with none
    // required, the lowest node with the most units wins.
    let nic = regs
        .iter()
        .find(|r| r.resource_name == "vfioctl.io/nic")
        .unwrap();
    let mut nic_client = kubelet.plugin(nic).await;
    let pref = nic_client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: vec!["0000:07:00.0".into(), "0000:06:00.0".into()],
                must_include_device_i_ds: vec!["0000:06:00.0".into()],
                allocation_size: 1,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pref.container_responses[0].device_i_ds, ["0000:06:00.0"]);
    let mut nic_stream = nic_client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    let list = next_list(&mut nic_stream).await;
    assert_eq!(
        list,
        pair(&[("0000:06:00.0", "Healthy"), ("0000:07:00.0", "Healthy")])
    );
}

#[tokio::test]
async fn health_follows_hot_unplug_and_config_edits_and_unhealthy_units_are_refused() {
    let s = setup();
    let mut kubelet = Kubelet::start(&s.dir);
    let (_plugin, mut publisher) = start(&s.dir);
    publisher.pass(&config(CONFIG), &host_tree(&s.hostdir, true));
    let regs = kubelet
        .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
        .await;
    let nic = regs
        .iter()
        .find(|r| r.resource_name == "vfioctl.io/nic")
        .unwrap();
    let mut client = kubelet.plugin(nic).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:06:00.0", "Healthy"), ("0000:07:00.0", "Healthy")])
    );

    // Hot-unplug of 06:00.0: the next pass's host no longer has it.
    let unplugged = host_tree(&s.hostdir, false);
    let t = Instant::now();
    publisher.pass(&config(CONFIG), &unplugged);
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:06:00.0", "Unhealthy"), ("0000:07:00.0", "Healthy")])
    );
    eprintln!(
        "figure: ListAndWatch update after a pass: {:?}",
        t.elapsed()
    );
    let refused = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec!["0000:06:00.0".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("0000:06:00.0"), "{refused:?}");

    // A config edit: the NICs now want a variant driver, so they are not ready.
    let edited = CONFIG.replace(
        "device = \"1889\"",
        "device = \"1889\"\ndriver = \"mlx5_vfio_pci\"",
    );
    // (The unplugged unit is no longer carried: the edited entry is a new selection.)
    publisher.pass(&config(&edited), &unplugged);
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:07:00.0", "Unhealthy")])
    );
    // An edit dropping the entry stops serving its resource and removes its socket.
    let dropped = CONFIG
        .split("[[device]]\nname = \"nic\"")
        .next()
        .unwrap()
        .to_string();
    publisher.pass(&config(&dropped), &unplugged);
    let socket = s.dir.join("vfioctl-nic.sock");
    let deadline = Instant::now() + WAIT;
    while socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still there",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.dir.join("vfioctl-pair.sock").exists());
}

#[tokio::test]
async fn it_registers_again_when_kubelet_restarts_or_its_socket_is_deleted() {
    let s = setup();
    let mut kubelet = Kubelet::start(&s.dir);
    let (_plugin, mut publisher) = start(&s.dir);
    let c = config(CONFIG);
    publisher.pass(&c, &host_tree(&s.hostdir, true));
    kubelet
        .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
        .await;

    // Someone deletes the plugin's socket: it is re-created and registered again.
    std::fs::remove_file(s.dir.join("vfioctl-pair.sock")).unwrap();
    let t = Instant::now();
    let again = kubelet.registered(&["vfioctl.io/pair"]).await;
    eprintln!(
        "figure: re-registration after the plugin socket was deleted: {:?}",
        t.elapsed()
    );
    assert!(
        again.iter().all(|r| r.resource_name == "vfioctl.io/pair"),
        "{again:?}"
    );
    let mut client = kubelet.plugin(&again[0]).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:05:00.0", "Healthy")])
    );

    // Kubelet restarts: its socket is re-created and the plugin sockets cleared.
    let mut kubelet = kubelet.restart();
    let t = Instant::now();
    let regs = kubelet
        .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
        .await;
    eprintln!(
        "figure: re-registration after a kubelet restart: {:?}",
        t.elapsed()
    );
    let pair_reg = regs
        .iter()
        .find(|r| r.resource_name == "vfioctl.io/pair")
        .unwrap();
    let mut client = kubelet.plugin(pair_reg).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:05:00.0", "Healthy")])
    );
}

#[tokio::test]
async fn a_restart_of_watch_keeps_the_capacity() {
    let s = setup();
    let mut kubelet = Kubelet::start(&s.dir);
    let c = config(CONFIG);
    let host = host_tree(&s.hostdir, true);
    let (plugin, mut publisher) = start(&s.dir);
    publisher.pass(&c, &host);
    kubelet
        .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
        .await;
    drop(plugin);
    assert!(
        !s.dir.join("vfioctl-pair.sock").exists(),
        "sockets removed on exit"
    );

    // The new watch registers nothing before its first pass: kubelet never sees an empty list.
    let (_plugin, mut publisher) = start(&s.dir);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        kubelet.registrations.try_recv().is_err(),
        "registered before the first pass"
    );
    assert!(!s.dir.join("vfioctl-pair.sock").exists());
    publisher.pass(&c, &host);
    let regs = kubelet
        .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
        .await;
    let nic = regs
        .iter()
        .find(|r| r.resource_name == "vfioctl.io/nic")
        .unwrap();
    let mut client = kubelet.plugin(nic).await;
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    // The same IDs as before the restart, healthy: kubelet's checkpointed allocations match.
    assert_eq!(
        next_list(&mut stream).await,
        pair(&[("0000:06:00.0", "Healthy"), ("0000:07:00.0", "Healthy")])
    );
}

/// Stops a `vfioctl watch` child with SIGTERM (it removes its sockets), killing it if it hangs.
struct Watch(std::process::Child);

impl Watch {
    fn start(s: &Setup, roots: &vfioctl::host::Roots) -> Watch {
        let config = s.hostdir.parent().unwrap().join("vfio.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let state = s.hostdir.parent().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_vfioctl"))
            .arg("watch")
            .arg(format!("--sysfs-root={}", roots.sysfs.display()))
            .arg(format!("--dev-root={}", roots.dev.display()))
            .arg(format!("--proc-root={}", roots.proc.display()))
            .arg(format!("--state-dir={}", state.join("state").display()))
            .arg(format!("--run-dir={}", state.join("run").display()))
            .arg("--config")
            .arg(&config)
            .arg("--kubelet-dir")
            .arg(&s.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Watch(child)
    }

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
        }
    }
}

#[tokio::test]
async fn the_watch_process_serves_the_plugin_and_a_restart_keeps_the_capacity() {
    let s = setup();
    let roots = host_roots(&s.hostdir, true);
    let mut kubelet = Kubelet::start(&s.dir);
    for round in 0..2 {
        let watch = Watch::start(&s, &roots);
        let regs = kubelet
            .registered(&["vfioctl.io/pair", "vfioctl.io/nic"])
            .await;
        let pair_reg = regs
            .iter()
            .find(|r| r.resource_name == "vfioctl.io/pair")
            .unwrap();
        let mut client = kubelet.plugin(pair_reg).await;
        let mut stream = client
            .list_and_watch(api::Empty {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            next_list(&mut stream).await,
            pair(&[("0000:05:00.0", "Healthy")]),
            "round {round}"
        );
        let resp = client
            .allocate(api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest {
                    devices_ids: vec!["0000:05:00.0".into()],
                }],
            })
            .await
            .unwrap()
            .into_inner();
        let nodes: Vec<&str> = resp.container_responses[0]
            .devices
            .iter()
            .map(|d| d.container_path.as_str())
            .collect();
        assert_eq!(nodes, ["/dev/vfio/vfio", "/dev/vfio/5"]);
        watch.stop();
        assert!(
            !s.dir.join("vfioctl-pair.sock").exists(),
            "round {round}: socket left"
        );
    }
}
