//! The broker over a real unix socket, in-process: grants carry working fds, refusals carry
//! reasons, malformed, oversized and silent clients are refused without stopping the server.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use vfioctl::broker::client::{self, ClientError};
use vfioctl::broker::handout::{Handout, Offer, Offers};
use vfioctl::broker::protocol::{Description, GroupDesc, Request, WindowDesc, VERSION};
use vfioctl::broker::server::Server;
use vfioctl::host::accounts::Accounts;

fn config() -> vfioctl::config::Config {
    let text = r#"
version = 1
[[device]]
name = "edu"
address = "0000:00:03.0"
[[user]]
name = 1000
devices = ["edu"]
[[domain]]
name = "dma"
devices = ["edu"]
[[domain.window]]
iova = 0x100000
size = "2MiB"
[[device]]
name = "other"
address = "0000:00:04.0"
[[domain]]
name = "idle"
devices = ["other"]
"#;
    vfioctl::config::parse_str(text, std::path::Path::new("t.toml")).unwrap()
}

/// A file with known content, standing in for a container, a group, a memfd.
fn file(content: &str) -> OwnedFd {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f.into()
}

fn offer() -> Offer {
    Offer {
        description: Description {
            version: VERSION,
            domain: "dma".into(),
            containers: vec![0],
            groups: vec![GroupDesc {
                group: 5,
                fd: 1,
                container: 0,
            }],
            windows: vec![WindowDesc {
                name: "window 1".into(),
                iova: 0x10_0000,
                size: 0x20_0000,
                fd: 2,
            }],
            devices: vec![],
            iommufd: None,
        },
        fds: vec![file("container"), file("group"), file("window")],
    }
}

fn start() -> (tempfile::TempDir, Server, Handout) {
    let dir = tempfile::tempdir().unwrap();
    let handout = Handout::new();
    let mut offers = BTreeMap::new();
    offers.insert("dma".to_string(), offer());
    handout.replace(offers, config(), Accounts::default());
    let server = Server::start(dir.path(), std::path::Path::new("/proc"), handout.clone()).unwrap();
    (dir, server, handout)
}

fn content(fd: OwnedFd) -> String {
    let mut f = std::fs::File::from(fd);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

fn raw(path: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_grant_carries_the_domains_files_in_order() {
    let (dir, _server, handout) = start();
    let grant = client::open(dir.path(), "dma").unwrap();
    assert_eq!(grant.description, offer().description);
    let got: Vec<String> = grant.fds.into_iter().map(content).collect();
    assert_eq!(got, ["container", "group", "window"]);
    let o: std::sync::MutexGuard<'_, Offers> = handout.lock();
    assert_eq!(o.handed.len(), 1);
    assert_eq!(o.handed[0].domain, "dma");
    assert_eq!(o.handed[0].fds, 3);
    assert_eq!(o.handed[0].pid, std::process::id() as i32);
}

#[test]
fn unknown_and_unheld_domains_are_refused_with_a_reason() {
    let (dir, _server, handout) = start();
    match client::open(dir.path(), "nope") {
        Err(ClientError::Refused(r)) => assert!(r.contains("no domain \"nope\""), "{r}"),
        other => panic!("{other:?}"),
    }
    match client::open(dir.path(), "idle") {
        Err(ClientError::Refused(r)) => assert!(r.contains("not held right now"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(handout.lock().refused, 2);
    assert!(handout.lock().handed.is_empty());
}

#[test]
fn malformed_oversized_and_silent_clients_are_refused_and_the_server_goes_on() {
    let (dir, server, _handout) = start();
    let path = server.path().to_path_buf();
    let out = raw(&path, b"hello\n");
    assert!(
        out.contains("\"refused\"") && out.contains("malformed"),
        "{out}"
    );
    let out = raw(&path, b"{\"version\":7,\"domain\":\"dma\"}\n");
    assert!(out.contains("version 7 is not supported"), "{out}");
    let out = raw(&path, &[b'x'; 5000]);
    assert!(out.contains("too large"), "{out}");
    // Far too large: the broker stops reading at the limit and closes; the client may see
    // the refusal or a reset, the server goes on either way.
    let mut s = UnixStream::connect(&path).unwrap();
    let _ = s.write_all(&vec![b'x'; 256 * 1024]);
    drop(s);
    // Connects, says nothing, keeps the socket open: dropped after the deadline.
    let mut silent = UnixStream::connect(&path).unwrap();
    let mut out = String::new();
    silent.read_to_string(&mut out).unwrap();
    assert!(out.contains("no complete request"), "{out}");
    // Still serving.
    assert!(client::open(dir.path(), "dma").is_ok());
    drop(server);
    assert!(!path.exists(), "the socket is removed on stop");
}

#[test]
fn no_broker_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    match client::request(&dir.path().join("broker.sock"), &Request::open("dma")) {
        Err(e @ ClientError::NoBroker { .. }) => {
            assert!(e.to_string().contains("no vfioctl watch is serving"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn domain_open_runs_the_command_with_the_fds_inherited() {
    let (dir, _server, _handout) = start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--run-dir")
        .arg(dir.path())
        .args(["domain", "open", "dma", "--", "sh", "-c"])
        .arg(
            "set -e; echo \"C=$VFIOCTL_CONTAINER_FD G=$VFIOCTL_GROUP_FDS W=$VFIOCTL_WINDOW_FDS\"; \
             cat /proc/self/fd/$VFIOCTL_CONTAINER_FD; echo; \
             cat /proc/self/fd/${VFIOCTL_GROUP_FDS#5=}; echo; \
             cat /proc/self/fd/${VFIOCTL_WINDOW_FDS%%:*}; echo; \
             echo \"$VFIOCTL_DOMAIN_JSON\"",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains(":0x100000:0x200000"), "{stdout}");
    assert_eq!(&lines[1..4], ["container", "group", "window"], "{stdout}");
    let json: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(json["domain"], "dma");
    assert_eq!(json["windows"][0]["iova"], 0x10_0000);
}

#[test]
fn domain_open_without_watch_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .arg("--run-dir")
        .arg(dir.path())
        .args(["domain", "open", "dma", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 4: the domain needs a running `watch`.
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("no vfioctl watch is serving"), "{stderr}");
    assert!(
        stderr.contains("close that program, restart watch"),
        "{stderr}"
    );
}
