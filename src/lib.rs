//! vfioctl: declarative VFIO configuration and reconciliation for Linux hosts.
//!
//! The pipeline, one module per stage:
//!
//! 1. [`config`] turns `/etc/vfio.toml` into a checked desired state ([`config::Config`]),
//!    reporting every problem with its location.
//! 2. [`host`] reads the live system (sysfs, `/dev`, `/proc`) into a plain-data
//!    [`host::Snapshot`], or loads one captured earlier from JSON.
//! 3. [`plan`] is a pure function from (desired, observed) to an ordered plan over a
//!    dependency graph of IOMMU groups: closure, safety and ordering decisions live there.
//! 4. [`apply`] runs a plan through the one side-effect seam, [`kernel::Host`], journaling
//!    before each change, verifying after, and undoing on failure.
//! 5. [`watch`] keeps a host converged on hotplug, config edits and signals;
//!    [`domain`] holds IOMMU domains and DMA windows (through the ioctls in [`vfio`]), and
//!    [`broker`] hands them to the users the config names, as file descriptors.
//!
//! 6. Around them, for fleets: [`metrics`] renders the state as Prometheus text (status and
//!    `watch --metrics-dir`), and [`kubelet`] serves the configured groups to Kubernetes as a
//!    device plugin (`watch --kubelet-dir`).
//!
//! [`pci`] holds the PCI identity types every stage shares. [`cli`] only parses arguments into
//! options and dispatches to these stages. `fixtures` (hidden, behind the `testing` feature like
//! the simulated kernel and IOMMU) builds fake sysfs trees and
//! synthetic hosts for tests and benchmarks.

pub mod apply;
pub mod broker;
pub mod cli;
pub mod config;
pub mod domain;
pub mod files;
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub mod fixtures;
pub mod host;
pub mod journald;
pub mod kernel;
pub mod kubelet;
pub mod metrics;
pub mod pci;
pub mod plan;
pub mod vfio;
pub mod watch;
