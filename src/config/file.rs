//! Reading the config file from disk: the one I/O step of `config`, and the check that the file
//! (which root acts on) cannot be changed by anyone else.
//!
//! Every command and the `watch` reload load through here: [`load_checked`] (every diagnostic),
//! [`load`] (the config or why not) and [`load_bytes`] (the same check on bytes already read,
//! for the fuzzer and tests). Only a regular file of at most [`MAX_CONFIG_BYTES`] is read, and
//! never with a blocking open (`crate::files::read_bounded`).

use std::path::Path;

use crate::config::diagnostic::{Diagnostic, Diagnostics, Reporter, Severity};
use crate::config::{check_str, Checked, Config};

/// The largest config file read, 1 MiB. A config for thousands of functions is a few hundred
/// KiB; a larger file is almost certainly not a config (a log, `/dev/zero` behind a link), and
/// parsing costs memory in proportion to the input (a 50 MB file took ~3 GB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config {0}")]
    Io(#[from] crate::files::FileError),
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// What to do about a config file that someone besides root (and the invoking user) can
/// change, as sshd's `StrictModes` does for its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An error: the config is refused (acting on it as root would let them drive the host).
    Refuse,
    /// A warning: reported, the config is used.
    Warn,
}

/// Checks config bytes already read; `path` is only used in messages. Bytes that are not
/// UTF-8 give one error located at the first bad byte (line:column), never a panic.
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Checked {
    match std::str::from_utf8(bytes) {
        Ok(source) => check_str(source, path),
        Err(e) => {
            let at = e.valid_up_to();
            let source = String::from_utf8_lossy(bytes);
            // The lossy text has the same valid prefix; at `at` it holds U+FFFD.
            let mut rep = Reporter::new(path, &source);
            rep.error(
                at..at + char::REPLACEMENT_CHARACTER.len_utf8(),
                "the file is not valid UTF-8",
                "TOML files are UTF-8 text; re-save the file as UTF-8 \
                 (`iconv -f latin1 -t utf-8` for a Latin-1 file)",
            );
            Checked {
                config: None,
                diagnostics: rep.finish(),
            }
        }
    }
}

/// Reads and checks the config at `path`: the config and its warnings (including who besides
/// root can change the file: an error with [`Access::Refuse`]), or why it could not be read.
/// Check `diagnostics.has_errors()`/`config` for validity.
pub fn load_checked(path: &Path, access: Access) -> Result<Checked, LoadError> {
    let bytes = crate::files::read_bounded(path, MAX_CONFIG_BYTES, "config file")?;
    let mut checked = load_bytes(path, &bytes);
    if let Some(mut d) = write_access_problem(path, nix::unistd::getuid().as_raw()) {
        if access == Access::Refuse {
            d.severity = Severity::Error;
            d.message.push_str("; refused");
            if let Some(h) = &mut d.hint {
                h.push_str(", or accept the risk with --allow-insecure-config");
            }
            checked.config = None;
        }
        checked.diagnostics.push(d);
        checked.diagnostics.sort();
    }
    Ok(checked)
}

/// Reads and checks the config at `path`; a config others can change is used with a logged
/// warning. See [`load_with`].
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with(path, Access::Warn)
}

/// Reads and checks the config at `path`, treating a config others can change as `access`
/// says. Warnings of a valid config are logged.
pub fn load_with(path: &Path, access: Access) -> Result<Config, LoadError> {
    let checked = load_checked(path, access)?;
    match checked.config {
        Some(c) => {
            for d in checked.diagnostics.items() {
                tracing::warn!("{}: {}", path.display(), d.message);
            }
            Ok(c)
        }
        None => Err(LoadError::Invalid(checked.diagnostics)),
    }
}

/// Who besides root and `invoker` can change the config at `path`: the file, or a directory
/// on the way to it, that its group or every user can write (a directory with the sticky bit,
/// like `/tmp`, only lets others replace files they own), or that another user owns.
/// Links are resolved first (a ConfigMap's `..data` link is normal). `None` when the path
/// cannot be resolved: reading it reports that.
pub fn write_access_problem(path: &Path, invoker: u32) -> Option<Diagnostic> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    let mut problem = who_can_write(meta.uid(), meta.mode(), invoker, false)
        .map(|who| (real.clone(), who, meta.mode()));
    let mut dir = real.parent();
    while problem.is_none() {
        let Some(d) = dir else { break };
        if let Ok(m) = std::fs::metadata(d) {
            problem = who_can_write(m.uid(), m.mode(), invoker, true)
                .map(|who| (d.to_path_buf(), who, m.mode()));
        }
        dir = d.parent();
    }
    let (at, who, mode) = problem?;
    Some(access_warning(path, &at, &who, mode))
}

/// Who besides root and `invoker` can write a file or directory with this owner and mode.
fn who_can_write(owner: u32, mode: u32, invoker: u32, is_dir: bool) -> Option<String> {
    let sticky = is_dir && mode & 0o1000 != 0;
    let mut who = Vec::new();
    if owner != 0 && owner != invoker {
        who.push(format!("its owner (uid {owner})"));
    }
    if !sticky && mode & 0o020 != 0 {
        who.push("its group".to_string());
    }
    if !sticky && mode & 0o002 != 0 {
        who.push("every user".to_string());
    }
    (!who.is_empty()).then(|| who.join(" and "))
}

fn access_warning(path: &Path, at: &Path, who: &str, mode: u32) -> Diagnostic {
    let what = if at == path {
        "the config".to_string()
    } else {
        format!("the config (through {})", at.display())
    };
    Diagnostic {
        severity: Severity::Warning,
        message: format!(
            "{what} can be changed by {who}, not only by root (mode {:04o})",
            mode & 0o7777
        ),
        file: path.to_path_buf(),
        location: None,
        hint: Some(format!(
            "vfioctl acts on this file as root; run `chown root:root {0} && chmod go-w {0}`",
            at.display()
        )),
        related: Vec::new(),
    }
}

/// The warning for a config file with this owner and mode that someone other than root can
/// change. `None` when only root can write it.
pub fn file_permission_warning(path: &Path, owner_uid: u32, mode: u32) -> Option<Diagnostic> {
    let who = who_can_write(owner_uid, mode, 0, false)?;
    Some(access_warning(path, path, &who, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_writable_files_pass() {
        let p = Path::new("/etc/vfio.toml");
        assert!(file_permission_warning(p, 0, 0o644).is_none());
        assert!(file_permission_warning(p, 0, 0o600).is_none());
        assert!(file_permission_warning(p, 0, 0o100644).is_none());
        let w = file_permission_warning(p, 0, 0o666).unwrap();
        assert!(
            w.message.contains("its group and every user"),
            "{}",
            w.message
        );
        assert_eq!(w.severity, Severity::Warning);
        let w = file_permission_warning(p, 1000, 0o644).unwrap();
        assert!(w.message.contains("uid 1000"), "{}", w.message);
        assert!(file_permission_warning(p, 0, 0o664).is_some());
    }

    #[test]
    fn load_reports_io_and_utf8_problems() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        assert!(matches!(load(&missing), Err(LoadError::Io(_))));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"version = 1\n# \xff\n").unwrap();
        let Err(LoadError::Invalid(d)) = load(&bad) else {
            panic!("non-UTF-8 file accepted");
        };
        let loc = d.items()[0].location.as_ref().unwrap();
        assert_eq!((loc.line, loc.column), (2, 3));
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "version = 1\n").unwrap();
        assert_eq!(load(&good).unwrap().version, 1);
    }

    /// Issue 15: a byte that is not UTF-8 anywhere (a Latin-1 `é` in a comment, a lone
    /// continuation byte, a truncated sequence at the end) is one located error, and rendering
    /// it does not panic (annotate-snippets sliced inside the replacement character).
    #[test]
    fn non_utf8_anywhere_is_a_located_error_that_renders() {
        let p = Path::new("c.toml");
        let cases: [(&[u8], (usize, usize)); 5] = [
            (b"version = 1\n# caf\xe9\n", (2, 6)),
            (b"\x80version = 1\n", (1, 1)),
            (b"version = 1\n[[device]]\nname = \"g\xc3\"\n", (3, 10)),
            (b"version = 1\n\xf0\x9f", (2, 1)),
            (b"version = \"\xe2\x82\"", (1, 12)),
        ];
        for (bytes, at) in cases {
            let checked = load_bytes(p, bytes);
            assert!(checked.config.is_none());
            let d = &checked.diagnostics.items()[0];
            assert!(d.message.contains("not valid UTF-8"), "{}", d.message);
            let loc = d.location.as_ref().unwrap();
            assert_eq!((loc.line, loc.column), at, "{bytes:?}");
            for style in [crate::config::Style::Plain, crate::config::Style::Color] {
                let text = checked.diagnostics.render(style);
                assert!(text.contains("not valid UTF-8"), "{text}");
            }
        }
    }

    #[test]
    fn fifos_and_huge_files_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = load(&fifo).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let err = load(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        let err = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
    }

    #[test]
    fn who_can_write_follows_strict_modes() {
        assert_eq!(who_can_write(0, 0o100644, 0, false), None);
        // The invoking user may own their own config.
        assert_eq!(who_can_write(1000, 0o100644, 1000, false), None);
        assert!(who_can_write(1000, 0o100644, 0, false).is_some());
        assert!(who_can_write(0, 0o40775, 0, true).is_some());
        // A sticky world-writable directory (/tmp) only lets others replace their own files.
        assert_eq!(who_can_write(0, 0o41777, 0, true), None);
        assert!(who_can_write(0, 0o100666, 0, false).is_some());
    }

    #[test]
    fn a_config_others_can_write_is_refused_or_warned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let c = dir.path().join("vfio.toml");
        std::fs::write(&c, "version = 1\n").unwrap();
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_with(&c, Access::Refuse).is_ok());
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o664)).unwrap();
        let Err(LoadError::Invalid(d)) = load_with(&c, Access::Refuse) else {
            panic!("group-writable config accepted");
        };
        let text = d.render(crate::config::Style::Plain);
        assert!(
            text.contains("its group") && text.contains("refused"),
            "{text}"
        );
        assert!(text.contains("--allow-insecure-config"), "{text}");
        assert!(load_with(&c, Access::Warn).is_ok());
        // A writable directory on the way counts too.
        std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let Err(LoadError::Invalid(d)) = load_with(&c, Access::Refuse) else {
            panic!("config in a world-writable directory accepted");
        };
        assert!(d.items()[0].message.contains("through"), "{:?}", d.items());
    }
}
