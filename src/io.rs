//! File writing that never leaves a half-written file behind, never writes over what the
//! command reads, and cleans up after a run that was killed mid-write.

use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temporary file in the same folder, renamed into place
/// when complete (a rename within one file system is atomic). Temporary files a killed run
/// left for the same `path` are removed first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    remove_stale_temps(path, "tmp");
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
    for (path, _) in files {
        remove_stale_temps(path, "tmp");
    }
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
    // The renames run under RENAMING: a process that exits on a second Ctrl-C takes it first,
    // so it never leaves the set half renamed.
    let _renaming = RENAMING.lock().unwrap_or_else(|e| e.into_inner());
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

/// Held while `replace_together` renames a set into place; whoever exits the process mid-run
/// (the second Ctrl-C) takes it first.
pub static RENAMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

/// The longest file name most file systems take (ext4, APFS, NTFS: 255 bytes).
const NAME_MAX: usize = 255;

/// `name` with `prefix` before and `suffix` after, in at most `NAME_MAX` bytes: a name too
/// long to take them is cut (at a character boundary) and a hash of the whole name keeps the
/// result unique, so a legal 255-byte output name still gets its temporary sibling.
fn fitted(prefix: &str, name: &str, suffix: &str) -> String {
    if prefix.len() + name.len() + suffix.len() <= NAME_MAX {
        return format!("{prefix}{name}{suffix}");
    }
    // FNV-1a: stable across runs and builds (a killed run's leftovers are found by name).
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let tag = format!("~{hash:016x}");
    let mut keep = NAME_MAX - prefix.len() - suffix.len() - tag.len();
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{prefix}{}{tag}{suffix}", &name[..keep])
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    dir.with_file_name(fitted("", &file_name(dir), suffix))
}

/// The start of the names of `path`'s temporary siblings of this `kind` (`tmp`, `merge`):
/// `.NAME.KIND-` and the writing process's id after it.
fn temp_prefix(path: &Path, kind: &str) -> String {
    // Room for the longest process id (10 digits) after the prefix.
    let full = fitted(".", &file_name(path), &format!(".{kind}-0000000000"));
    full[..full.len() - 10].to_string()
}

/// A temporary sibling of `path` for this process: `.NAME.KIND-PID`.
pub fn temp_sibling(path: &Path, kind: &str) -> PathBuf {
    path.with_file_name(format!("{}{}", temp_prefix(path, kind), std::process::id()))
}

fn temp_name(path: &Path) -> PathBuf {
    temp_sibling(path, "tmp")
}

/// Remove the temporary siblings of `path` of this `kind` that a run killed mid-write left
/// (a file or a folder named `.NAME.KIND-PID` whose process is gone). Those of a running
/// process are its own business and stay; errors are ignored (it is housekeeping).
pub fn remove_stale_temps(path: &Path, kind: &str) {
    let prefix = temp_prefix(path, kind);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let stale = entry.path();
        let _ = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&stale),
            _ => std::fs::remove_file(&stale),
        };
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks that the process exists; EPERM means it does, under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    // No cheap check: leave every leftover alone rather than remove a live run's.
    true
}

/// Why an output was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{output}: {flag} writes over {input_flag} {input}; choose another {flag} (--force \
         never replaces what the command reads)"
    )]
    IsInput {
        flag: String,
        output: String,
        input_flag: String,
        input: String,
    },
}

/// A path the command reads: the flag that named it, and the file or folder.
pub type Input<'a> = (&'a str, &'a Path);

/// Refuse to write `outputs` (flag, path of a file written or a folder replaced) over any of
/// `inputs`, whatever `--force` says: an output that is an input (by canonical path, so
/// `dir/../dir/f` and symbolic links count, and by device and inode, so hard links count), an
/// existing file inside an input folder (a model or adapter folder's own files), or an
/// output folder that holds an input.
pub fn refuse_overwriting_inputs(
    outputs: &[(&str, &Path)],
    inputs: &[Input<'_>],
) -> Result<(), OutputError> {
    for &(flag, output) in outputs {
        let out = resolved(output);
        for &(input_flag, input) in inputs {
            let inp = resolved(input);
            let clash = out == inp
                || same_file(output, input)
                || (input.is_dir() && output.exists() && out.starts_with(&inp))
                || (output.is_dir() && inp.starts_with(&out));
            if clash {
                return Err(OutputError::IsInput {
                    flag: flag.to_string(),
                    output: output.display().to_string(),
                    input_flag: input_flag.to_string(),
                    input: input.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same file or folder (canonical path, or device and inode).
pub fn same_path(a: &Path, b: &Path) -> bool {
    resolved(a) == resolved(b) || same_file(a, b)
}

/// `path` made absolute with every symbolic link and `..` resolved, as far as it exists: the
/// nearest existing ancestor is canonicalized and the rest appended.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut rest = Vec::new();
    let mut at = absolute.as_path();
    loop {
        if let Ok(p) = at.canonicalize() {
            return rest.iter().rev().fold(p, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return absolute,
        }
    }
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_a: &Path, _b: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_fit_a_255_byte_name() {
        for len in [1, 200, 240, 251, 255] {
            let name = "n".repeat(len);
            let path = Path::new("/x").join(&name);
            for t in [
                temp_sibling(&path, "tmp"),
                temp_sibling(&path, "merge"),
                sibling(&path, ".tmp"),
                sibling(&path, ".old"),
            ] {
                let t = file_name(&t);
                assert!(t.len() <= NAME_MAX, "{len}: {} bytes", t.len());
                assert_ne!(t, name);
            }
        }
        // Two long names that share their first 240 bytes get different temporary names.
        let a = format!("{}a", "n".repeat(250));
        let b = format!("{}b", "n".repeat(250));
        assert_ne!(
            temp_sibling(Path::new(&a), "tmp"),
            temp_sibling(Path::new(&b), "tmp")
        );
        // A multi-byte character is never cut in half.
        let wide = "é".repeat(127);
        assert!(file_name(&temp_sibling(Path::new(&wide), "tmp")).len() <= NAME_MAX);
    }
}
