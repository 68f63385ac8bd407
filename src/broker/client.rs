//! The library side of the broker: connect to `RUN_DIR/broker.sock`, ask for a domain (or a
//! fresh iommufd), receive its fds (close-on-exec, owned) and description.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::protocol::{self, Description, Request, Response, MAX_FDS, MAX_RESPONSE};

/// How long the client waits for the broker's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A granted domain.
#[derive(Debug)]
pub struct Grant {
    pub description: Description,
    /// Indexed as the description says.
    pub fds: Vec<OwnedFd>,
}

/// Why no domain was received.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no vfioctl watch is serving domains at {path} ({source}); start it (systemctl start vfioctl-watch, or vfioctl watch) and try again")]
    NoBroker {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the broker at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the broker refused: {0}")]
    Refused(String),
    #[error("the broker's answer: {0}")]
    Protocol(#[from] protocol::ProtocolError),
}

/// Asks the broker under `run_dir` for `domain`.
pub fn open(run_dir: &Path, domain: &str) -> Result<Grant, ClientError> {
    request(&super::socket_path(run_dir), &Request::open(domain))
}

/// Asks the broker under `run_dir` for a fresh iommufd (tied to no domain); the grant must
/// carry exactly that one fd, described as such.
pub fn open_iommufd(run_dir: &Path) -> Result<OwnedFd, ClientError> {
    let mut grant = request(&super::socket_path(run_dir), &Request::iommufd())?;
    let d = &grant.description;
    let only_iommufd = d.domain.is_empty()
        && d.containers.is_empty()
        && d.groups.is_empty()
        && d.windows.is_empty()
        && d.devices.is_empty()
        && d.iommufd
            .as_ref()
            .is_some_and(|i| i.fd == 0 && i.ioas.is_empty());
    if !only_iommufd || grant.fds.len() != 1 {
        return Err(ClientError::Protocol(protocol::ProtocolError::Malformed(
            format!(
                "an iommufd grant carries one iommufd and nothing else; this one describes {} and carries {} fd(s)",
                serde_json::to_string(d).unwrap_or_default(),
                grant.fds.len()
            ),
        )));
    }
    Ok(grant.fds.remove(0))
}

/// Sends `req` to the socket at `path` and receives the answer.
pub fn request(path: &Path, req: &Request) -> Result<Grant, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::NoBroker {
        path: path.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    // A broker at its client cap refuses before reading: the write then fails with EPIPE,
    // but its refusal is waiting to be read.
    let sent = stream.write_all(&protocol::encode_request(req));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let (mut bytes, fds) = match (receive(&stream), sent) {
        (Ok((b, _)), Err(e)) if b.is_empty() => return Err(io(e)),
        (Ok(got), _) => got,
        (Err(_), Err(e)) => return Err(io(e)),
        (Err(e), Ok(())) => return Err(io(e)),
    };
    // The rest of a long answer, bounded.
    let mut rest = Vec::new();
    let rest_read = (&stream)
        .take((MAX_RESPONSE + 1 - bytes.len().min(MAX_RESPONSE)) as u64)
        .read_to_end(&mut rest);
    bytes.extend(rest);
    // A broker that refused before reading our request closes with it unread: the kernel then
    // reports ECONNRESET after the refusal, which is complete all the same.
    let resp = match (protocol::parse_response(&bytes, fds.len()), rest_read) {
        (Ok(r), _) => r,
        (Err(_), Err(e)) => return Err(io(e)),
        (Err(e), Ok(_)) => return Err(e.into()),
    };
    match resp {
        Response::Granted(description) => Ok(Grant { description, fds }),
        Response::Refused { reason, .. } => Err(ClientError::Refused(reason)),
    }
}

/// The first chunk of the answer and the fds riding on it.
fn receive(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_RESPONSE];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed these fds for us; nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        let n = msg.bytes;
        if truncated {
            return Err(std::io::Error::other("the broker sent more fds than fit"));
        }
        buf.truncate(n);
        return Ok((buf, fds));
    }
}
