//! Metrics: vfioctl's state as Prometheus text (exposition format 0.0.4, which Debian's
//! `promtool` and node_exporter's textfile collector read), for `vfioctl status --format
//! openmetrics` and `vfioctl watch --metrics-dir DIR`.
//!
//! - [`render`]: pure, from plain data ([`Sample`]: the host snapshot, the config and the plan
//!   still pending against it, the held domains, the watch loop's pass figures) to text. Every
//!   family has HELP and TYPE, counters are declared under their `_total` name, and no sample
//!   carries a timestamp (node_exporter refuses them in textfiles).
//! - [`textfile`]: writes `DIR/vfioctl.prom` atomically (through [`crate::files`]), the
//!   textfile collector's convention.
//! - [`counters`]: process-wide event counts that threads above this layer bump (the hot-plug
//!   claimer); read into [`WatchStats`] when a sample is taken.
//!
//! It sits beside `apply` in the module order: it reads config, host and plan types, and the
//! held domains' status, and knows nothing of the watch loop or the broker.

pub mod counters;
mod render;
pub mod textfile;

pub use render::{render, Sample, WatchStats};
