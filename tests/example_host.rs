//! The README's main job: `reconcile --dry-run` of an example config against the bundled example
//! host (`examples/hosts/workstation.json`), on a machine without an IOMMU. It must compute a
//! plan (exit 0), resolve the config's users from the snapshot's account table, and refuse
//! nothing the workstation can give.

use std::process::Command;

fn dry_run(config: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(["reconcile", "--dry-run", "--config", config])
        .args(["--host", "examples/hosts/workstation.json"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run vfioctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gpu_example_plans_against_the_bundled_host() {
    let (code, stdout, stderr) = dry_run("examples/gpu-passthrough.toml", &["--json"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("plan JSON");
    let actions = v["actions"].as_array().expect("actions array");
    let binds: Vec<(&str, &str)> = actions
        .iter()
        .filter(|a| a["action"] == "bind")
        .map(|a| {
            (
                a["device"].as_str().unwrap_or_default(),
                a["driver"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    // The GPU, its audio companion and the Renesas USB controller (by vendor:device).
    assert_eq!(
        binds,
        vec![
            ("0000:01:00.0", "vfio-pci"),
            ("0000:01:00.1", "vfio-pci"),
            ("0000:04:00.0", "vfio-pci")
        ]
    );
    // Owner resolved from the snapshot's accounts (libvirt-qemu = 64055:994 there), not from
    // this machine, which has no such user.
    assert!(stdout.contains("64055"), "{stdout}");
}

#[test]
fn check_reports_pending_changes() {
    let (code, _, stderr) = dry_run("examples/gpu-passthrough.toml", &["--check"]);
    assert_eq!(code, 3, "{stderr}");
}

#[test]
fn dry_run_json_lists_domain_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vfio.toml");
    std::fs::write(
        &config,
        r#"version = 1
[[device]]
name = "gpu"
address = "01:00.0"
companions = ["01:00.1"]
[[domain]]
name = "vm1"
devices = ["gpu"]
[[domain.window]]
name = "ram"
iova = 0
size = "2GiB"
"#,
    )
    .expect("write config");
    let path = config.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = dry_run(path, &["--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("plan JSON");
    let kinds: Vec<(&str, &str)> = v["domain_actions"]
        .as_array()
        .expect("domain_actions")
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or_default(),
                a["domain"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kinds.first(), Some(&("create-domain", "vm1")), "{kinds:?}");
    assert!(kinds.contains(&("attach-group", "vm1")), "{kinds:?}");
    assert!(kinds.contains(&("map-window", "vm1")), "{kinds:?}");
    // Domain changes count as pending for --check.
    let (code, _, _) = dry_run(path, &["--check"]);
    assert_eq!(code, 3);
}
