//! Descriptor accounting: many clients (granted, refused, malformed, vanished) leave the
//! serving process with exactly the fds it had. Its own test binary, so no other test opens
//! fds in this process meanwhile.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use vfioctl::broker::client;
use vfioctl::broker::handout::{Handout, Offer};
use vfioctl::broker::protocol::{Description, VERSION};
use vfioctl::broker::server::{Limits, Server};

/// Open fds, leaving out those into the run directory: the server thread publishes its ledger
/// there after each client (a durable write holds the temp file and the directory open while
/// it fsyncs), which may overlap the count.
fn open_fds(run_dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path()).map_or(true, |t| !t.starts_with(run_dir)))
        .count()
}

#[test]
fn many_clients_leak_no_fds() {
    let dir = tempfile::tempdir().unwrap();
    let config = vfioctl::config::parse_str(
        "version = 1\n[[device]]\nname = \"edu\"\naddress = \"0000:00:03.0\"\n[[domain]]\nname = \"dma\"\ndevices = [\"edu\"]\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let fds: Vec<OwnedFd> = (0..4)
        .map(|_| tempfile::tempfile().unwrap().into())
        .collect();
    let handout = Handout::new();
    let mut offers = BTreeMap::new();
    offers.insert(
        "dma".to_string(),
        Offer {
            description: Description {
                version: VERSION,
                domain: "dma".into(),
                containers: vec![0, 1],
                groups: vec![],
                windows: vec![],
                devices: vec![],
                iommufd: None,
            },
            fds,
        },
    );
    handout.replace(offers, config, Default::default());
    // Caps above the 300 clients: this test is about fds; tests/broker_load.rs tests the caps
    // (a client that does not wait for its answers can reach them).
    let limits = Limits {
        max_clients: 1000,
        max_per_uid: 1000,
        ..Limits::default()
    };
    let server = Server::start_with(dir.path(), handout.clone(), limits).unwrap();
    // Warm up (thread-local buffers, lazily opened files), then count.
    drop(client::open(dir.path(), "dma").unwrap());
    let before = open_fds(dir.path());
    for i in 0..300 {
        match i % 4 {
            0 => {
                let g = client::open(dir.path(), "dma").unwrap();
                assert_eq!(g.fds.len(), 4);
            }
            1 => assert!(client::open(dir.path(), "none").is_err()),
            2 => {
                let mut s = UnixStream::connect(server.path()).unwrap();
                s.write_all(b"{{{{\n").unwrap();
            }
            _ => {
                // Asks and vanishes before the answer.
                let mut s = UnixStream::connect(server.path()).unwrap();
                s.write_all(b"{\"version\":1,\"domain\":\"dma\"}\n")
                    .unwrap();
            }
        }
    }
    // The last vanished clients may still be in the server's hands (each on its own
    // thread): wait, bounded, until it has finished with every one.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.clients() > 0 {
        assert!(std::time::Instant::now() < until, "clients never finished");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(open_fds(dir.path()), before);
    assert!(handout.lock().handed.len() >= 64);
    drop(server);
}
