//! The desired-state file (`/etc/vfio.toml`): model, parsing with locations, semantic checks,
//! diagnostics, and the JSON Schema generated from the same types.
//!
//! Pure: reads a string, returns a `Config` or every problem found. Loading the file from disk
//! is the caller's one I/O step (`load`).

pub mod model;

pub use model::*;
