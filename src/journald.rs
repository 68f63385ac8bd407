//! Logs straight into systemd's journal, with a priority and searchable fields, when standard
//! error is the journal (under a unit, `JOURNAL_STREAM` names the stream systemd connected to
//! stderr); on a terminal or in a file logs stay plain text (`tracing_subscriber::fmt`).
//!
//! Each event becomes one datagram of the journal's native protocol on
//! `/run/systemd/journal/socket`: `PRIORITY=` from the level, `MESSAGE=` (the message and its
//! other fields as `key=value`, as on a terminal), `SYSLOG_IDENTIFIER=vfioctl`, `CODE_FILE=` /
//! `CODE_LINE=`, and the fields a device's history is searched by:
//! `ADDRESS=` (the PCI function: an event's `device` or `address` field), `GROUP=` (IOMMU group),
//! `ACTION=`. Every other field is kept as `VFIOCTL_<NAME>=`. So
//! `journalctl -u vfioctl-watch ADDRESS=0000:01:00.0` lists one function's changes.

use std::fmt::Write as _;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`, `DEVICE:INODE`) names the file
/// `stderr` (its `st_dev`, `st_ino`): then our standard error is the journal.
pub fn names_stream(journal_stream: &str, stderr: (u64, u64)) -> bool {
    let Some((dev, ino)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((dev.parse::<u64>(), ino.parse::<u64>()), (Ok(d), Ok(i)) if (d, i) == stderr)
}

/// Whether this process's standard error is connected to the journal.
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => names_stream(&stream, (st.st_dev, st.st_ino)),
        Err(_) => false,
    }
}

/// The journal field an event field is stored under.
fn field_name(name: &str) -> String {
    match name {
        "device" | "address" => "ADDRESS".to_string(),
        "group" => "GROUP".to_string(),
        "action" => "ACTION".to_string(),
        other => {
            let mut n = String::from("VFIOCTL_");
            n.extend(other.chars().map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            }));
            n
        }
    }
}

/// The journal's priority (syslog severity) of a level.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Appends `KEY=value` to a native-protocol message; a value with a newline uses the binary
/// form (`KEY\n`, its length as a little-endian u64, the value, `\n`).
fn append(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

/// One event's fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.others.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others.push((field.name(), format!("{value:?}")));
        }
    }
}

/// The native-protocol message of one event.
pub fn encode(
    level: &Level,
    file: Option<&str>,
    line: Option<u32>,
    message: &str,
    fields: &[(&str, String)],
) -> Vec<u8> {
    let mut text = message.to_string();
    for (name, value) in fields {
        let _ = write!(text, " {name}={value}");
    }
    let mut out = Vec::with_capacity(256);
    append(&mut out, "PRIORITY", &priority(level).to_string());
    append(&mut out, "SYSLOG_IDENTIFIER", "vfioctl");
    append(&mut out, "MESSAGE", &text);
    if let Some(file) = file {
        append(&mut out, "CODE_FILE", file);
    }
    if let Some(line) = line {
        append(&mut out, "CODE_LINE", &line.to_string());
    }
    for (name, value) in fields {
        // "-" is how a step without a device says so; nothing to search by.
        if value.is_empty() || value == "-" {
            continue;
        }
        append(&mut out, &field_name(name), value);
    }
    out
}

/// A `tracing` layer that sends each event to the journal.
pub struct JournaldLayer {
    socket: UnixDatagram,
}

impl JournaldLayer {
    /// Connects to the journal's socket at `path` (normally [`JOURNAL_SOCKET`]).
    pub fn connect(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(JournaldLayer { socket })
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournaldLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let msg = encode(
            meta.level(),
            meta.file(),
            meta.line(),
            &fields.message,
            &fields.others,
        );
        // A lost log line must never stop the daemon; stderr still reaches the journal.
        if self.socket.send(&msg).is_err() {
            eprintln!("{}", fields.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_names_stderr_only_when_device_and_inode_match() {
        assert!(names_stream("8:1234", (8, 1234)));
        assert!(names_stream("8:1234\n", (8, 1234)));
        assert!(!names_stream("8:1235", (8, 1234)));
        assert!(!names_stream("9:1234", (8, 1234)));
        assert!(!names_stream("garbage", (8, 1234)));
        assert!(!names_stream("", (8, 1234)));
    }

    #[test]
    fn an_event_becomes_fields_a_device_history_is_searched_by() {
        let fields = [
            ("action", "bind".to_string()),
            ("device", "0000:01:00.0".to_string()),
            ("group", "8".to_string()),
            ("result", "ok".to_string()),
        ];
        let msg = encode(
            &Level::INFO,
            Some("src/apply/executor.rs"),
            Some(374),
            "bind to vfio-pci",
            &fields,
        );
        let text = String::from_utf8(msg).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "PRIORITY=6",
            "SYSLOG_IDENTIFIER=vfioctl",
            "MESSAGE=bind to vfio-pci action=bind device=0000:01:00.0 group=8 result=ok",
            "CODE_FILE=src/apply/executor.rs",
            "CODE_LINE=374",
            "ADDRESS=0000:01:00.0",
            "GROUP=8",
            "ACTION=bind",
            "VFIOCTL_RESULT=ok",
        ] {
            assert!(lines.contains(&want), "{want} missing in {lines:?}");
        }
        // A step without a device carries no ADDRESS.
        let text = String::from_utf8(encode(
            &Level::ERROR,
            None,
            None,
            "x",
            &[("device", "-".into())],
        ))
        .unwrap();
        assert!(text.starts_with("PRIORITY=3\n"), "{text}");
        assert!(!text.contains("ADDRESS"), "{text}");
    }

    #[test]
    fn a_multi_line_value_uses_the_binary_form() {
        let msg = encode(&Level::WARN, None, None, "config rejected:\nline 3", &[]);
        let key = b"MESSAGE\n";
        let at = msg.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let len = u64::from_le_bytes(msg[at..at + 8].try_into().unwrap());
        assert_eq!(len as usize, "config rejected:\nline 3".len());
        assert_eq!(
            &msg[at + 8..at + 8 + len as usize],
            b"config rejected:\nline 3"
        );
        assert_eq!(msg[at + 8 + len as usize], b'\n');
    }

    #[test]
    fn the_layer_sends_one_datagram_per_event() {
        use tracing_subscriber::layer::SubscriberExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        let layer = JournaldLayer::connect(&path).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(device = "0000:05:00.0", action = "unbind", "taking it over");
        });
        let mut buf = vec![0u8; 4096];
        journal
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = journal.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("PRIORITY=4\n"), "{text}");
        assert!(text.contains("ADDRESS=0000:05:00.0\n"), "{text}");
        assert!(text.contains("ACTION=unbind\n"), "{text}");
        assert!(
            text.contains("MESSAGE=taking it over device=0000:05:00.0 action=unbind\n"),
            "{text}"
        );
    }
}
