//! Metrics as their consumers read them: `vfioctl status --format openmetrics` checked by
//! `promtool check metrics` (Debian's `prometheus`), and `vfioctl watch --metrics-dir` on a
//! fake host tree scraped through a real `prometheus-node-exporter` listening on loopback.
//!
//! Without those binaries the tests say so loudly and skip; under CI (`CI=true`, or
//! `VFIOCTL_REQUIRE_TOOLS` set, as .ci/run does) a missing binary fails them (.ci/run installs
//! both).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vfioctl::fixtures::{FakeHost, Function};

const VFIOCTL: &str = env!("CARGO_BIN_EXE_vfioctl");

/// The path of `tool`, or `None` (skip) outside CI; panics under CI.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var_os("VFIOCTL_REQUIRE_TOOLS").is_some()
        {
            panic!("{name} is missing: CI must install the Debian package {package}");
        }
        eprintln!(
            "\n!!! SKIPPED: {name} is not installed (Debian package {package}); \
             this test did not run !!!\n"
        );
    }
    found
}

/// A converged fake host: a pair of functions on vfio-pci in group 5 (with its node) and an
/// unmanaged NIC.
fn host(dir: &Path) -> vfioctl::host::Roots {
    let mut h = FakeHost::new();
    h.vfio_loaded();
    h.add(
        Function::new("0000:05:00.0", 0x1234, 0x11e8, 0x00ff00)
            .driver("vfio-pci")
            .group(5),
    );
    h.add(
        Function::new("0000:05:00.1", 0x1234, 0x11e8, 0x00ff00)
            .driver("vfio-pci")
            .group(5),
    );
    h.add(
        Function::new("0000:06:00.0", 0x8086, 0x1533, 0x020000)
            .driver("igb")
            .group(6),
    );
    h.group_node(5, 0o600);
    h.write(dir).unwrap()
}

const CONFIG: &str = "version = 1\n[[device]]\nname = \"pair\"\naddress = \"0000:05:00.0\"\n\
                      companions = [\"0000:05:00.1\"]\n";

fn roots_args(roots: &vfioctl::host::Roots, tmp: &Path) -> Vec<String> {
    vec![
        format!("--sysfs-root={}", roots.sysfs.display()),
        format!("--dev-root={}", roots.dev.display()),
        format!("--proc-root={}", roots.proc.display()),
        format!("--state-dir={}", tmp.join("state").display()),
        format!("--run-dir={}", tmp.join("run").display()),
    ]
}

#[test]
fn status_openmetrics_passes_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = host(&tmp.path().join("host"));
    let config = tmp.path().join("vfio.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(VFIOCTL)
        .arg("status")
        .args(roots_args(&roots, tmp.path()))
        .args(["--format", "openmetrics", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("vfioctl_functions{driver=\"vfio-pci\",state=\"claimed\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("vfioctl_functions{driver=\"igb\",state=\"unmanaged\"} 1"),
        "{text}"
    );
    assert!(text.contains("vfioctl_pending_changes "), "{text}");
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A broken file does fail promtool (the check can fail).
    let mut child = Command::new(tool("promtool", "prometheus").unwrap())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# TYPE x counter\nx{a=\"1\" 2\n")
        .unwrap();
    assert!(!child.wait().unwrap().success());
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SIGTERM first: watch removes what it published.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn watch_metrics_are_scraped_by_node_exporter() {
    let tmp = tempfile::tempdir().unwrap();
    let roots = host(&tmp.path().join("host"));
    let config = tmp.path().join("etc/vfio.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, CONFIG).unwrap();
    let metrics = tmp.path().join("textfile");
    std::fs::create_dir(&metrics).unwrap();
    let watch = Command::new(VFIOCTL)
        .arg("watch")
        .args(roots_args(&roots, tmp.path()))
        .arg("--config")
        .arg(&config)
        .arg("--metrics-dir")
        .arg(&metrics)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = Killed(watch);
    let prom = metrics.join("vfioctl.prom");
    wait_for("vfioctl.prom", || {
        if let Ok(Some(status)) = watch.0.try_wait() {
            let mut err = String::new();
            let _ = watch.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("watch exited ({status}): {err}");
        }
        prom.exists()
    });
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("vfioctl_passes_total 1"), "{text}");
    assert!(text.contains("vfioctl_pending_changes 0"), "{text}");
    let Some(exporter) = tool("prometheus-node-exporter", "prometheus-node-exporter") else {
        return;
    };
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exporter = Command::new(exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            metrics.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _exporter = Killed(exporter);
    let mut scraped = String::new();
    wait_for("node_exporter to answer", || match get(port, "/metrics") {
        Some(body) if body.contains("node_textfile_scrape_error") => {
            scraped = body;
            true
        }
        _ => false,
    });
    let has = |line: &str| scraped.lines().any(|l| l == line);
    assert!(has("node_textfile_scrape_error 0"), "{scraped}");
    for series in [
        "vfioctl_functions{driver=\"vfio-pci\",state=\"claimed\"} 2",
        "vfioctl_iommu_groups{viable=\"true\"} 1",
        "vfioctl_passes_total 1",
        "vfioctl_passes_failed_total 0",
        "vfioctl_pending_changes 0",
        "vfioctl_hotplug_claims_won_total 0",
        "vfioctl_broker_refusals_total 0",
        "vfioctl_domains_held 0",
    ] {
        assert!(has(series), "{series} not scraped:\n{scraped}");
    }
    assert!(
        scraped.contains("# TYPE vfioctl_passes_total counter"),
        "{scraped}"
    );
}
