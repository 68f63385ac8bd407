//! The broker's socket, `RUN_DIR/broker.sock`, served on its own thread so a slow or dead
//! client never delays `watch`: the thread sleeps in poll on the listener and a wake-up pipe
//! (no CPU while idle), each client gets [`CLIENT_DEADLINE`] in all to send its request, and the answer
//! is written with a send timeout. Callers are identified with `SO_PEERCRED` and their
//! supplementary groups read from `/proc/PID/status`; every grant and refusal is logged.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sendmsg, sockopt, ControlMessage, MsgFlags};

use super::access::{self, Caller};
use super::handout::{Handed, Handout};
use super::ledger;
use super::protocol::{self, Request, Response, MAX_REQUEST};

/// All the time one client gets to send its request.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// How long writing the answer may block.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop backs off after a failed accept (EMFILE and the like).
const BACKOFF: Duration = Duration::from_millis(200);

/// The running broker; dropping it stops the thread and removes the socket.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Written on stop, to wake the thread (it sleeps in poll without a timeout: no CPU
    /// while idle).
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    run_dir: PathBuf,
}

impl Server {
    /// Binds `RUN_DIR/broker.sock` (replacing a stale one; mode 0666, access is decided per
    /// caller) and starts serving `handout`.
    pub fn start(run_dir: &Path, proc_root: &Path, handout: Handout) -> std::io::Result<Server> {
        std::fs::create_dir_all(run_dir)?;
        let path = super::socket_path(run_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (wake_rx, wake_tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let proc_root = proc_root.to_path_buf();
        let dir = run_dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("vfioctl-broker".into())
            .spawn(move || accept_loop(&listener, &wake_rx, &proc_root, &dir, &handout, &flag))?;
        tracing::info!("fd broker listening on {}", path.display());
        Ok(Server {
            stop,
            wake: Some(wake_tx),
            thread: Some(thread),
            path,
            run_dir: run_dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Closing the write end wakes the poll (POLLHUP on the read end).
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        ledger::remove(&self.run_dir);
    }
}

fn accept_loop(
    listener: &UnixListener,
    wake: &OwnedFd,
    proc_root: &Path,
    run_dir: &Path,
    handout: &Handout,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let woken = fds[1].revents().is_some_and(|r| !r.is_empty());
                if woken || stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("fd broker: poll failed, stopping: {e}");
                return;
            }
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    serve(stream, proc_root, handout);
                    publish(run_dir, handout);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: log, back off one tick, keep serving.
                    tracing::warn!("fd broker: accept failed: {e}");
                    std::thread::sleep(BACKOFF);
                    break;
                }
            }
        }
    }
}

fn publish(run_dir: &Path, handout: &Handout) {
    let l = {
        let o = handout.lock();
        ledger::Ledger {
            pid: std::process::id(),
            refused: o.refused,
            handed: o.handed.clone(),
        }
    };
    if let Err(e) = ledger::write(run_dir, &l) {
        tracing::warn!(
            "fd broker: cannot publish {}: {e}",
            ledger::path(run_dir).display()
        );
    }
}

/// Reads one request line within the deadline.
fn read_request(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no complete request within {CLIENT_DEADLINE:?}; dropped"
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    buf.truncate(end);
                    return Ok(buf);
                }
                if buf.len() > MAX_REQUEST {
                    return Ok(buf); // parse_request refuses it by size
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no complete request within {CLIENT_DEADLINE:?}; dropped"
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn caller_of(stream: &UnixStream, proc_root: &Path) -> Result<Caller, String> {
    let cred =
        getsockopt(stream, sockopt::PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let groups = access::supplementary_groups(proc_root, cred.pid())
        .map_err(|e| format!("groups of pid {}: {e}", cred.pid()))?;
    Ok(Caller {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        groups,
    })
}

/// Serves one client; never panics, never blocks longer than the deadlines.
pub fn serve(mut stream: UnixStream, proc_root: &Path, handout: &Handout) {
    // Accepted sockets do not inherit O_NONBLOCK from the listener on Linux, but be sure.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let caller = match caller_of(&stream, proc_root) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("fd broker: cannot identify a client, refused: {e}");
            answer(&mut stream, &Response::refused(e), &[]);
            return;
        }
    };
    let who = format!("pid {} uid {}", caller.pid, caller.uid);
    let request = match read_request(&mut stream) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!("fd broker: {who}: {e}");
            handout.lock().refused += 1;
            answer(&mut stream, &Response::refused(e), &[]);
            return;
        }
    };
    let req: Request = match protocol::parse_request(&request) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("fd broker: {who}: refused: {e}");
            handout.lock().refused += 1;
            answer(&mut stream, &Response::refused(e.to_string()), &[]);
            return;
        }
    };
    let mut offers = handout.lock();
    let decision = match &offers.policy {
        None => Err("vfioctl watch has not finished its first pass yet; try again".to_string()),
        Some((config, accounts)) => {
            access::may_open(config, accounts, &req.domain, &caller).map_err(|e| e.to_string())
        }
    };
    if let Err(reason) = decision {
        offers.refused += 1;
        drop(offers);
        tracing::warn!(
            "fd broker: {who}: refused domain \"{}\": {reason}",
            req.domain
        );
        answer(&mut stream, &Response::refused(reason), &[]);
        return;
    }
    let Some(offer) = offers.domains.get(&req.domain) else {
        offers.refused += 1;
        drop(offers);
        let reason = format!(
            "domain \"{}\" is not held right now (see `vfioctl status`: its devices may be absent or not on vfio-pci)",
            req.domain
        );
        tracing::warn!("fd broker: {who}: {reason}");
        answer(&mut stream, &Response::refused(reason), &[]);
        return;
    };
    // Our own duplicates, taken under the lock and sent after releasing it: a client slow to
    // take its answer then never holds up the pass that refreshes the offers.
    let fds: std::io::Result<Vec<OwnedFd>> = offer.fds.iter().map(|f| f.try_clone()).collect();
    let resp = Response::Granted(offer.description.clone());
    drop(offers);
    let fds = match fds {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("fd broker: {who}: cannot duplicate the domain's fds: {e}");
            answer(
                &mut stream,
                &Response::refused(format!(
                    "the broker is out of file descriptors ({e}); try again"
                )),
                &[],
            );
            return;
        }
    };
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    if answer(&mut stream, &resp, &raw) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        handout.lock().record(Handed {
            domain: req.domain.clone(),
            uid: caller.uid,
            pid: caller.pid,
            fds: raw.len(),
            at,
        });
        tracing::info!(
            "fd broker: {who}: handed domain \"{}\" ({} fds)",
            req.domain,
            raw.len()
        );
    }
}

/// Writes the response, the fds on its first bytes; false (logged) when the client is gone.
fn answer(stream: &mut UnixStream, resp: &Response, fds: &[RawFd]) -> bool {
    let bytes = match protocol::encode_response(resp) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("fd broker: cannot encode an answer: {e}");
            return false;
        }
    };
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("fd broker: client gone before the answer: {e}");
                return false;
            }
        }
    };
    if let Err(e) = stream.write_all(&bytes[sent..]) {
        tracing::warn!("fd broker: client gone during the answer: {e}");
        return false;
    }
    true
}
