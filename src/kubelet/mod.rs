//! The kubelet device plugin (`deviceplugin/v1beta1`, gRPC over unix sockets), served by
//! `vfioctl watch --kubelet-dir DIR`. It owns what Kubernetes is told about the configured
//! devices and what a pod gets for them:
//!
//! - [`units`]: one extended resource per `[[device]]` entry (`vfioctl.io/<name>`), one
//!   allocation unit per IOMMU group, its health from the host as the last pass left it (pure);
//! - [`allocate`]: the answers to `Allocate` (CDI names, device nodes, KubeVirt's
//!   `PCI_RESOURCE_*` variable) and `GetPreferredAllocation` (one NUMA node) (pure);
//! - [`server`]: the sockets, registration and re-registration, on a thread of its own with a
//!   small tokio runtime, fed after every pass by a [`server::Publisher`];
//! - [`probe`]: a one-shot kubelet stand-in for the VM suite (`vfioctl kubelet-probe`, hidden).
//!
//! It sits beside `broker` in the module order: it reads config, host and plan types and is
//! driven from `watch`.

pub mod allocate;
pub mod probe;
pub mod server;
pub mod units;

pub use server::{Options, Plugin, Publisher};

/// The kubelet's device plugin API, generated at build time from the vendored
/// `proto/deviceplugin/v1beta1/api.proto` (servers and clients of both services, so the tests'
/// kubelet stand-in is built from the same definitions).
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("v1beta1");
}
