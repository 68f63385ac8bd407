//! The broker's wire format. A client sends one JSON request line (at most
//! [`MAX_REQUEST`] bytes) and half-closes; the broker answers with one JSON response, the
//! granted fds riding on its first bytes (`SCM_RIGHTS`). Every message carries
//! [`VERSION`]; a request of another version, malformed JSON, unknown fields or an oversized
//! request are refused with a reason and change nothing.
//!
//! Two requests (issue 19): a held domain, `{"version":1,"domain":"NAME"}` (the form of the
//! first version, unchanged byte for byte; `"kind":"domain"` may be added), and a fresh
//! iommufd, `{"version":1,"kind":"iommufd"}` (no `domain`): the broker opens `/dev/iommu` for
//! the caller and grants a description with an empty `domain`, `"iommufd":{"fd":0,"ioas":[]}`
//! and nothing else, carrying exactly that one fd. A `kind` this build does not know is
//! refused by name. The version stays 1: a request without `kind` means what it always did.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;
/// Largest response sent or accepted, in bytes.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Most fds one grant may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// What kind of thing a request asks for (`kind`; absent means [`Kind::Domain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A held domain, named by `domain`.
    Domain,
    /// A freshly opened iommufd, tied to no domain.
    Iommufd,
}

impl Kind {
    /// The `kind` values this build knows.
    pub const KNOWN: [&'static str; 2] = ["domain", "iommufd"];
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    /// Absent in the first form of the protocol (a domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// The domain's name in the config (domain requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// A parsed, checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    Domain(String),
    Iommufd,
}

impl Request {
    /// A held domain (encodes as the first version's `{"version":1,"domain":NAME}`).
    pub fn open(domain: &str) -> Self {
        Request {
            version: VERSION,
            kind: None,
            domain: Some(domain.to_string()),
        }
    }

    /// A fresh iommufd: `{"version":1,"kind":"iommufd"}`.
    pub fn iommufd() -> Self {
        Request {
            version: VERSION,
            kind: Some(Kind::Iommufd),
            domain: None,
        }
    }

    /// What the request asks for, checked: a domain request names a domain, an iommufd
    /// request names none.
    pub fn ask(&self) -> Result<Ask, ProtocolError> {
        match (self.kind.unwrap_or(Kind::Domain), &self.domain) {
            (Kind::Domain, Some(d)) if !d.trim().is_empty() => Ok(Ask::Domain(d.clone())),
            (Kind::Domain, _) => Err(ProtocolError::NoDomain),
            (Kind::Iommufd, None) => Ok(Ask::Iommufd),
            (Kind::Iommufd, Some(_)) => Err(ProtocolError::Malformed(
                "an iommufd request names no domain (a fresh iommufd is tied to none); drop \"domain\", or drop \"kind\" to ask for the domain".into(),
            )),
        }
    }
}

/// A window of the granted domain; `fd` indexes the received fds (its memfd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowDesc {
    pub name: String,
    pub iova: u64,
    pub size: u64,
    pub fd: usize,
}

/// A group of the granted domain: its `/dev/vfio/N` fd and the container it is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDesc {
    pub group: u32,
    pub fd: usize,
    /// Index into [`Description::containers`].
    pub container: usize,
}

/// A member function: its address and, on legacy, the fd of its group (open it with
/// `VFIO_GROUP_GET_DEVICE_FD`); on iommufd its own cdev fd, bound to the iommufd and attached
/// to the IOAS `ioas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDesc {
    pub address: String,
    pub group: u32,
    pub fd: usize,
    /// The IOAS the device is attached to (iommufd only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioas: Option<u32>,
}

/// One IOAS of an iommufd domain and the groups whose devices are attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoasDesc {
    pub id: u32,
    pub groups: Vec<u32>,
}

/// The iommufd of a domain on the iommufd backend: its fd index and its IOASes (one, or one
/// per group with `per-group` placement), in container order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommufdDesc {
    pub fd: usize,
    pub ioas: Vec<IoasDesc>,
}

/// What a grant describes; the fds arrive in the order the indices give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    pub version: u32,
    pub domain: String,
    /// fd indices of the containers (one for `shared`, one per group for `per-group`).
    pub containers: Vec<usize>,
    pub groups: Vec<GroupDesc>,
    pub windows: Vec<WindowDesc>,
    pub devices: Vec<DeviceDesc>,
    /// iommufd backend: the iommufd and its IOASes (then `containers` and `groups` are
    /// empty and each device's fd is its cdev). Absent on legacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommufd: Option<IommufdDesc>,
}

impl Description {
    /// How many fds the description names (every index must be below this).
    pub fn fd_count(&self) -> usize {
        self.containers
            .iter()
            .copied()
            .chain(self.groups.iter().map(|g| g.fd))
            .chain(self.windows.iter().map(|w| w.fd))
            .chain(self.devices.iter().map(|d| d.fd))
            .chain(self.iommufd.iter().map(|i| i.fd))
            .map(|i| i + 1)
            .max()
            .unwrap_or(0)
    }
}

/// The broker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Granted(Description),
    Refused { version: u32, reason: String },
}

impl Response {
    pub fn refused(reason: impl Into<String>) -> Self {
        Response::Refused {
            version: VERSION,
            reason: reason.into(),
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message too large: more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("protocol version {got} is not supported (this vfioctl speaks version {VERSION}); use matching vfioctl versions")]
    Version { got: u32 },
    #[error("the request names no domain")]
    NoDomain,
    #[error("unknown request kind {0} (this vfioctl knows \"domain\" and \"iommufd\"); use matching vfioctl versions")]
    UnknownKind(String),
    #[error("the description names fd {index} but {received} fd(s) arrived")]
    MissingFd { index: usize, received: usize },
}

/// Parses a request (without its trailing newline, if any).
pub fn parse_request(bytes: &[u8]) -> Result<Request, ProtocolError> {
    if bytes.len() > MAX_REQUEST {
        return Err(ProtocolError::TooLarge { limit: MAX_REQUEST });
    }
    // Read the version first, so an old or new client hears about the version, not a field.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let got = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| ProtocolError::Malformed("no numeric \"version\" field".into()))?;
    if got != u64::from(VERSION) {
        return Err(ProtocolError::Version {
            got: u32::try_from(got).unwrap_or(u32::MAX),
        });
    }
    // Then the kind, so a newer client hears which kind is not known here.
    match value.get("kind") {
        None => {}
        Some(serde_json::Value::String(k)) if Kind::KNOWN.contains(&k.as_str()) => {}
        Some(other) => {
            let mut shown = other.to_string();
            if shown.len() > 64 {
                shown = format!("{}...", shown.chars().take(64).collect::<String>());
            }
            return Err(ProtocolError::UnknownKind(shown));
        }
    }
    let req: Request =
        serde_json::from_value(value).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    req.ask()?;
    Ok(req)
}

/// Encodes a request as one line.
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut v = serde_json::to_vec(req).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Encodes a response.
pub fn encode_response(resp: &Response) -> Result<Vec<u8>, ProtocolError> {
    let v = serde_json::to_vec(resp).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if v.len() > MAX_RESPONSE {
        return Err(ProtocolError::TooLarge {
            limit: MAX_RESPONSE,
        });
    }
    Ok(v)
}

/// Parses a response and checks a grant against the number of fds that arrived.
pub fn parse_response(bytes: &[u8], fds_received: usize) -> Result<Response, ProtocolError> {
    if bytes.len() > MAX_RESPONSE {
        return Err(ProtocolError::TooLarge {
            limit: MAX_RESPONSE,
        });
    }
    let resp: Response =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let version = match &resp {
        Response::Granted(d) => d.version,
        Response::Refused { version, .. } => *version,
    };
    if version != VERSION {
        return Err(ProtocolError::Version { got: version });
    }
    if let Response::Granted(d) = &resp {
        let need = d.fd_count();
        if need > fds_received {
            return Err(ProtocolError::MissingFd {
                index: need - 1,
                received: fds_received,
            });
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> Description {
        Description {
            version: VERSION,
            domain: "dma".into(),
            containers: vec![0],
            groups: vec![GroupDesc {
                group: 7,
                fd: 1,
                container: 0,
            }],
            windows: vec![WindowDesc {
                name: "buf".into(),
                iova: 0x10_0000,
                size: 0x20_0000,
                fd: 2,
            }],
            devices: vec![DeviceDesc {
                address: "0000:00:03.0".into(),
                group: 7,
                fd: 1,
                ioas: None,
            }],
            iommufd: None,
        }
    }

    fn iommufd_desc() -> Description {
        Description {
            version: VERSION,
            domain: "dma".into(),
            containers: vec![],
            groups: vec![],
            windows: vec![WindowDesc {
                name: "buf".into(),
                iova: 0x10_0000,
                size: 0x20_0000,
                fd: 2,
            }],
            devices: vec![DeviceDesc {
                address: "0000:00:03.0".into(),
                group: 7,
                fd: 1,
                ioas: Some(2),
            }],
            iommufd: Some(IommufdDesc {
                fd: 0,
                ioas: vec![IoasDesc {
                    id: 2,
                    groups: vec![7],
                }],
            }),
        }
    }

    #[test]
    fn an_iommufd_grant_round_trips_and_counts_its_fds() {
        let resp = Response::Granted(iommufd_desc());
        let bytes = encode_response(&resp).unwrap();
        assert_eq!(parse_response(&bytes, 3).unwrap(), resp);
        assert_eq!(
            parse_response(&bytes, 2),
            Err(ProtocolError::MissingFd {
                index: 2,
                received: 2
            })
        );
        let mut no_window = iommufd_desc();
        no_window.windows.clear();
        assert_eq!(no_window.fd_count(), 2, "the device and the iommufd count");
        // A legacy description is what it was: no iommufd, no ioas keys.
        let text = String::from_utf8(encode_response(&Response::Granted(desc())).unwrap()).unwrap();
        assert!(
            !text.contains("iommufd") && !text.contains("ioas"),
            "{text}"
        );
    }

    #[test]
    fn a_request_round_trips() {
        let r = Request::open("dma");
        let line = encode_request(&r);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(parse_request(&line[..line.len() - 1]).unwrap(), r);
    }

    #[test]
    fn the_first_versions_domain_request_is_unchanged() {
        // Byte for byte what a vfioctl before issue 19 sends, and what it parses to.
        let line = encode_request(&Request::open("dma"));
        assert_eq!(line, b"{\"version\":1,\"domain\":\"dma\"}\n");
        let req = parse_request(b"{\"version\":1,\"domain\":\"dma\"}").unwrap();
        assert_eq!(req, Request::open("dma"));
        assert_eq!(req.ask(), Ok(Ask::Domain("dma".into())));
        // The explicit kind means the same.
        let req = parse_request(b"{\"version\":1,\"kind\":\"domain\",\"domain\":\"dma\"}").unwrap();
        assert_eq!(req.ask(), Ok(Ask::Domain("dma".into())));
    }

    #[test]
    fn an_iommufd_request_round_trips_and_names_no_domain() {
        let line = encode_request(&Request::iommufd());
        assert_eq!(line, b"{\"version\":1,\"kind\":\"iommufd\"}\n");
        let req = parse_request(&line[..line.len() - 1]).unwrap();
        assert_eq!(req, Request::iommufd());
        assert_eq!(req.ask(), Ok(Ask::Iommufd));
        let err =
            parse_request(b"{\"version\":1,\"kind\":\"iommufd\",\"domain\":\"dma\"}").unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Malformed(m) if m.contains("names no domain")),
            "{err:?}"
        );
        assert_eq!(
            parse_request(b"{\"version\":1,\"kind\":\"domain\"}"),
            Err(ProtocolError::NoDomain)
        );
    }

    #[test]
    fn unknown_kinds_are_refused_by_name() {
        for (bad, shown) in [
            (&b"{\"version\":1,\"kind\":\"vdpa\"}"[..], "\"vdpa\""),
            (b"{\"version\":1,\"kind\":\"IOMMUFD\"}", "\"IOMMUFD\""),
            (b"{\"version\":1,\"kind\":7,\"domain\":\"x\"}", "7"),
            (b"{\"version\":1,\"kind\":null}", "null"),
        ] {
            let err = parse_request(bad).unwrap_err();
            assert_eq!(err, ProtocolError::UnknownKind(shown.into()));
            assert!(err.to_string().contains("\"iommufd\""), "{err}");
        }
        // A long kind is cut in the reason.
        let long = format!("{{\"version\":1,\"kind\":\"{}\"}}", "k".repeat(1000));
        let err = parse_request(long.as_bytes()).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"[1,2]",
            b"{\"domain\":\"x\"}",
            b"{\"version\":\"1\",\"domain\":\"x\"}",
            b"{\"version\":1,\"domain\":\"x\",\"extra\":true}",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_request(bad), Err(ProtocolError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse_request(bad)
            );
        }
        assert_eq!(
            parse_request(b"{\"version\":1,\"domain\":\"  \"}"),
            Err(ProtocolError::NoDomain)
        );
        assert_eq!(
            parse_request(b"{\"version\":1}"),
            Err(ProtocolError::NoDomain)
        );
    }

    #[test]
    fn other_versions_are_named() {
        assert_eq!(
            parse_request(b"{\"version\":2,\"domain\":\"x\"}"),
            Err(ProtocolError::Version { got: 2 })
        );
        // A future request with fields we do not know is still told about the version.
        assert_eq!(
            parse_request(b"{\"version\":9,\"domain\":\"x\",\"new\":1}"),
            Err(ProtocolError::Version { got: 9 })
        );
    }

    #[test]
    fn oversized_requests_are_refused_before_parsing() {
        let mut big = b"{\"version\":1,\"domain\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST));
        big.extend(b"\"}");
        assert_eq!(
            parse_request(&big),
            Err(ProtocolError::TooLarge { limit: MAX_REQUEST })
        );
    }

    #[test]
    fn a_grant_round_trips_and_counts_its_fds() {
        let resp = Response::Granted(desc());
        let bytes = encode_response(&resp).unwrap();
        assert_eq!(parse_response(&bytes, 3).unwrap(), resp);
        assert_eq!(desc().fd_count(), 3);
        assert_eq!(
            parse_response(&bytes, 2),
            Err(ProtocolError::MissingFd {
                index: 2,
                received: 2
            })
        );
    }

    #[test]
    fn a_refusal_round_trips() {
        let resp = Response::refused("uid 1001 is not named");
        let bytes = encode_response(&resp).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"result\":\"refused\""), "{text}");
        assert_eq!(parse_response(&bytes, 0).unwrap(), resp);
    }

    #[test]
    fn responses_of_another_version_are_refused() {
        let bytes = br#"{"result":"refused","version":5,"reason":"x"}"#;
        assert_eq!(
            parse_response(bytes, 0),
            Err(ProtocolError::Version { got: 5 })
        );
    }
}
