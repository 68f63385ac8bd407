//! The broker's socket, `RUN_DIR/broker.sock`. One accept thread sleeps in poll on the
//! listener and a wake-up pipe (no CPU while idle); every client it admits is served on its own
//! short-lived thread, so a slow, silent or hostile client never delays another one (nor
//! `watch`). Admission is bounded: at most [`Limits::max_clients`] clients at once and
//! [`Limits::max_per_uid`] per uid; a client over a cap is refused at once with the reason, never
//! queued. Each client gets [`Limits::deadline`] in all to send its request, and the answer is
//! written with a send timeout. Callers are identified by the kernel when they connect
//! (`SO_PEERCRED` for pid, uid and gid, `SO_PEERGROUPS` for the supplementary groups), never by
//! reading `/proc/PID` later (the pid may be reused by then). Every grant and refusal is logged,
//! client-supplied text escaped.

use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sendmsg, sockopt, ControlMessage, MsgFlags};

use super::access::{self, Caller};
use super::handout::{Handed, Handout};
use super::ledger;
use super::protocol::{self, Ask, Description, IommufdDesc, Request, Response, MAX_REQUEST};

/// All the time one client gets to send its request.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(2);
/// How long writing the answer may block.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop backs off after a failed accept (EMFILE and the like).
const BACKOFF: Duration = Duration::from_millis(200);
/// Most clients served at once, all uids together.
pub const MAX_CLIENTS: usize = 256;
/// Most clients of one uid served at once.
pub const MAX_PER_UID: usize = 64;
/// Stack of a client's thread: it parses a request of at most [`MAX_REQUEST`] bytes and
/// answers; this keeps a full house of clients to a few MiB of address space.
const CLIENT_STACK: usize = 256 * 1024;
/// Longest client-supplied text (a domain name, a parse error quoting it) copied into a log
/// line, in characters.
const LOG_TEXT_MAX: usize = 128;

/// How much the broker serves at once, and how long one client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most clients served at once, all uids together.
    pub max_clients: usize,
    /// Most clients of one uid served at once.
    pub max_per_uid: usize,
    /// All the time one client gets to send its request.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: MAX_CLIENTS,
            max_per_uid: MAX_PER_UID,
            deadline: CLIENT_DEADLINE,
        }
    }
}

/// The clients being served right now, by uid.
#[derive(Debug, Default)]
struct Admitted {
    total: usize,
    by_uid: BTreeMap<u32, usize>,
}

/// What the accept thread shares with the client threads.
#[derive(Debug)]
struct Shared {
    limits: Limits,
    admitted: Mutex<Admitted>,
    /// Serializes writing the ledger (one temp file name).
    publishing: Mutex<()>,
}

impl Shared {
    fn admitted(&self) -> MutexGuard<'_, Admitted> {
        // Plain counters, each update whole: a poisoned lock still holds good numbers.
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `uid`, or says which cap is reached.
    fn admit(self: &Arc<Self>, uid: u32) -> Result<Slot, String> {
        let mut a = self.admitted();
        if a.total >= self.limits.max_clients {
            return Err(format!(
                "the broker is busy: {} clients are being served, the most it serves at once; try again in a moment",
                a.total
            ));
        }
        let mine = a.by_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.limits.max_per_uid {
            return Err(format!(
                "uid {uid} already has {mine} connections open to the broker, the most one uid may have at once; close them (each has {:?} to send its request) and try again",
                self.limits.deadline
            ));
        }
        a.total += 1;
        *a.by_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            shared: self.clone(),
            uid,
        })
    }
}

/// An admitted client's place; dropping it (the client thread ending, or failing to start)
/// frees it.
#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut a = self.shared.admitted();
        a.total = a.total.saturating_sub(1);
        if let Some(n) = a.by_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                a.by_uid.remove(&self.uid);
            }
        }
    }
}

/// The running broker; dropping it stops the thread and removes the socket.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Written on stop, to wake the thread (it sleeps in poll without a timeout: no CPU
    /// while idle).
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    path: PathBuf,
    run_dir: PathBuf,
}

impl Server {
    /// Binds `RUN_DIR/broker.sock` (replacing a stale one; mode 0666, access is decided per
    /// caller) and starts serving `handout` with the default [`Limits`]. `_proc_root` is no
    /// longer read: callers are identified by the kernel on the socket itself.
    pub fn start(run_dir: &Path, _proc_root: &Path, handout: Handout) -> std::io::Result<Server> {
        Self::start_with(run_dir, handout, Limits::default())
    }

    /// [`Server::start`] with explicit limits.
    pub fn start_with(run_dir: &Path, handout: Handout, limits: Limits) -> std::io::Result<Server> {
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
        let shared = Arc::new(Shared {
            limits,
            admitted: Mutex::new(Admitted::default()),
            publishing: Mutex::new(()),
        });
        let dir = run_dir.to_path_buf();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vfioctl-broker".into())
            .spawn(move || accept_loop(&listener, &wake_rx, &dir, &handout, &state, &flag))?;
        tracing::info!("fd broker listening on {}", path.display());
        Ok(Server {
            stop,
            wake: Some(wake_tx),
            thread: Some(thread),
            shared,
            path,
            run_dir: run_dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many clients are being served right now.
    pub fn clients(&self) -> usize {
        self.shared.admitted().total
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
        // Client threads still running finish within their deadlines; they never write the
        // ledger after this (see `publish`).
        let _guard = self.shared.publishing.lock();
        ledger::remove(&self.run_dir);
    }
}

fn accept_loop(
    listener: &UnixListener,
    wake: &OwnedFd,
    run_dir: &Path,
    handout: &Handout,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
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
                Ok((stream, _)) => admit(stream, run_dir, handout, shared, stop),
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

/// Identifies a new client and hands it to a thread of its own, or refuses it at once (no
/// identity, a cap reached, no thread to be had). Never blocks the accept loop.
fn admit(
    stream: UnixStream,
    run_dir: &Path,
    handout: &Handout,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
) {
    let caller = match caller_of(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("fd broker: cannot identify a client, refused: {e}");
            refuse_now(&stream, &e);
            return;
        }
    };
    let slot = match shared.admit(caller.uid) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "fd broker: pid {} uid {}: refused: {e}",
                caller.pid,
                caller.uid
            );
            handout.lock().refused += 1;
            refuse_now(&stream, &e);
            return;
        }
    };
    let (dir, offers, state, stopping) = (
        run_dir.to_path_buf(),
        handout.clone(),
        shared.clone(),
        stop.clone(),
    );
    // The stream stays here if the thread cannot start, to be refused with the reason.
    let handoff = Arc::new(Mutex::new(Some(stream)));
    let theirs = handoff.clone();
    let started = std::thread::Builder::new()
        .name("vfioctl-broker-client".into())
        .stack_size(CLIENT_STACK)
        .spawn(move || {
            let _slot = slot;
            let taken = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(stream) = taken {
                serve_caller(stream, &caller, &offers, state.limits.deadline);
                publish(&dir, &offers, &state, &stopping);
            }
        });
    if let Err(e) = started {
        let left = handoff.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stream) = left {
            let reason =
                format!("the broker cannot start a thread for this client ({e}); try again");
            tracing::error!("fd broker: {reason}");
            handout.lock().refused += 1;
            refuse_now(&stream, &reason);
        }
    }
}

/// Sends a refusal without ever blocking (a fresh socket's buffer takes it whole; a client
/// that cannot take it loses it), then closes.
fn refuse_now(stream: &UnixStream, reason: &str) {
    let Ok(bytes) = protocol::encode_response(&Response::refused(reason)) else {
        return;
    };
    let _ = nix::sys::socket::send(
        stream.as_raw_fd(),
        &bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
    // Closing with the request unread would make the kernel report ECONNRESET to the client
    // after our answer: take what has arrived (bounded, without waiting) first.
    let mut sink = [0u8; 1024];
    for _ in 0..=MAX_REQUEST / sink.len() {
        match nix::sys::socket::recv(stream.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

fn publish(run_dir: &Path, handout: &Handout, shared: &Shared, stop: &AtomicBool) {
    let _one_writer = shared.publishing.lock().unwrap_or_else(|p| p.into_inner());
    // A stopped server has removed its ledger (under this lock): do not bring it back.
    if stop.load(Ordering::SeqCst) {
        return;
    }
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
fn read_request(stream: &mut UnixStream, allowed: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + allowed;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete request within {allowed:?}; dropped"));
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
                return Err(format!("no complete request within {allowed:?}; dropped"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The peer as the kernel recorded it when it connected: pid, uid and gid (`SO_PEERCRED`) and
/// its supplementary groups (`SO_PEERGROUPS`).
fn caller_of(stream: &UnixStream) -> Result<Caller, String> {
    let cred =
        getsockopt(stream, sockopt::PeerCredentials).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let groups = peer_groups(stream).map_err(|e| format!("SO_PEERGROUPS: {e}"))?;
    Ok(Caller {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        groups,
    })
}

/// Most supplementary groups a process can have (`NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65536;

/// The peer's supplementary groups, as the kernel recorded them at `connect` (Linux 4.13+).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 32];
    loop {
        let size = std::mem::size_of::<nix::libc::gid_t>();
        let mut len =
            nix::libc::socklen_t::try_from(groups.len() * size).map_err(std::io::Error::other)?;
        // SAFETY: the buffer is valid for writes of `len` bytes, and `len` is a valid
        // pointer the kernel updates to the size it wrote (or needs, with ERANGE).
        let rc = unsafe {
            nix::libc::getsockopt(
                stream.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size;
        if rc == 0 {
            groups.truncate(needed.min(groups.len()));
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(nix::libc::ERANGE)
            && needed > groups.len()
            && needed <= NGROUPS_MAX
        {
            groups.resize(needed, 0);
            continue;
        }
        return Err(e);
    }
}

/// Client-supplied text made safe for one log line: control characters, newlines, quotes and
/// invisible code points escaped (Rust's debug escaping), cut to [`LOG_TEXT_MAX`] characters.
pub fn for_log(text: &str) -> String {
    let mut cut: String = text.chars().take(LOG_TEXT_MAX).collect();
    let more = cut.len() < text.len();
    cut = format!("{cut:?}");
    if more {
        cut.push_str("...");
    }
    cut
}

/// Serves one admitted client on its thread; never panics, never blocks longer than the
/// deadlines.
fn serve_caller(mut stream: UnixStream, caller: &Caller, handout: &Handout, allowed: Duration) {
    // Accepted sockets do not inherit O_NONBLOCK from the listener on Linux, but be sure.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let who = format!("pid {} uid {}", caller.pid, caller.uid);
    let request = match read_request(&mut stream, allowed) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!("fd broker: {who}: {e}");
            handout.lock().refused += 1;
            answer(&mut stream, &Response::refused(e), &[]);
            return;
        }
    };
    let ask = match protocol::parse_request(&request).and_then(|r: Request| r.ask()) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("fd broker: {who}: refused: {}", for_log(&e.to_string()));
            handout.lock().refused += 1;
            answer(&mut stream, &Response::refused(e.to_string()), &[]);
            return;
        }
    };
    let name = match ask {
        Ask::Domain(name) => name,
        Ask::Iommufd => return serve_iommufd(stream, caller, &who, handout),
    };
    let domain = for_log(&name);
    let mut offers = handout.lock();
    let decision = match &offers.policy {
        None => Err(FIRST_PASS.to_string()),
        Some((config, accounts)) => {
            access::may_open(config, accounts, &name, caller).map_err(|e| e.to_string())
        }
    };
    if let Err(reason) = decision {
        offers.refused += 1;
        drop(offers);
        tracing::warn!(
            "fd broker: {who}: refused domain {domain}: {}",
            for_log(&reason)
        );
        answer(&mut stream, &Response::refused(reason), &[]);
        return;
    }
    let Some(offer) = offers.domains.get(&name) else {
        offers.refused += 1;
        drop(offers);
        let reason = format!(
            "domain \"{name}\" is not held right now (see `vfioctl status`: its devices may be absent or not on vfio-pci)",
        );
        tracing::warn!("fd broker: {who}: domain {domain} is not held right now: refused");
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
            domain: name.clone(),
            uid: caller.uid,
            pid: caller.pid,
            fds: raw.len(),
            at,
        });
        tracing::info!(
            "fd broker: {who}: handed domain {domain} ({} fds)",
            raw.len()
        );
    }
}

/// Why a request before the first pass is refused.
const FIRST_PASS: &str = "vfioctl watch has not finished its first pass yet; try again";

/// Serves a fresh iommufd: the caller must be root or named by a `[[user]]` entry; the broker
/// opens `/dev/iommu` through its seam and sends that one fd (then closes its own).
fn serve_iommufd(mut stream: UnixStream, caller: &Caller, who: &str, handout: &Handout) {
    let decision = {
        let offers = handout.lock();
        match &offers.policy {
            None => Err(FIRST_PASS.to_string()),
            Some((config, accounts)) => {
                access::may_have_iommufd(config, accounts, caller).map_err(|e| e.to_string())
            }
        }
    };
    let opened = match decision {
        Ok(()) => match handout.open_iommufd() {
            Some(Ok(fd)) => Ok(fd),
            Some(Err(e)) => Err(iommufd_refusal(&e)),
            None => Err("this vfioctl watch does not hand out iommufds".to_string()),
        },
        Err(reason) => Err(reason),
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(reason) => {
            handout.lock().refused += 1;
            tracing::warn!("fd broker: {who}: refused an iommufd: {}", for_log(&reason));
            answer(&mut stream, &Response::refused(reason), &[]);
            return;
        }
    };
    let resp = Response::Granted(iommufd_description());
    if answer(&mut stream, &resp, &[fd.as_raw_fd()]) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        handout.lock().record(Handed {
            domain: String::new(),
            uid: caller.uid,
            pid: caller.pid,
            fds: 1,
            at,
        });
        tracing::info!("fd broker: {who}: handed a fresh iommufd (1 fd)");
    }
}

/// The description of a fresh iommufd: no domain, the iommufd at index 0, no IOAS.
pub fn iommufd_description() -> Description {
    Description {
        version: protocol::VERSION,
        domain: String::new(),
        containers: Vec::new(),
        groups: Vec::new(),
        windows: Vec::new(),
        devices: Vec::new(),
        iommufd: Some(IommufdDesc {
            fd: 0,
            ioas: Vec::new(),
        }),
    }
}

/// The refusal for a `/dev/iommu` the broker could not open.
fn iommufd_refusal(e: &crate::domain::iommu::IommuError) -> String {
    use nix::errno::Errno;
    match e.errno {
        Errno::ENOENT | Errno::ENODEV | Errno::ENXIO => format!(
            "this kernel has no iommufd ({e}: /dev/iommu needs Linux 6.2+ with CONFIG_IOMMUFD); use a [[domain]] on the legacy backend and `vfioctl domain open`, or open /dev/vfio/N yourself"
        ),
        _ => format!("the broker cannot open an iommufd: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_in_logs_is_escaped_and_bounded() {
        let forged = "dma\nINFO fd broker: uid 0: handed domain \"x\"\x1b[2J\u{202e}";
        let line = for_log(forged);
        assert!(!line.contains('\n') && !line.contains('\x1b'), "{line}");
        assert!(!line.contains('\u{202e}'), "{line}");
        assert!(line.contains("\\n") && line.contains("\\u{1b}"), "{line}");
        let long = for_log(&"a".repeat(10_000));
        assert!(
            long.len() < LOG_TEXT_MAX + 8 && long.ends_with("..."),
            "{long}"
        );
        assert_eq!(for_log("vm1"), "\"vm1\"");
    }

    #[test]
    fn the_peers_groups_come_from_the_kernel() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut theirs = peer_groups(&a).unwrap();
        mine.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(theirs, mine);
        let c = caller_of(&a).unwrap();
        assert_eq!(c.uid, nix::unistd::getuid().as_raw());
        assert_eq!(c.pid, std::process::id() as i32);
    }

    #[test]
    fn caps_count_per_uid_and_in_all_and_free_on_drop() {
        let shared = Arc::new(Shared {
            limits: Limits {
                max_clients: 3,
                max_per_uid: 2,
                deadline: CLIENT_DEADLINE,
            },
            admitted: Mutex::new(Admitted::default()),
            publishing: Mutex::new(()),
        });
        let a1 = shared.admit(1000).unwrap();
        let _a2 = shared.admit(1000).unwrap();
        let e = shared.admit(1000).unwrap_err();
        assert!(e.contains("uid 1000 already has 2 connections"), "{e}");
        let _b1 = shared.admit(1001).unwrap();
        let e = shared.admit(1002).unwrap_err();
        assert!(e.contains("busy"), "{e}");
        drop(a1);
        assert!(shared.admit(1002).is_ok());
        assert!(
            !shared.admitted().by_uid.contains_key(&1002),
            "freed on drop"
        );
    }
}
