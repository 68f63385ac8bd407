//! Case folders: `tests/cases/NAME/` holds `host.json` (a snapshot), `vfio.toml` (the config),
//! optionally `taken.json` (what the journal says vfioctl took earlier), and the expected plan
//! as insta snapshots (`expected_plan.snap` text, `expected_json.snap` JSON) plus
//! `expected-exit` (the exit status of `vfioctl reconcile --dry-run --host host.json`).
//!
//! Every case also checks that re-planning against the simulated result is empty.

use std::path::{Path, PathBuf};
use std::process::Command;

use vfioctl::plan::{self, Context, Taken};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/cases")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("host.json").exists())
        .collect();
    out.sort();
    out
}

fn context(dir: &Path) -> Context {
    let taken: Vec<Taken> = match std::fs::read_to_string(dir.join("taken.json")) {
        Ok(t) => serde_json::from_str(&t).expect("taken.json"),
        Err(_) => Vec::new(),
    };
    Context {
        taken,
        ..Default::default()
    }
}

#[test]
fn every_case_plans_as_expected_and_converges() {
    let all = cases();
    assert!(all.len() >= 12, "case folders missing: {all:?}");
    for dir in all {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let config = vfioctl::config::load(&dir.join("vfio.toml"))
            .unwrap_or_else(|e| panic!("{name}: vfio.toml: {e}"));
        let snap = vfioctl::host::load_snapshot(&dir.join("host.json"))
            .unwrap_or_else(|e| panic!("{name}: host.json: {e}"));
        let ctx = context(&dir);
        let p = plan::plan_with(&config, &snap, &ctx);

        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(&dir);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_input_file(dir.join("vfio.toml"));
        settings.bind(|| {
            insta::assert_snapshot!("expected_plan", plan::render::text(&p));
            insta::assert_snapshot!("expected_json", plan::render::json(&p));
        });

        let after = plan::simulate(&snap, &p);
        let again = plan::plan_with(&config, &after, &ctx);
        assert!(
            again.is_empty(),
            "{name}: re-plan after the simulated apply is not empty:\n{}",
            plan::render::text(&again)
        );
    }
}

#[test]
fn every_case_has_the_expected_exit_status() {
    let bin = env!("CARGO_BIN_EXE_vfioctl");
    for dir in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expected: i32 = std::fs::read_to_string(dir.join("expected-exit"))
            .unwrap_or_else(|_| panic!("{name}: expected-exit missing"))
            .trim()
            .parse()
            .expect("expected-exit holds a number");
        let run = |extra: &[&str]| {
            let mut cmd = Command::new(bin);
            cmd.args(["reconcile", "--dry-run", "--config"])
                .arg(dir.join("vfio.toml"))
                .arg("--host")
                .arg(dir.join("host.json"))
                .args(extra)
                .env("VFIOCTL_LOG", "off");
            cmd.output().expect("run vfioctl")
        };
        let out = run(&[]);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{name}: stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // --json is one JSON document with the fixed names.
        let json = run(&["--json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
        for a in v["actions"].as_array().expect("actions") {
            assert!(a["action"].is_string(), "{name}: {a}");
            if a["action"] != "load-module" {
                assert!(a["device"].is_string(), "{name}: {a}");
            }
            if a["action"] == "bind" {
                assert!(a["driver"].is_string(), "{name}: {a}");
            }
        }
        // --check: 3 when changes are pending on a realisable plan.
        let check = run(&["--check"]);
        let pending = !v["actions"].as_array().unwrap().is_empty();
        let want = match (expected, pending) {
            (0, true) => 3,
            (e, _) => e,
        };
        assert_eq!(check.status.code(), Some(want), "{name}: --check");
    }
}

#[test]
fn bad_device_argument_is_a_usage_error() {
    let dir = cases().into_iter().next().expect("a case");
    let out = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args([
            "reconcile",
            "--dry-run",
            "--device",
            "not-an-address",
            "--config",
        ])
        .arg(dir.join("vfio.toml"))
        .arg("--host")
        .arg(dir.join("host.json"))
        .output()
        .expect("run vfioctl");
    assert_eq!(out.status.code(), Some(2));
}
