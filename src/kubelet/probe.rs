//! `vfioctl kubelet-probe` (hidden, for the VM suite): plays kubelet once on a plugin directory.
//! It serves `Registration` on `DIR/kubelet.sock`, waits for a resource to register, reads the
//! first `ListAndWatch` list, asks `GetPreferredAllocation` for one unit and allocates the
//! first Healthy one, then prints what it got as JSON. The tests' stand-in
//! (tests/kubelet_plugin.rs) does the same in-process and more; this one runs where no Rust
//! test harness does, beside the real kernel.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::api;
use super::api::registration_server::{Registration, RegistrationServer};
use super::server::{connect_unix, KUBELET_SOCKET};

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub resource: String,
    pub endpoint: String,
    /// `(ID, health)` from the first list.
    pub devices: Vec<(String, String)>,
    pub preferred: Vec<String>,
    /// The first Healthy unit's allocation, if any unit was Healthy.
    pub allocated: Option<Allocated>,
}

#[derive(Debug, Serialize)]
pub struct Allocated {
    pub id: String,
    pub envs: std::collections::BTreeMap<String, String>,
    /// `(container path, host path, permissions)`.
    pub devices: Vec<(String, String, String)>,
    pub cdi: Vec<String>,
}

struct Registrar(mpsc::UnboundedSender<api::RegisterRequest>);

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(api::Empty {}))
    }
}

/// Runs the probe for `resource` (`vfioctl.io/<name>`), giving up after `timeout`.
pub fn run(dir: &Path, resource: &str, timeout: Duration) -> Result<Probe, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        tokio::time::timeout(timeout, probe(dir, resource))
            .await
            .map_err(|_| format!("no registration and list of {resource} within {timeout:?}"))?
    })
}

async fn probe(dir: &Path, resource: &str) -> Result<Probe, String> {
    let socket = dir.join(KUBELET_SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(
        RegistrationServer::new(Registrar(tx)),
        UnixListenerStream::new(listener),
    ));
    let reg = loop {
        let r = rx.recv().await.ok_or("the registration server stopped")?;
        if r.resource_name == resource {
            break r;
        }
    };
    let channel = connect_unix(&dir.join(&reg.endpoint))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = api::device_plugin_client::DevicePluginClient::new(channel);
    let mut stream = client
        .list_and_watch(api::Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let list = stream
        .next()
        .await
        .ok_or("ListAndWatch ended without a list")?
        .map_err(|e| e.to_string())?;
    let devices: Vec<(String, String)> =
        list.devices.into_iter().map(|d| (d.id, d.health)).collect();
    let healthy: Vec<String> = devices
        .iter()
        .filter(|(_, h)| h == "Healthy")
        .map(|(id, _)| id.clone())
        .collect();
    let preferred = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: healthy.clone(),
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .container_responses
        .into_iter()
        .flat_map(|c| c.device_i_ds)
        .collect();
    let allocated = match healthy.first() {
        None => None,
        Some(id) => {
            let resp = client
                .allocate(api::AllocateRequest {
                    container_requests: vec![api::ContainerAllocateRequest {
                        devices_ids: vec![id.clone()],
                    }],
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let c = resp
                .container_responses
                .into_iter()
                .next()
                .ok_or("Allocate answered no container")?;
            Some(Allocated {
                id: id.clone(),
                envs: c.envs.into_iter().collect(),
                devices: c
                    .devices
                    .into_iter()
                    .map(|d| (d.container_path, d.host_path, d.permissions))
                    .collect(),
                cdi: c.cdi_devices.into_iter().map(|d| d.name).collect(),
            })
        }
    };
    let _ = std::fs::remove_file(&socket);
    Ok(Probe {
        resource: reg.resource_name,
        endpoint: reg.endpoint,
        devices,
        preferred,
        allocated,
    })
}
