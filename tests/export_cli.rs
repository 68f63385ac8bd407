//! `vfioctl cdi` and `vfioctl export libvirt` end to end against the VM suite's captured guest
//! (`--host`, like the dry run), and the CDI spec `reconcile` keeps in `--cdi-dir` on a fake host
//! tree (no kernel needed for a host with nothing to change).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn vfioctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--cdi-dir")
        .arg(dir.join("cdi"))
        .args(args)
        .output()
        .expect("vfioctl runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const EDU: &str = r#"version = 1
[[device]]
name = "edu"
address = "0000:00:05.0"
companions = ["0000:00:05.1"]
[[user]]
name = "user"
devices = ["edu"]
"#;

fn setup(config: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("vfio.toml");
    std::fs::write(&cfg, config).expect("config");
    // The captured guest, with the local account its /etc/passwd has (uid 1000 `user`).
    let mut snap: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("tests/fixtures/hosts/vm-q35/expected.json")).expect("fixture"),
    )
    .expect("snapshot");
    snap["accounts"] =
        serde_json::json!({"users": {"user": [1000, 1000]}, "groups": {"user": 1000}});
    let host = dir.path().join("host.json");
    std::fs::write(&host, snap.to_string()).expect("host");
    (dir, cfg.display().to_string(), host.display().to_string())
}

#[test]
fn cdi_and_export_on_a_full_stdout_fail_with_a_message() {
    let (_dir, cfg, host) = setup(EDU);
    for args in [
        vec!["cdi", "-c", &cfg, "--host", &host],
        vec!["export", "libvirt", "-c", &cfg, "--host", &host],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
            .args(&args)
            .stdout(
                std::fs::File::options()
                    .write(true)
                    .open("/dev/full")
                    .expect("/dev/full"),
            )
            .output()
            .expect("vfioctl runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot write the output"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn cdi_prints_the_spec_for_a_snapshot_with_the_snapshots_accounts() {
    let (dir, cfg, host) = setup(EDU);
    let o = vfioctl(dir.path(), &["cdi", "-c", &cfg, "--host", &host]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["kind"], "vfioctl.io/device");
    let names: Vec<&str> = v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["edu", "0000:00:05.0", "0000:00:05.1"]);
    // `user` is uid 1000 in the snapshot's accounts (not this machine's).
    let node = &v["devices"][0]["containerEdits"]["deviceNodes"][1];
    assert_eq!(
        (node["path"].as_str(), node["uid"].as_u64()),
        (Some("/dev/vfio/5"), Some(1000))
    );
    // Printing changes nothing: no spec in --cdi-dir.
    assert!(!dir.path().join("cdi").exists());

    let out = dir.path().join("spec.json");
    let o = vfioctl(
        dir.path(),
        &[
            "cdi",
            "-c",
            &cfg,
            "--host",
            &host,
            "-o",
            out.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stdout.is_empty());
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("written")).expect("JSON");
    assert_eq!(written, v);
}

#[test]
fn cdi_says_what_it_left_out() {
    let (dir, cfg, host) =
        setup("version = 1\n[[device]]\nname = \"nic\"\naddress = \"0000:02:01.0\"\n");
    let o = vfioctl(dir.path(), &["cdi", "-c", &cfg, "--host", &host]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("note: [[device]] `nic`"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_invalid_config_is_refused_with_its_diagnostics() {
    let (dir, cfg, host) = setup("version = 1\n[[device]]\nname = \"x\"\naddress = \"zz\"\n");
    for args in [vec!["cdi"], vec!["export", "libvirt"]] {
        let mut a = args.clone();
        a.extend(["-c", &cfg, "--host", &host]);
        let o = vfioctl(dir.path(), &a);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("is not a valid config"), "{}", text(&o));
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn export_libvirt_prints_unmanaged_hostdevs_for_an_entry() {
    let (dir, cfg, host) = setup(EDU);
    let o = vfioctl(
        dir.path(),
        &["export", "libvirt", "edu", "-c", &cfg, "--host", &host],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.matches("<hostdev mode='subsystem' type='pci' managed='no'>")
            .count(),
        2
    );
    assert!(out.contains("<address domain='0x0000' bus='0x00' slot='0x05' function='0x1'/>"));
    // Without a name: every entry.
    let all = vfioctl(
        dir.path(),
        &["export", "libvirt", "-c", &cfg, "--host", &host],
    );
    assert_eq!(all.stdout, o.stdout, "{}", text(&all));
}

#[test]
fn export_libvirt_refuses_an_unknown_name_and_an_entry_that_hands_out_nothing() {
    let (dir, cfg, host) = setup(EDU);
    let o = vfioctl(
        dir.path(),
        &["export", "libvirt", "gpu", "-c", &cfg, "--host", &host],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no [[device]] named `gpu`; it has: edu"),
        "{}",
        text(&o)
    );

    let (dir, cfg, host) =
        setup("version = 1\n[[device]]\nname = \"nic\"\naddress = \"0000:02:01.0\"\n");
    let o = vfioctl(
        dir.path(),
        &["export", "libvirt", "nic", "-c", &cfg, "--host", &host],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stdout.is_empty());
    assert!(
        text(&o).contains("`nic` hands out no function"),
        "{}",
        text(&o)
    );
}

/// `vfioctl` on the fake q35 tree (nothing on vfio-pci, nothing to change for these configs).
fn on_fake_host(dir: &Path, args: &[&str]) -> Output {
    let tree = fixture("tests/fixtures/hosts/q35");
    let mut all = vec![
        "--sysfs-root".to_string(),
        tree.join("sys").display().to_string(),
        "--proc-root".to_string(),
        tree.join("proc").display().to_string(),
        "--dev-root".to_string(),
        dir.join("dev").display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    vfioctl(dir, &refs)
}

fn stale_spec(dir: &Path) -> PathBuf {
    let cdi = dir.join("cdi");
    std::fs::create_dir_all(&cdi).expect("cdi dir");
    let spec = cdi.join("vfioctl.json");
    std::fs::write(&spec, "{\"cdiVersion\": \"0.5.0\"}\n").expect("stale spec");
    spec
}

#[test]
fn a_pass_that_hands_out_nothing_removes_a_stale_spec() {
    let (dir, cfg, _) = setup("version = 1\n");
    let spec = stale_spec(dir.path());
    let o = on_fake_host(dir.path(), &["reconcile", "-c", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!spec.exists(), "the pass left {}", spec.display());
    // The dry run and `cdi` change nothing.
    let spec = stale_spec(dir.path());
    let o = on_fake_host(dir.path(), &["reconcile", "--dry-run", "-c", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = on_fake_host(dir.path(), &["cdi", "-c", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(spec.exists());
}

#[test]
fn rollback_removes_the_spec_and_its_dry_run_says_it_would() {
    let (dir, _, _) = setup("version = 1\n");
    let spec = stale_spec(dir.path());
    let o = on_fake_host(dir.path(), &["rollback", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("would remove the CDI spec"),
        "{}",
        text(&o)
    );
    assert!(spec.exists());
    let o = on_fake_host(dir.path(), &["rollback"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("removed the CDI spec"), "{}", text(&o));
    assert!(!spec.exists());
}

#[test]
fn a_spec_that_cannot_be_kept_fails_the_reconcile() {
    let (dir, cfg, _) = setup("version = 1\n");
    // Something that is not a file where the spec goes, and a config that hands out nothing:
    // removing it fails.
    std::fs::create_dir_all(dir.path().join("cdi/vfioctl.json/x")).expect("dir");
    let o = on_fake_host(dir.path(), &["reconcile", "-c", &cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("the CDI spec in"), "{}", text(&o));
}
