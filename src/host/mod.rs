//! The observed state: snapshot data types, the roots of the host filesystems, and the
//! read-only scanner that fills a snapshot from sysfs, `/dev` and `/proc`.

pub mod roots;
pub mod snapshot;

pub use roots::Roots;
pub use snapshot::*;
