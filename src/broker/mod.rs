//! The fd broker (issue 10): hands a domain `watch` holds to an unprivileged process named in
//! the config, over a unix socket (`RUN_DIR/broker.sock`), by passing the container, group and
//! window memfd descriptors (on the iommufd backend: the iommufd, the bound and attached device
//! cdevs and the window memfds) with `SCM_RIGHTS` plus a small versioned JSON description.
//! It also hands a freshly opened iommufd, tied to no domain, to the users the config names
//! (`vfioctl iommufd open`, for a VMM that binds its own devices; issue 19).
//!
//! - [`protocol`]: the wire format (request, description, refusal), size-bounded, pure;
//! - [`access`]: who may open which domain, and who may have a fresh iommufd (pure: config +
//!   resolved accounts + caller);
//! - [`handout`]: what `watch` offers after each pass (duplicated fds, descriptions), shared
//!   with the server thread through one lock;
//! - [`server`]: the socket, `SO_PEERCRED`, per-client timeouts, on its own thread;
//! - [`ledger`]: who holds what, published for `vfioctl status`;
//! - [`client`]: the library side: connect, ask, receive the fds.

pub mod access;
pub mod client;
pub mod handout;
pub mod ledger;
pub mod protocol;
pub mod server;

/// The socket's file name under the run directory.
pub const SOCKET_NAME: &str = "broker.sock";

/// The socket's path under `run_dir`.
pub fn socket_path(run_dir: &std::path::Path) -> std::path::PathBuf {
    run_dir.join(SOCKET_NAME)
}
