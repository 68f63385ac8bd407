//! The plugin's sockets: a thread with a small single-threaded tokio runtime serving one
//! `DevicePlugin` per resource on `DIR/vfioctl-<name>.sock` and registering each with kubelet
//! (`DIR/kubelet.sock`). Fed by [`Publisher::pass`] from the watch loop's thread through a
//! watch channel: the latest inventory wins, nothing queues.
//!
//! Nothing is served or registered before the first pass has published an inventory, so a
//! restarted `watch` never advertises an empty list (kubelet would drop the capacity to zero).
//! Every `check_every` (and on every new inventory) the manager checks that each plugin socket
//! is still the one it bound (kubelet deletes the directory's sockets when it restarts; someone
//! may delete one by hand) and re-creates it, and that kubelet's socket is the one it registered
//! with, and registers again when it was re-created.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use super::allocate;
use super::api;
use super::api::device_plugin_server::{DevicePlugin, DevicePluginServer};
use super::units::{carry_gone, inventory, Inventory, Resource};
use crate::config::Config;
use crate::host::Snapshot;

/// The API version the plugin speaks.
pub const API_VERSION: &str = "v1beta1";
/// Kubelet's registration socket, in its plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";

/// Where and how the plugin runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kubelet's device plugin directory (`/var/lib/kubelet/device-plugins`).
    pub dir: PathBuf,
    /// Root of `/dev` as the host sees it (the device specs' host paths).
    pub dev_root: PathBuf,
    /// How often sockets are checked (re-registration happens within this).
    pub check_every: Duration,
}

impl Options {
    pub fn new(dir: PathBuf, dev_root: PathBuf) -> Self {
        Options {
            dir,
            dev_root,
            check_every: Duration::from_millis(500),
        }
    }
}

type Shared = Option<Arc<Inventory>>;

/// Feeds the plugin from the watch loop: one call per pass.
pub struct Publisher {
    tx: watch::Sender<Shared>,
    last: Inventory,
    /// The `[[device]]` entries of the last pass, by name: what selects each resource's units.
    entries: BTreeMap<String, EntryKey>,
}

/// What decides which functions an entry yields.
type EntryKey = (crate::config::Selector, String, Vec<crate::pci::PciAddress>);

fn entries(config: &Config) -> BTreeMap<String, EntryKey> {
    config
        .devices
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                (d.selector.clone(), d.driver.clone(), d.companions.clone()),
            )
        })
        .collect()
}

impl Publisher {
    /// Recomputes the units from the config and the host as the pass left it, and hands them
    /// to the plugin (changes reach kubelet's ListAndWatch streams at once).
    pub fn pass(&mut self, config: &Config, host: &Snapshot) {
        let now = entries(config);
        let unchanged = now
            .iter()
            .filter(|(name, key)| self.entries.get(*name) == Some(key))
            .map(|(name, _)| name.clone())
            .collect();
        let next = carry_gone(&self.last, inventory(config, host), &unchanged);
        self.entries = now;
        for (name, r) in &next {
            for (id, u) in &r.units {
                let before = self.last.get(name).and_then(|r| r.units.get(id));
                if before.map(|b| b.healthy) != Some(u.healthy) {
                    match &u.reason {
                        None => {
                            tracing::info!(resource = %r.resource_name(), unit = %id, "unit healthy")
                        }
                        Some(why) => {
                            tracing::info!(resource = %r.resource_name(), unit = %id, "unit unhealthy: {why}")
                        }
                    }
                }
            }
        }
        self.last = next.clone();
        self.tx.send_replace(Some(Arc::new(next)));
    }
}

/// The running plugin; dropping it stops serving and removes its sockets.
pub struct Plugin {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Plugin {
    /// Starts the plugin's thread. It serves nothing until the first [`Publisher::pass`].
    pub fn start(opts: Options) -> std::io::Result<(Plugin, Publisher)> {
        let (tx, rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("kubelet-plugin".into())
            .spawn(move || rt.block_on(manage(opts, rx, stop_rx)))?;
        Ok((
            Plugin {
                stop,
                thread: Some(thread),
            },
            Publisher {
                tx,
                last: Inventory::new(),
                entries: BTreeMap::new(),
            },
        ))
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A file's identity: a re-created socket has a new one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// One resource being served.
struct Served {
    socket: PathBuf,
    socket_id: Option<(u64, u64)>,
    /// The kubelet socket it registered with.
    registered_with: Option<(u64, u64)>,
    stop: watch::Sender<bool>,
    /// A registration failure already logged (not repeated every check).
    complained: bool,
}

impl Served {
    fn shut(self) {
        self.stop.send_replace(true);
        // Only our own socket: a new one in its place belongs to someone else.
        if self.socket_id.is_some() && file_id(&self.socket) == self.socket_id {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

async fn manage(opts: Options, inv: watch::Receiver<Shared>, mut stop: watch::Receiver<bool>) {
    let mut served: BTreeMap<String, Served> = BTreeMap::new();
    // The last error serving each resource, logged once rather than every check.
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(opts.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changed = inv.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = changed.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        let Some(current) = inv.borrow().clone() else {
            continue;
        };
        // Resources the config dropped.
        let gone: Vec<String> = served
            .keys()
            .filter(|n| !current.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(s) = served.remove(&name) {
                tracing::info!("kubelet plugin: vfioctl.io/{name} is no longer configured");
                s.shut();
            }
        }
        let kubelet = opts.dir.join(KUBELET_SOCKET);
        let kubelet_id = file_id(&kubelet);
        for resource in current.values() {
            let entry = served.remove(&resource.name);
            let mut s = match entry {
                Some(s) if s.socket_id.is_some() && file_id(&s.socket) == s.socket_id => s,
                other => {
                    if let Some(old) = other {
                        tracing::info!(
                            "kubelet plugin: {} was removed; serving it again",
                            old.socket.display()
                        );
                        old.shut();
                    }
                    match serve(&opts, resource, &inv) {
                        Ok(s) => {
                            failing.remove(&resource.name);
                            s
                        }
                        Err(e) => {
                            let e = e.to_string();
                            if failing.get(&resource.name) != Some(&e) {
                                tracing::warn!(
                                    "kubelet plugin: cannot serve {} in {} (retrying): {e}",
                                    resource.resource_name(),
                                    opts.dir.display()
                                );
                                failing.insert(resource.name.clone(), e);
                            }
                            continue;
                        }
                    }
                }
            };
            if kubelet_id.is_none() {
                s.registered_with = None;
            } else if s.registered_with != kubelet_id {
                match register(&kubelet, resource).await {
                    Ok(()) => {
                        tracing::info!(
                            "kubelet plugin: registered {} ({} units)",
                            resource.resource_name(),
                            resource.units.len()
                        );
                        s.registered_with = kubelet_id;
                        s.complained = false;
                    }
                    Err(e) if !s.complained => {
                        tracing::warn!(
                            "kubelet plugin: registering {} failed (retrying): {e}",
                            resource.resource_name()
                        );
                        s.complained = true;
                    }
                    Err(_) => {}
                }
            }
            served.insert(resource.name.clone(), s);
        }
    }
    for (_, s) in served {
        s.shut();
    }
    // Give the servers a moment to close their connections.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Binds `DIR/vfioctl-<name>.sock` (replacing a stale one) and serves the resource on it.
fn serve(
    opts: &Options,
    resource: &Resource,
    inv: &watch::Receiver<Shared>,
) -> std::io::Result<Served> {
    let socket = opts.dir.join(resource.socket_name());
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&socket)?;
    let socket_id = file_id(&socket);
    let (stop, stop_rx) = watch::channel(false);
    let service = Service {
        resource: resource.name.clone(),
        inv: inv.clone(),
        dev_root: opts.dev_root.clone(),
        stop: stop_rx.clone(),
    };
    let name = resource.resource_name();
    let mut until = stop_rx;
    tokio::spawn(async move {
        // One service per socket: no router needed.
        let result = Server::builder()
            .serve_with_incoming_shutdown(
                DevicePluginServer::new(service),
                UnixListenerStream::new(listener),
                async move {
                    let _ = until.wait_for(|s| *s).await;
                },
            )
            .await;
        if let Err(e) = result {
            tracing::warn!("kubelet plugin: serving {name} stopped: {e}");
        }
    });
    Ok(Served {
        socket,
        socket_id,
        registered_with: None,
        stop,
        complained: false,
    })
}

/// A gRPC channel over a unix socket (kubelet's, or, in tests, a plugin's).
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

async fn register(kubelet: &Path, resource: &Resource) -> Result<(), String> {
    let channel = connect_unix(kubelet).await.map_err(|e| e.to_string())?;
    let mut client = api::registration_client::RegistrationClient::new(channel);
    let request = api::RegisterRequest {
        version: API_VERSION.into(),
        endpoint: resource.socket_name(),
        resource_name: resource.resource_name(),
        options: Some(options()),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.register(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("kubelet refused: {}", status.message())),
        Err(_) => Err("kubelet did not answer within 5 s".into()),
    }
}

fn options() -> api::DevicePluginOptions {
    api::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// The kubelet's view of a resource's units.
pub fn list(resource: &Resource) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: resource
            .units
            .values()
            .map(|u| api::Device {
                id: u.id.to_string(),
                health: if u.healthy { "Healthy" } else { "Unhealthy" }.into(),
                topology: u.numa_node.map(|n| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: n }],
                }),
            })
            .collect(),
    }
}

struct Service {
    resource: String,
    inv: watch::Receiver<Shared>,
    dev_root: PathBuf,
    /// Ends the ListAndWatch streams when this server stops.
    stop: watch::Receiver<bool>,
}

impl Service {
    fn current(&self) -> Result<Resource, Status> {
        self.inv
            .borrow()
            .as_ref()
            .and_then(|inv| inv.get(&self.resource).cloned())
            .ok_or_else(|| {
                Status::unavailable(format!("vfioctl.io/{} is not configured", self.resource))
            })
    }
}

enum Item {
    List(api::ListAndWatchResponse),
    Stop,
}

type Lists = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = Lists;

    async fn list_and_watch(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let name = self.resource.clone();
        let mut last: Option<api::ListAndWatchResponse> = None;
        let lists = WatchStream::new(self.inv.clone()).filter_map(move |inv| {
            let now = list(inv?.get(&name)?);
            if last.as_ref() == Some(&now) {
                return None;
            }
            last = Some(now.clone());
            Some(Item::List(now))
        });
        let stops = WatchStream::new(self.stop.clone()).filter_map(|s| s.then_some(Item::Stop));
        let stream = lists.merge(stops).map_while(|i| match i {
            Item::List(l) => Some(Ok(l)),
            Item::Stop => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let resource = self.current()?;
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|c| api::ContainerPreferredAllocationResponse {
                device_i_ds: allocate::preferred(
                    &resource,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    usize::try_from(c.allocation_size).unwrap_or(0),
                ),
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let resource = self.current()?;
        let mut container_responses = Vec::new();
        for c in &request.get_ref().container_requests {
            match allocate::allocate(&resource, &c.devices_ids, &self.dev_root) {
                Ok(r) => container_responses.push(r),
                Err(e) => {
                    tracing::warn!("kubelet plugin: allocation refused: {e}");
                    return Err(Status::failed_precondition(e.to_string()));
                }
            }
        }
        Ok(Response::new(api::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}
