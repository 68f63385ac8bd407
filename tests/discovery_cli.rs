//! `vfioctl status` and `vfioctl snapshot` end to end on fake trees: the human view, the JSON
//! contract, the `--host` round trip, the no-IOMMU statement and failures.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use vfioctl::fixtures::vm;
use vfioctl::host::Roots;

fn vfioctl(roots: &Roots, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--sysfs-root")
        .arg(&roots.sysfs)
        .arg("--dev-root")
        .arg(&roots.dev)
        .arg("--proc-root")
        .arg(&roots.proc)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn without_root(text: &str, root: &Path) -> String {
    text.replace(&root.display().to_string(), "<root>")
}

#[test]
fn status_view_of_q35() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = vm::q35();
    h.vfio_loaded().group_node(5, 0o600);
    for f in &mut h.functions {
        if f.address.bus == 0 && f.address.device == 5 {
            f.driver = Some("vfio-pci".into());
        }
    }
    let roots = h.write(dir.path()).unwrap();
    let o = vfioctl(&roots, &["status"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = without_root(&stdout(&o), dir.path());
    // The node's owner is whoever ran the test; keep the snapshot independent of it.
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let text = text.replace(&format!("owner uid {uid} gid {gid}"), "owner uid U gid G");
    insta::assert_snapshot!("q35_status", text);
}

#[test]
fn status_json_carries_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let roots = vm::q35().write(dir.path()).unwrap();
    let o = vfioctl(&roots, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 14);
    let nvme = devices
        .iter()
        .find(|d| d["address"] == "0000:01:00.0")
        .unwrap();
    assert_eq!(nvme["vendor"], "1b36");
    assert_eq!(nvme["device"], "0010");
    assert_eq!(nvme["class"], "010802");
    assert_eq!(nvme["driver"], "nvme");
    assert_eq!(nvme["driver_override"], Value::Null);
    assert_eq!(nvme["iommu_group"], 8);
    let edu = devices
        .iter()
        .find(|d| d["address"] == "0000:00:05.0")
        .unwrap();
    assert_eq!(edu["driver"], Value::Null);
    let g4 = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == 4)
        .unwrap();
    assert_eq!(
        g4["devices"],
        serde_json::json!(["0000:00:04.0", "0000:02:01.0", "0000:02:02.0"])
    );
}

#[test]
fn snapshot_then_status_host_gives_the_same_view() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = vm::q35();
    h.vfio_loaded().group_node(4, 0o660);
    let roots = h.write(&dir.path().join("host")).unwrap();
    let file = dir.path().join("host.json");
    let o = vfioctl(&roots, &["snapshot", "-o", file.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    let to_stdout = vfioctl(&roots, &["snapshot"]);
    assert_eq!(stdout(&to_stdout), std::fs::read_to_string(&file).unwrap());

    let live = vfioctl(&roots, &["status"]);
    // Point the roots somewhere empty: `--host` must not touch them.
    let nowhere = Roots::under(&dir.path().join("nowhere"));
    let from_file = vfioctl(&nowhere, &["status", "--host", file.to_str().unwrap()]);
    assert_eq!(from_file.status.code(), Some(0));
    assert_eq!(stdout(&live), stdout(&from_file));
    assert!(stdout(&live).contains("mode 0660"));
    let json_again = vfioctl(
        &nowhere,
        &["status", "--json", "--host", file.to_str().unwrap()],
    );
    assert_eq!(stdout(&json_again), std::fs::read_to_string(&file).unwrap());
}

#[test]
fn no_iommu_host_gets_the_statement_and_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = vm::q35();
    for f in &mut h.functions {
        f.group = None;
        f.iommu = None;
    }
    h.groups.clear();
    h.proc_file("cmdline", "console=ttyS0 quiet\n");
    let roots = h.write(dir.path()).unwrap();
    let o = vfioctl(&roots, &["status"]);
    assert_eq!(o.status.code(), Some(0));
    let text = without_root(&stdout(&o), dir.path());
    insta::assert_snapshot!("no_iommu_status", text);
}

#[test]
fn bad_inputs_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = Roots::under(&dir.path().join("nowhere"));
    let o = vfioctl(&nowhere, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sysfs root") && err.contains("--sysfs-root"),
        "{err}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"devices\": 3}").unwrap();
    let o = vfioctl(&nowhere, &["status", "--host", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a vfioctl snapshot"), "{err}");

    let o = vfioctl(&nowhere, &["snapshot", "--host", "/nonexistent/host.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/host.json"));
}

/// A `[[user]]` memlock budget above what limits.conf gives the user's logins is a note of the
/// dry run; within it, nothing is said. Read from the host's own files under `--proc-root`.
#[test]
fn a_memlock_budget_above_the_users_limits_conf_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let roots = vm::q35().write(dir.path()).unwrap();
    let security = roots.proc.join("1/root/etc/security");
    std::fs::create_dir_all(security.join("limits.d")).unwrap();
    // root is the one account every machine running the tests has; group and `*` entries do
    // not apply to it, so the later wildcard must not count.
    std::fs::write(security.join("limits.conf"), "root soft memlock 65536\n").unwrap();
    std::fs::write(
        security.join("limits.d/90-all.conf"),
        "* soft memlock unlimited\n",
    )
    .unwrap();
    let config = dir.path().join("vfio.toml");
    let write = |memlock: &str| {
        std::fs::write(
            &config,
            format!(
                "version = 1\n[[device]]\nname = \"nvme\"\naddress = \"0000:01:00.0\"\nforce = true\n\
                 [[user]]\nname = \"root\"\ndevices = [\"nvme\"]\nmemlock = \"{memlock}\"\n"
            ),
        )
        .unwrap();
    };
    write("1GiB");
    let args = [
        "reconcile",
        "--dry-run",
        "--config",
        config.to_str().unwrap(),
    ];
    let o = vfioctl(&roots, &args);
    let out = stdout(&o);
    assert!(
        out.contains("memlock budget of 1073741824 bytes exceeds the locked-memory limit its logins get (67108864 bytes"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    write("64MiB");
    let out = stdout(&vfioctl(&roots, &args));
    assert!(!out.contains("memlock budget"), "{out}");

    // A captured host carries the limit: `--host` checks against it, not against this machine.
    let etc = roots.proc.join("1/root/etc");
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    let snapshot = dir.path().join("host.json");
    let o = vfioctl(&roots, &["snapshot", "-o", snapshot.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    write("1GiB");
    let o = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args([
            "reconcile",
            "--dry-run",
            "--config",
            config.to_str().unwrap(),
            "--host",
        ])
        .arg(&snapshot)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("exceeds the locked-memory limit its logins get (67108864 bytes"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
