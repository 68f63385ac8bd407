//! The desired-state file (`/etc/vfio.toml`): model, parsing with locations, semantic checks,
//! diagnostics, and the JSON Schema generated from the same types.
//!
//! Pure: reads a string, returns a `Config` or every problem found. Loading the file from disk
//! is the caller's one I/O step (`load`).
//!
//! The stages: [`raw`] (file-shaped serde types) <- [`parse`] (TOML syntax, unknown keys) ->
//! [`check`] (meaning, cross-entry rules) -> [`model`]; [`diagnostic`] renders what was found.

pub mod check;
pub mod diagnostic;
pub mod file;
pub mod model;
pub mod parse;
pub mod raw;
pub mod schema;
mod similar;
pub mod value;

use std::path::Path;

pub use diagnostic::{Diagnostic, Diagnostics, Location, Severity, Style};
pub use file::{
    file_permission_warning, load, load_bytes, load_checked, load_with, Access, LoadError,
    MAX_CONFIG_BYTES,
};
pub use model::*;

/// The outcome of checking one config text: the config when it has no errors, and every
/// diagnostic (errors and warnings) in file order.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Option<Config>,
    pub diagnostics: Diagnostics,
}

/// Checks a config text; `path` is only used in messages. Reports every problem found.
pub fn check_str(source: &str, path: &Path) -> Checked {
    let mut rep = diagnostic::Reporter::new(path, source);
    let config = parse::read_raw(&mut rep).and_then(|raw| check::check(&raw, &mut rep));
    let diagnostics = rep.finish();
    let config = if diagnostics.has_errors() {
        None
    } else {
        config
    };
    Checked {
        config,
        diagnostics,
    }
}

/// Parses and checks a config text; `path` is only used in messages. On error, every problem
/// found (errors and warnings). Warnings of a valid config are dropped: use [`check_str`] to
/// see them.
pub fn parse_str(source: &str, path: &Path) -> Result<Config, Diagnostics> {
    let checked = check_str(source, path);
    checked.config.ok_or(checked.diagnostics)
}
