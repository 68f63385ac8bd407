//! What the file-format targets share: a scratch directory of their own, so the real loaders
//! (bounded reads, format checks) run on the fuzzed bytes exactly as on a host.

use std::path::PathBuf;
use std::sync::OnceLock;

/// `$TMPDIR/vfioctl-fuzz-PID-NAME`, made once per process (fresh on every run).
pub fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("vfioctl-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("scratch directory");
        base
    })
    .join(name)
}

/// Writes `bytes` to `dir/file` (making `dir`), replacing what was there.
pub fn put(dir: &std::path::Path, file: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("scratch directory");
    std::fs::write(dir.join(file), bytes).expect("scratch file");
}
