//! Issue 15's input, output and wrong-answer defects, end to end through the binary: each test
//! failed before its fix (a panic with exit 101, a hang, exit 0 where 1 or 2 is right, nothing
//! on stdout where a JSON document belongs).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/q35")
}

fn host_json() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/hosts/workstation.json")
        .display()
        .to_string()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// The binary on the q35 fake tree, with state and run directories under `dir`.
fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vfioctl"));
    c.arg("--sysfs-root")
        .arg(fixture().join("sys"))
        .arg("--proc-root")
        .arg(fixture().join("proc"))
        .arg("--dev-root")
        .arg(dir.join("dev"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs with a deadline: a hang (a FIFO opened for reading) is a failure, not a stuck test.
fn run(mut c: Command) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vfioctl did not finish within 20 s: {c:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vfioctl(dir: &Path, args: &[&str]) -> Output {
    run(cmd(dir, args))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A private directory (mode 0700) with `name` holding `bytes`, mode 0644.
fn private_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

const LATIN1: &[u8] = b"version = 1\n# caf\xe9\n";

#[test]
fn non_utf8_config_is_a_located_error_not_a_panic() {
    let (dir, c) = private_file("c.toml", LATIN1);
    for args in [
        vec!["validate", c.as_str()],
        vec!["validate", "--json", c.as_str()],
        vec!["reconcile", "--dry-run", "-c", c.as_str()],
        vec![
            "reconcile",
            "--dry-run",
            "-c",
            c.as_str(),
            "--host",
            &host_json(),
        ],
    ] {
        let o = vfioctl(dir.path(), &args);
        let all = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {all}");
        assert!(all.contains("not valid UTF-8"), "{args:?}: {all}");
        assert!(!all.contains("panicked"), "{args:?}: {all}");
    }
    let o = vfioctl(dir.path(), &["validate", &c]);
    assert!(text(&o).contains("c.toml:2:6"), "{}", text(&o));
}

#[test]
fn non_regular_inputs_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo = fifo.display().to_string();
    for args in [
        vec!["validate", fifo.as_str()],
        vec!["validate", "/dev/zero"],
        vec!["reconcile", "--dry-run", "-c", fifo.as_str()],
        vec!["status", "--host", fifo.as_str()],
        vec!["status", "--host", "/dev/zero"],
        vec![
            "reconcile",
            "--dry-run",
            "-c",
            &example("gpu-passthrough.toml"),
            "--host",
            fifo.as_str(),
        ],
    ] {
        let o = vfioctl(dir.path(), &args);
        let all = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {all}");
        assert!(all.contains("not a regular file"), "{args:?}: {all}");
    }
}

#[test]
fn dry_run_json_is_always_one_document() {
    let (dir, bad) = private_file("bad.toml", b"version = 1\n[[device]]\nname = 3\n");
    let (_d2, latin) = private_file("latin.toml", LATIN1);
    let gpu = example("gpu-passthrough.toml");
    for args in [
        vec!["reconcile", "--dry-run", "--json", "-c", bad.as_str()],
        vec!["reconcile", "--dry-run", "--json", "-c", latin.as_str()],
        vec![
            "reconcile",
            "--dry-run",
            "--json",
            "-c",
            "/nonexistent.toml",
        ],
        vec![
            "reconcile",
            "--dry-run",
            "--json",
            "-c",
            gpu.as_str(),
            "--host",
            "/nonexistent.json",
        ],
        vec![
            "reconcile",
            "--check",
            "--json",
            "-c",
            gpu.as_str(),
            "--host",
            &host_json(),
        ],
    ] {
        let o = vfioctl(dir.path(), &args);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not one JSON document ({e}): {}",
                text(&o)
            )
        });
        assert!(doc["realisable"].is_boolean(), "{args:?}: {doc}");
        assert!(doc["actions"].is_array(), "{args:?}: {doc}");
        if o.status.code() == Some(1) && doc["realisable"] == false {
            let errors = doc["errors"].as_array().map_or(0, Vec::len);
            let problems = doc["problems"].as_array().map_or(0, Vec::len);
            assert!(errors + problems > 0, "{args:?}: no reason given: {doc}");
        }
    }
}

#[test]
fn check_fails_on_a_corrupt_journal_like_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/journal.json"), "{not json").unwrap();
    let (_c, config) = private_file("vfio.toml", b"version = 1\n");
    for args in [
        vec!["reconcile", "--check", "-c", config.as_str()],
        vec!["reconcile", "--dry-run", "-c", config.as_str()],
    ] {
        let o = vfioctl(dir.path(), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("journal"), "{args:?}: {}", text(&o));
    }
}

#[test]
fn udev_claim_with_a_host_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, config) = private_file("vfio.toml", b"version = 1\n");
    for args in [
        vec![
            "--host",
            "h.json",
            "udev-claim",
            "-c",
            config.as_str(),
            "0000:00:02.0",
        ],
        vec![
            "udev-claim",
            "--host",
            "h.json",
            "-c",
            config.as_str(),
            "0000:00:02.0",
        ],
    ] {
        let o = vfioctl(dir.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o));
    }
}

#[test]
fn a_config_others_can_write_is_refused_where_it_acts() {
    let (dir, config) = private_file("vfio.toml", b"version = 1\n");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [
        vec!["reconcile", "-c", config.as_str()],
        vec!["udev-claim", "-c", config.as_str(), "0000:00:02.0"],
        vec!["watch", "-c", config.as_str()],
    ] {
        let o = vfioctl(dir.path(), &args);
        let all = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains("can be changed by its group and every user") && all.contains("refused"),
            "{args:?}: {all}"
        );
        assert!(all.contains("--allow-insecure-config"), "{args:?}: {all}");
    }
    // Told otherwise, the claim runs (the config wants nothing: no claim, exit 0).
    let o = vfioctl(
        dir.path(),
        &[
            "udev-claim",
            "--allow-insecure-config",
            "-c",
            &config,
            "0000:00:02.0",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A dry run changes nothing: warned, not refused.
    let o = vfioctl(dir.path(), &["reconcile", "--dry-run", "-c", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("can be changed by"), "{}", text(&o));
    // validate warns.
    let o = vfioctl(dir.path(), &["validate", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("warning: the config can be changed by"));
}

#[test]
fn a_full_stdout_is_exit_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_c, config) = private_file("vfio.toml", b"version = 1\n");
    let host = host_json();
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["status", "--host", host.as_str()],
        vec!["snapshot"],
        vec!["schema"],
        vec!["validate", config.as_str()],
        vec!["validate", "--json", config.as_str()],
        vec![
            "reconcile",
            "--dry-run",
            "-c",
            &example("gpu-passthrough.toml"),
            "--host",
            host.as_str(),
        ],
        vec!["rollback", "--dry-run"],
    ] {
        let mut c = cmd(dir.path(), &args);
        c.stdout(File::options().write(true).open("/dev/full").unwrap())
            .stderr(Stdio::piped());
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot write the output"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_pipe_stays_quiet() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["schema"], vec!["status", "--host", &host_json()]] {
        // A pipe whose read end is closed before the command writes.
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let mut c = cmd(dir.path(), &args);
        c.stdout(File::from(w)).stderr(Stdio::piped());
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let quiet_end = o.status.code() == Some(0) || o.status.signal() == Some(nix::libc::SIGPIPE);
        assert!(quiet_end, "{args:?}: {:?}: {err}", o.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}
