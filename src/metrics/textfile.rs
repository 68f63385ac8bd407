//! node_exporter's textfile collector convention: one `*.prom` file per exporter in a directory
//! the collector reads, replaced atomically (a temp file renamed over it, so a scrape never
//! sees half a file; the temp name does not end in `.prom`, so it is never read).

use std::path::{Path, PathBuf};

use crate::files::{self, FileError};

/// The file `watch --metrics-dir DIR` keeps.
pub const FILE_NAME: &str = "vfioctl.prom";

/// `DIR/vfioctl.prom`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Replaces `DIR/vfioctl.prom` with `text` (mode 0644: node_exporter usually runs as another
/// user).
pub fn write(dir: &Path, text: &str) -> Result<(), FileError> {
    // Readable by the collector.
    files::write_atomic_public(dir, FILE_NAME, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a 1\n").unwrap();
        write(dir.path(), "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(path(dir.path())).unwrap(), "b 2\n");
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()], "no temp file left");
    }
}
