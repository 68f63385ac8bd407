//! Fuzzes the early-claim records (`RUN_DIR/early-claims/ADDR`, each holding the override a
//! boot or hot-plug claim replaced) through their real loader: the input is a file name, a NUL,
//! then the file's content. No input may panic; only files named by a PCI address are records;
//! a record that decodes encodes back to one that decodes the same (never "unset" by accident).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use vfioctl::apply::early_claim::records::{decode, encode, record_dir, Records};

fuzz_target!(|data: &[u8]| {
    let (name, content) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"0000:00:03.0"[..], data),
    };
    // A name the file system can hold as one entry of the directory.
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    if name.is_empty() || name.len() > 255 || name.contains('/') || name == "." || name == ".." {
        return;
    }
    let run = common::scratch("early");
    let dir = record_dir(&run);
    let _ = std::fs::remove_dir_all(&dir);
    common::put(&dir, name, content);
    if let Ok(claims) = Records::load(&run) {
        assert!(claims.records.len() <= 1);
        for (address, previous) in &claims.records {
            assert_eq!(address.to_string().parse().ok(), Some(*address));
            if let Some(p) = previous {
                assert!(!p.trim().is_empty());
            }
        }
    }
    if let Ok(previous) = decode(content) {
        assert_eq!(decode(&encode(previous.as_deref())), Ok(previous));
    }
});
