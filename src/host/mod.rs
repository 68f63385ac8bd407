//! The observed state: snapshot data types, the roots of the host filesystems, the
//! read-only scanner that fills a snapshot from sysfs, `/dev` and `/proc`, and the human
//! status view of a snapshot.

pub mod accounts;
pub mod observe;
pub mod partial;
pub mod roots;
pub mod scan;
pub mod snapshot;
pub mod status;

pub use observe::{load_snapshot, observe, snapshot_json, HostError};
pub use roots::Roots;
pub use scan::{scan, scan_closure, ScanError};
pub use snapshot::*;
