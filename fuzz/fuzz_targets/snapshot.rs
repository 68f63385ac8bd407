//! Fuzzes `--host FILE` snapshots through the real loader (`load_snapshot`), then what every
//! command does with a loaded one first: group viability and writing it back. No input may
//! panic; a snapshot that loads must survive a write and a load.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use vfioctl::host::{load_snapshot, snapshot_json};

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch("snapshot");
    common::put(&dir, "host.json", data);
    let path = dir.join("host.json");
    let Ok(snap) = load_snapshot(&path) else {
        return;
    };
    for g in &snap.groups {
        let _ = snap.viability(g.id);
    }
    let _ = snap.by_address();
    let text = snapshot_json(&snap);
    common::put(&dir, "again.json", text.as_bytes());
    let again = load_snapshot(&dir.join("again.json")).expect("a written snapshot loads");
    assert_eq!(snapshot_json(&again), text);
});
