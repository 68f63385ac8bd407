//! Fuzzes the whole config front end from raw file bytes, as `validate`, `reconcile` and a
//! `watch` reload read them: UTF-8 decoding, TOML parsing, unknown-key recovery, the semantic
//! pass, and both renderings of the diagnostics. No input may panic; every error must be
//! located inside the source.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vfioctl::config::file::load_bytes;
use vfioctl::config::Style;

fuzz_target!(|data: &[u8]| {
    // The loader every command uses, from raw bytes: bytes that are not UTF-8 give a located
    // error (in the text as shown, invalid bytes replaced), never a panic.
    let checked = load_bytes(Path::new("fuzz.toml"), data);
    let source = String::from_utf8_lossy(data);
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
