//! `vfioctl validate`: checks one config file alone (no host is read) and prints every
//! problem, as rustc-style text or `--json`. Exit 0 valid, 1 invalid or unreadable.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::{args, Exit};
use crate::config::{self, Access, Diagnostics, LoadError, Style};

/// Where the config is when no file is named.
pub const DEFAULT_CONFIG: &str = "/etc/vfio.toml";

pub fn run(args: &args::ValidateArgs) -> Exit {
    let path: PathBuf = args
        .file
        .clone()
        .or_else(|| args.config.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    // The one loader; a config others can change is a warning here (the commands that act on
    // it refuse it).
    let checked = match config::load_checked(&path, Access::Warn) {
        Ok(c) => c,
        Err(LoadError::Io(e)) => {
            let message = format!("cannot read {e}");
            if args.json {
                print_json(&serde_json::json!({
                    "file": path,
                    "valid": false,
                    "errors": 1,
                    "warnings": 0,
                    "diagnostics": [{
                        "severity": "error",
                        "message": message,
                        "file": path,
                        "line": null, "column": null, "end_line": null, "end_column": null,
                        "span": null,
                        "hint": "check the path, or name the file: vfioctl validate FILE",
                    }],
                }));
            } else {
                eprintln!("error: {message}");
            }
            return Exit::Failed;
        }
        Err(LoadError::Invalid(d)) => config::Checked {
            config: None,
            diagnostics: d,
        },
    };
    let d = &checked.diagnostics;
    if args.json {
        print_json(&d.to_json());
    } else {
        let style = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            Style::Color
        } else {
            Style::Plain
        };
        eprint!("{}", d.render(style));
        match &checked.config {
            Some(c) => outln!("{}: valid{}", path.display(), summary(c, d)),
            None => eprintln!("{}", failure(&path, d)),
        }
    }
    if checked.config.is_some() {
        Exit::Done
    } else {
        Exit::Failed
    }
}

fn print_json(v: &serde_json::Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn summary(c: &config::Config, d: &Diagnostics) -> String {
    let mut s = format!(
        " ({}, {}, {}, {})",
        plural(c.devices.len(), "device"),
        plural(c.users.len(), "user"),
        plural(c.sriov.len(), "SR-IOV entry").replace("entrys", "entries"),
        plural(c.domains.len(), "domain"),
    );
    if d.warning_count() > 0 {
        s.push_str(&format!(", {}", plural(d.warning_count(), "warning")));
    }
    s
}

fn failure(path: &Path, d: &Diagnostics) -> String {
    let mut s = format!(
        "error: {} is not valid: {}",
        path.display(),
        plural(d.error_count(), "error")
    );
    if d.warning_count() > 0 {
        s.push_str(&format!(", {}", plural(d.warning_count(), "warning")));
    }
    s
}
