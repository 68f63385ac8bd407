//! Fuzzes the journal (`STATE_DIR/journal.json`) and the in-flight record
//! (`RUN_DIR/inflight.json`) through their real loaders, as a damaged or hand-edited state
//! file reaches them. No input may panic; a record that loads must load again as it is written.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use vfioctl::apply::journal::{InFlight, Journal};

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch("journal");
    common::put(&dir, "journal.json", data);
    common::put(&dir, "inflight.json", data);
    if let Ok(j) = Journal::load(&dir) {
        let taken = j.taken_devices().count();
        // What `save` writes, without its fsyncs (they would cost more than the parse).
        let text = serde_json::to_vec_pretty(&j).expect("a loaded journal serialises");
        common::put(&dir, "journal.json", &text);
        let again = Journal::load(&dir).expect("a saved journal loads");
        assert_eq!(again, j);
        assert_eq!(again.taken_devices().count(), taken);
    }
    if let Ok(Some(f)) = InFlight::load(&dir) {
        let text = serde_json::to_vec_pretty(&f).expect("a loaded record serialises");
        common::put(&dir, "inflight.json", &text);
        assert_eq!(InFlight::load(&dir).expect("loads").as_ref(), Some(&f));
    }
});
