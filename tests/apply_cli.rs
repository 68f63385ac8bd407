//! `vfioctl reconcile` (applying) and `vfioctl rollback` end to end, for what needs no real
//! kernel: usage errors, the lock message, an empty journal, and a converged host costing no
//! writes. Applying itself is proven against the simulated kernel (apply_sim, apply_faults)
//! and the real one in the VM suite, not on fake sysfs trees.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn vfioctl(dir: &Path, args: &[&str]) -> Output {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/q35");
    Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--sysfs-root")
        .arg(fixture.join("sys"))
        .arg("--proc-root")
        .arg(fixture.join("proc"))
        .arg("--dev-root")
        .arg(dir.join("dev"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--cdi-dir")
        .arg(dir.join("cdi"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn applying_to_a_snapshot_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = vfioctl(
        dir.path(),
        &["reconcile", "--host", "x.json", "-c", "y.toml"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--dry-run"));
    let o = vfioctl(dir.path(), &["rollback", "--host", "x.json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn rollback_with_an_empty_journal_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = vfioctl(dir.path(), &["rollback"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to roll back"));
}

#[test]
fn a_second_caller_is_told_who_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _held = vfioctl::apply::lock::acquire(&dir.path().join("run"), Duration::ZERO).unwrap();
    let o = vfioctl(dir.path(), &["rollback", "--lock-timeout", "0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("(pid {})", std::process::id())),
        "{}",
        text(&o)
    );
}

#[test]
fn an_empty_config_on_a_host_vfioctl_never_touched_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vfio.toml");
    std::fs::write(&cfg, "version = 1\n").unwrap();
    let o = vfioctl(dir.path(), &["reconcile", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("nothing to do"), "{}", text(&o));
    // Nothing was journaled: no state directory was even needed.
    assert!(!dir.path().join("state/journal.json").exists());
}

#[test]
fn an_invalid_config_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vfio.toml");
    std::fs::write(
        &cfg,
        "version = 1\n[[device]]\nname = \"x\"\naddress = \"zz:00.0\"\n",
    )
    .unwrap();
    let o = vfioctl(dir.path(), &["reconcile", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing was changed"), "{}", text(&o));
    assert!(!dir.path().join("run/lock").exists());
}

#[test]
fn json_output_of_a_pass_with_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vfio.toml");
    std::fs::write(&cfg, "version = 1\n").unwrap();
    let o = vfioctl(
        dir.path(),
        &["reconcile", "--json", "-c", cfg.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["converged"], true);
    assert_eq!(v["actions"].as_array().map(Vec::len), Some(0));
}

#[test]
fn json_output_names_the_holder_when_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vfio.toml");
    std::fs::write(&cfg, "version = 1\n").unwrap();
    let _held = vfioctl::apply::lock::acquire(&dir.path().join("run"), Duration::ZERO).unwrap();
    let o = vfioctl(
        dir.path(),
        &[
            "reconcile",
            "--json",
            "--lock-timeout",
            "0",
            "-c",
            cfg.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["converged"], false);
    assert!(v["error"][0]
        .as_str()
        .unwrap()
        .contains(&format!("(pid {})", std::process::id())));
}
