//! Disk usage of a directory tree, as `/system/df` and prune report it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Sum of the sizes of everything but directories under `dir`, hard
/// links counted once (Docker's `directory.Size`).
pub fn dir_size(dir: &Path) -> std::io::Result<i64> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let md = e.path().symlink_metadata()?;
            if md.is_dir() {
                stack.push(e.path());
                continue;
            }
            if md.len() == 0 || !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            total += md.len() as i64;
        }
    }
    Ok(total)
}
