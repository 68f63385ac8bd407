//! `vfioctl validate` and `vfioctl schema` as a user runs them: exit codes, output streams and
//! the `--json` shape.

use std::path::Path;
use std::process::{Command, Output};

fn vfioctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(args)
        .env_remove("VFIOCTL_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run vfioctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

const BAD: &str = "version = 1\n[[device]]\nname = \"gpu\"\naddress = \"03:00\"\n\
                   [[user]]\nname = \"alice\"\ndevices = [\"gpu\", \"nic\"]\nmemlock = \"1G\"\n";

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[test]
fn valid_file_exits_0() {
    let file = example("shared-domain-vm.toml");
    for args in [
        vec!["validate", file.as_str()],
        vec!["validate", "--config", file.as_str()],
        vec!["validate", "-c", file.as_str()],
    ] {
        let out = vfioctl(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("valid (2 devices, 1 user"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn invalid_file_exits_1_with_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.toml", BAD);
    let out = vfioctl(&["validate", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("--> {file}:4:11")), "{err}");
    assert!(err.contains(&format!("--> {file}:7:19")), "{err}");
    assert!(err.contains(&format!("--> {file}:8:11")), "{err}");
    assert!(err.contains("help: sizes use binary IEC units"), "{err}");
    assert!(err.contains("is not valid: 3 errors"), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn json_output_has_every_diagnostic_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.toml", BAD);
    let out = vfioctl(&["validate", "--json", &file]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 3);
    assert_eq!(v["warnings"], 0);
    assert_eq!(v["file"], file.as_str());
    let ds = v["diagnostics"].as_array().unwrap();
    assert_eq!(ds.len(), 3);
    let lines: Vec<(u64, u64)> = ds
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(lines, vec![(4, 11), (7, 19), (8, 11)]);
    for d in ds {
        assert_eq!(d["severity"], "error");
        assert_eq!(d["file"], file.as_str());
        assert!(d["message"].is_string() && d["hint"].is_string());
        assert!(d["span"]["start"].is_u64() && d["span"]["end"].is_u64());
        assert!(d["end_line"].is_u64() && d["end_column"].is_u64());
    }
    let ok = vfioctl(&["validate", "--json", &example("dpdk-sriov.toml")]);
    assert_eq!(ok.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 0);
}

#[test]
fn unreadable_file_exits_1_with_a_clear_message() {
    let out = vfioctl(&["validate", "/nonexistent/vfio.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: cannot read /nonexistent/vfio.toml: no such file or directory"),
        "{err}"
    );
    let out = vfioctl(&["validate", "--json", "/nonexistent/vfio.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["diagnostics"][0]["line"].is_null());
    assert!(v["diagnostics"][0]["message"]
        .as_str()
        .unwrap()
        .contains("cannot read"));
}

#[test]
fn default_path_is_etc_vfio_toml() {
    let out = vfioctl(&["validate"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("/etc/vfio.toml"), "{all}");
}

#[test]
fn usage_errors_exit_2() {
    let file = example("gpu-passthrough.toml");
    let out = vfioctl(&["validate", &file, "--config", &file]);
    assert_eq!(out.status.code(), Some(2));
    let out = vfioctl(&["validate", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn root_is_warned_about_a_file_others_can_write() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the permission warning is only given to root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "open.toml", "version = 1\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = vfioctl(&["validate", &file]);
    assert_eq!(out.status.code(), Some(0), "a warning is not an error");
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: the config can be changed by its group and every user"),
        "{err}"
    );
    assert!(err.contains("chmod go-w"), "{err}");
    let out = vfioctl(&["validate", "--json", &file]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["warnings"].as_u64()),
        (Some(true), Some(1))
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = vfioctl(&["validate", &file]);
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = vfioctl(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/vfio.schema.json"))
            .unwrap();
    assert!(
        out.stdout == committed,
        "regenerate: cargo run -q -- schema > schema/vfio.schema.json"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "vfioctl configuration");
}
