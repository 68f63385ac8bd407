//! Re-reading the config while running: the last good config stays in force.
//!
//! A reload that fails to read or validate is reported with its diagnostics and changes
//! nothing: no pass runs for it. A reload that yields the same normalised config (a comment
//! edited, a ConfigMap swapped to identical content) is not a change either.

use std::path::{Path, PathBuf};

use crate::config::{Access, Config, LoadError, Style};

/// Why a config could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {report}")]
pub struct ConfigRejected {
    pub path: PathBuf,
    /// What is wrong, rendered for a log (all diagnostics, with locations).
    pub report: String,
}

/// Reads and checks a config file. The real one parses `/etc/vfio.toml`; tests use fakes.
pub trait ConfigLoader {
    fn load(&mut self, path: &Path) -> Result<Config, ConfigRejected>;
}

impl<F: FnMut(&Path) -> Result<Config, ConfigRejected>> ConfigLoader for F {
    fn load(&mut self, path: &Path) -> Result<Config, ConfigRejected> {
        self(path)
    }
}

/// The real loader: reads and checks the file on disk with the one config loader
/// ([`crate::config::load_with`]), refusing a config others can change; renders every
/// diagnostic. A file that is not UTF-8, not a regular file (a FIFO never blocks the reload)
/// or too large is rejected like any invalid config: the last good one stays.
pub fn load_from_disk(path: &Path) -> Result<Config, ConfigRejected> {
    load_from_disk_with(path, Access::Refuse)
}

/// [`load_from_disk`] with a chosen treatment of a config others can change.
pub fn load_from_disk_with(path: &Path, access: Access) -> Result<Config, ConfigRejected> {
    crate::config::load_with(path, access).map_err(|e| ConfigRejected {
        path: path.to_path_buf(),
        report: match e {
            LoadError::Invalid(diagnostics) => diagnostics.render(Style::Plain),
            io @ LoadError::Io(_) => io.to_string(),
        },
    })
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file now says something else; the new config is in force.
    Replaced,
    /// Same desired state as before.
    Unchanged,
    /// The new file is invalid or unreadable; the last good config stays.
    Rejected(ConfigRejected),
}

/// The config in force and where it comes from.
#[derive(Debug, Clone)]
pub struct ConfigState {
    path: PathBuf,
    current: Config,
    generation: u64,
}

impl ConfigState {
    /// A config already loaded from `path` (the first load, done by the caller).
    pub fn new(path: &Path, current: Config) -> Self {
        ConfigState {
            path: path.to_path_buf(),
            current,
            generation: 1,
        }
    }

    /// The first load. Unlike a reload, there is no last good config to fall back on.
    pub fn load(path: &Path, loader: &mut dyn ConfigLoader) -> Result<Self, ConfigRejected> {
        let current = loader.load(path)?;
        Ok(ConfigState {
            path: path.to_path_buf(),
            current,
            generation: 1,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config in force.
    pub fn current(&self) -> &Config {
        &self.current
    }

    /// Counts the configs taken so far (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Re-reads the file; keeps the current config unless the new one is valid.
    pub fn reload(&mut self, loader: &mut dyn ConfigLoader) -> ReloadOutcome {
        match loader.load(&self.path) {
            Err(rejected) => ReloadOutcome::Rejected(rejected),
            Ok(new) if new == self.current => ReloadOutcome::Unchanged,
            Ok(new) => {
                self.current = new;
                self.generation += 1;
                ReloadOutcome::Replaced
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: u32) -> Config {
        Config {
            version,
            ..Config::default()
        }
    }

    fn rejected() -> ConfigRejected {
        ConfigRejected {
            path: "/etc/vfio.toml".into(),
            report: "line 3: expected `=`".into(),
        }
    }

    #[test]
    fn invalid_reload_keeps_the_last_good_config() {
        let mut next: Vec<Result<Config, ConfigRejected>> =
            vec![Ok(config(1)), Err(rejected()), Ok(config(2)), Ok(config(2))];
        next.reverse();
        let mut loader = move |_: &Path| next.pop().unwrap_or_else(|| Err(rejected()));
        let mut state = ConfigState::load(Path::new("/etc/vfio.toml"), &mut loader).unwrap();
        assert_eq!(state.current().version, 1);

        assert_eq!(
            state.reload(&mut loader),
            ReloadOutcome::Rejected(rejected())
        );
        assert_eq!(state.current().version, 1);
        assert_eq!(state.generation(), 1);

        assert_eq!(state.reload(&mut loader), ReloadOutcome::Replaced);
        assert_eq!(state.current().version, 2);
        assert_eq!(state.generation(), 2);

        assert_eq!(state.reload(&mut loader), ReloadOutcome::Unchanged);
        assert_eq!(state.generation(), 2);
    }

    /// Issue 15: a reload of a file that is not UTF-8, or of a FIFO, is rejected (no panic, no
    /// blocking open) and the last good config stays.
    #[test]
    fn real_reload_of_bad_bytes_or_a_fifo_keeps_the_last_good_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("vfio.toml");
        std::fs::write(&path, "version = 1\n").unwrap();
        let mut loader = load_from_disk;
        let mut state = ConfigState::load(&path, &mut loader).unwrap();
        std::fs::write(&path, b"version = 1\n# caf\xe9\n").unwrap();
        let ReloadOutcome::Rejected(r) = state.reload(&mut loader) else {
            panic!("non-UTF-8 reload taken");
        };
        assert!(r.report.contains("not valid UTF-8"), "{}", r.report);
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let ReloadOutcome::Rejected(r) = state.reload(&mut loader) else {
            panic!("FIFO reload taken");
        };
        assert!(r.report.contains("FIFO"), "{}", r.report);
        assert_eq!(state.current().version, 1);
        assert_eq!(state.generation(), 1);
    }

    #[test]
    fn first_load_failure_is_an_error() {
        let mut loader = |_: &Path| Err(rejected());
        assert!(ConfigState::load(Path::new("/etc/vfio.toml"), &mut loader).is_err());
    }
}
