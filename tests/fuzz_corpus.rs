//! The fuzz corpora as regression tests on the stable toolchain: every committed input under
//! `fuzz/seeds/TARGET` (the seeds, and every input a fuzz run found crashing, saved there once
//! fixed) goes through the same parser as `fuzz/fuzz_targets/TARGET.rs`, and must neither panic
//! nor break the target's invariant. `fuzz/run` does the fuzzing itself (nightly).

use std::path::{Path, PathBuf};

use vfioctl::apply::early_claim::records::{self, record_dir, Records};
use vfioctl::apply::journal::{InFlight, Journal};
use vfioctl::broker::protocol::{parse_request, parse_response};
use vfioctl::config::file::load_bytes;
use vfioctl::host::{load_snapshot, snapshot_json};
use vfioctl::vfio::iommu_info::decode;
use vfioctl::watch::hotplug_claim::parse_added;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no inputs under {}", dir.display());
    v
}

#[test]
fn config_inputs_parse_to_located_diagnostics() {
    let mut valid = 0;
    for (path, bytes) in inputs("config") {
        let checked = load_bytes(Path::new("fuzz.toml"), &bytes);
        let source = String::from_utf8_lossy(&bytes);
        let d = &checked.diagnostics;
        assert_eq!(
            checked.config.is_some(),
            !d.has_errors(),
            "{}",
            path.display()
        );
        for item in d.items() {
            let loc = item.location.as_ref().expect("located");
            assert!(loc.span.end <= source.len(), "{}", path.display());
        }
        valid += usize::from(checked.config.is_some());
    }
    assert!(valid >= 4, "the example configs among the seeds are valid");
}

#[test]
fn broker_inputs_parse_or_are_refused() {
    let mut requests = 0;
    for (path, bytes) in inputs("broker_request") {
        if let Ok(r) = parse_request(&bytes) {
            assert!(r.ask().is_ok(), "{}", path.display());
            requests += 1;
        }
        if let Some((n, rest)) = bytes.split_first() {
            let _ = parse_response(rest, usize::from(*n));
        }
    }
    assert!(requests >= 1);
}

#[test]
fn journal_inputs_load_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut loaded = 0;
    for (_, bytes) in inputs("journal") {
        std::fs::write(dir.path().join("journal.json"), &bytes).unwrap();
        std::fs::write(dir.path().join("inflight.json"), &bytes).unwrap();
        loaded += usize::from(Journal::load(dir.path()).is_ok());
        loaded += usize::from(matches!(InFlight::load(dir.path()), Ok(Some(_))));
    }
    assert!(loaded >= 2, "the journal and in-flight seeds load");
}

#[test]
fn early_claim_inputs_load_or_are_refused() {
    let mut records = 0;
    for (path, bytes) in inputs("early_claims") {
        let (name, content) = match bytes.iter().position(|b| *b == 0) {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (&b"0000:00:03.0"[..], &bytes[..]),
        };
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            continue;
        }
        let run = tempfile::tempdir().unwrap();
        let dir = record_dir(run.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), content).unwrap();
        if let Ok(c) = Records::load(run.path()) {
            assert!(c.records.len() <= 1, "{}", path.display());
            records += c.records.len();
        }
        if let Ok(previous) = records::decode(content) {
            let again = records::decode(&records::encode(previous.as_deref()));
            assert_eq!(again, Ok(previous), "{}", path.display());
        }
    }
    assert!(
        records >= 2,
        "the well-formed seeds named by an address are records"
    );
}

#[test]
fn snapshot_inputs_load_and_write_back_as_they_were_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut loaded = 0;
    for (path, bytes) in inputs("snapshot") {
        let file = dir.path().join("host.json");
        std::fs::write(&file, &bytes).unwrap();
        let Ok(snap) = load_snapshot(&file) else {
            continue;
        };
        for g in &snap.groups {
            let _ = snap.viability(g.id);
        }
        let text = snapshot_json(&snap);
        std::fs::write(&file, &text).unwrap();
        let again = load_snapshot(&file).unwrap();
        assert_eq!(snapshot_json(&again), text, "{}", path.display());
        loaded += 1;
    }
    assert!(loaded >= 1);
}

#[test]
fn uevent_inputs_yield_only_pci_adds() {
    let mut adds = 0;
    for (path, bytes) in inputs("uevent") {
        if let Some(e) = parse_added(&bytes) {
            assert!(bytes.starts_with(b"add@"), "{}", path.display());
            assert!(e.driver.is_none());
            adds += 1;
        }
    }
    assert_eq!(adds, 1, "one seed is a PCI add");
}

#[test]
fn iommu_info_inputs_decode_within_the_buffer() {
    let mut decoded = 0;
    for (path, bytes) in inputs("iommu_info") {
        if let Ok(info) = decode(&bytes) {
            if let Some(r) = &info.iova_ranges {
                assert!(r.len() * 16 <= bytes.len(), "{}", path.display());
            }
            decoded += 1;
        }
    }
    assert!(decoded >= 2, "the well-formed seeds decode");
}
