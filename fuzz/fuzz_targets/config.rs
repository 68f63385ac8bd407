//! Fuzzes the whole config front end from raw file bytes, as `validate`, `reconcile` and a
//! `watch` reload read them: UTF-8 decoding, TOML parsing, unknown-key recovery, the semantic
//! pass, and both renderings of the diagnostics. No input may panic; every error must be
//! located inside the source.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vfioctl::config::{check_str, Style};

fuzz_target!(|data: &[u8]| {
    // Bytes that are not UTF-8 must be refused before the parser; the parser must hold for
    // every text that is.
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let checked = check_str(source, Path::new("fuzz.toml"));
    let d = &checked.diagnostics;
    // A config is returned exactly when there is no error.
    assert_eq!(checked.config.is_some(), !d.has_errors());
    for item in d.items() {
        let loc = item
            .location
            .as_ref()
            .expect("config diagnostics are located");
        assert!(loc.span.start <= loc.span.end && loc.span.end <= source.len());
        assert!(loc.line >= 1 && loc.column >= 1);
    }
    let _ = d.render(Style::Plain);
    let _ = d.to_json();
});
