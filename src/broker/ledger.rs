//! Who holds what: the broker publishes its hand-overs as `RUN_DIR/broker.json` after every
//! client (atomically; removed when the broker stops), and `vfioctl status` shows the ones
//! whose process still lives. The broker cannot see a client close its fds, so "holding"
//! means "the process the fds were handed to is alive" (a pid reused since then would count
//! too; the hand-over time tells them apart).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::handout::Handed;
use crate::domain::published::{self, Stamped};
use crate::files::FileError;

pub const FILE_NAME: &str = "broker.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The serving `watch`.
    pub pid: u32,
    pub refused: u64,
    /// Recent hand-overs, oldest first.
    pub handed: Vec<Handed>,
}

pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(FILE_NAME)
}

impl Stamped for Ledger {
    fn pid(&self) -> u32 {
        self.pid
    }
}

/// Writes the ledger atomically and durably (see [`published::write_state`]).
pub fn write(run_dir: &Path, ledger: &Ledger) -> Result<(), FileError> {
    published::write_state(run_dir, FILE_NAME, ledger)
}

pub fn remove(run_dir: &Path) {
    published::remove_state(run_dir, FILE_NAME)
}

/// The ledger of a live broker, with only the hand-overs whose process is alive.
pub fn read_live(run_dir: &Path, proc_root: &Path) -> Option<Ledger> {
    let mut l: Ledger = published::read_state(run_dir, FILE_NAME, proc_root).ok()?;
    l.handed
        .retain(|h| proc_root.join(h.pid.to_string()).exists());
    Some(l)
}

/// The `status` section.
pub fn render_text(l: &Ledger) -> String {
    let mut out = String::new();
    if l.handed.is_empty() {
        let _ = writeln!(
            out,
            "Broker: no client holds a domain ({} refused)",
            l.refused
        );
        return out;
    }
    let _ = writeln!(
        out,
        "Broker: clients holding domains ({} refused):",
        l.refused
    );
    for h in &l.handed {
        // A fresh iommufd (`vfioctl iommufd open`) belongs to no domain.
        let what = if h.domain.is_empty() {
            "(a fresh iommufd)"
        } else {
            h.domain.as_str()
        };
        let _ = writeln!(
            out,
            "  {}: uid {} pid {} ({} fds, handed at {})",
            what, h.uid, h.pid, h.fds, h.at
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_clients_of_a_live_broker_are_shown() {
        let run = tempfile::tempdir().unwrap();
        let proc_root = tempfile::tempdir().unwrap();
        for pid in ["10", "20"] {
            std::fs::create_dir(proc_root.path().join(pid)).unwrap();
        }
        let h = |pid| Handed {
            domain: "dma".into(),
            uid: 1000,
            pid,
            fds: 3,
            at: 5,
        };
        let l = Ledger {
            pid: 10,
            refused: 2,
            handed: vec![h(20), h(30)],
        };
        write(run.path(), &l).unwrap();
        let live = read_live(run.path(), proc_root.path()).unwrap();
        assert_eq!(live.handed, vec![h(20)]);
        let text = render_text(&live);
        assert!(text.contains("dma: uid 1000 pid 20 (3 fds"), "{text}");
        assert!(text.contains("2 refused"), "{text}");
        let fresh = Ledger {
            pid: 10,
            refused: 0,
            handed: vec![Handed {
                domain: String::new(),
                fds: 1,
                ..h(20)
            }],
        };
        let text = render_text(&fresh);
        assert!(
            text.contains("(a fresh iommufd): uid 1000 pid 20 (1 fds"),
            "{text}"
        );
        // A dead broker's ledger is not shown.
        std::fs::remove_dir(proc_root.path().join("10")).unwrap();
        assert_eq!(read_live(run.path(), proc_root.path()), None);
        remove(run.path());
        assert!(!path(run.path()).exists());
    }
}
