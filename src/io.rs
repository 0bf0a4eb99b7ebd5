//! File writing that never leaves a half-written file behind.

use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temporary file in the same folder, renamed into place
/// when complete (a rename within one file system is atomic).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_name(path);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Make folder `dir` anew: `fill` writes the new contents into a temporary sibling folder,
/// which then replaces `dir` by renames (the previous `dir` stays whole until the new one is
/// complete). On an error nothing temporary is left; `io` names the path of a failed file
/// operation in the caller's error type.
pub fn replace_dir<E>(
    dir: &Path,
    io: impl Fn(&Path, std::io::Error) -> E,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    replace_together(dir, &[], io, fill)
}

/// `replace_dir` for `dir` together with `files` (path, contents): the folder and every file
/// are written in full under temporary names before anything is renamed into place, so a
/// failed write (a full disk) leaves the previous folder and files as they were, still a
/// matching set. Only a crash between the renames can separate them; then the previous folder
/// is left beside as `<dir>.old` (see `previous_dir`).
pub fn replace_together<E>(
    dir: &Path,
    files: &[(&Path, &[u8])],
    io: impl Fn(&Path, std::io::Error) -> E,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = sibling(dir, ".tmp");
    let old = sibling(dir, ".old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    let staged: Vec<PathBuf> = files.iter().map(|(path, _)| temp_name(path)).collect();
    let cleanup = || {
        let _ = std::fs::remove_dir_all(&tmp);
        for t in &staged {
            let _ = std::fs::remove_file(t);
        }
    };
    let written = std::fs::create_dir_all(&tmp)
        .map_err(|e| io(&tmp, e))
        .and_then(|()| fill(&tmp))
        .and_then(|()| {
            files
                .iter()
                .zip(&staged)
                .try_for_each(|((_, bytes), t)| std::fs::write(t, bytes).map_err(|e| io(t, e)))
        });
    if let Err(e) = written {
        cleanup();
        return Err(e);
    }
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
    for ((path, _), t) in files.iter().zip(&staged) {
        std::fs::rename(t, path).map_err(|e| io(path, e))?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(())
}

/// The folder `replace_dir` last completed at `dir`: `dir` itself, or `<dir>.old` when a crash
/// came between its two renames (the new folder not yet in place, the previous one set aside).
pub fn previous_dir(dir: &Path) -> Option<PathBuf> {
    let old = sibling(dir, ".old");
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else if old.is_dir() {
        Some(old)
    } else {
        None
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}{suffix}"))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
