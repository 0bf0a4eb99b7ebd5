//! The bytes of a model file: memory-mapped from disk natively, or owned (a file the browser
//! handed over), read the same way.

pub enum FileBytes {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(v: Vec<u8>) -> Self {
        FileBytes::Owned(v)
    }
}

/// Map `path` read-only.
#[cfg(not(target_arch = "wasm32"))]
pub fn map_file(path: &std::path::Path) -> Result<FileBytes, super::ModelError> {
    let io = |source| super::ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // Safety: opened read-only; a model file changed on disk while we use it is outside
    // what we promise.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(FileBytes::Mapped(map))
}
