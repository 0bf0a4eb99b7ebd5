//! Models by name (native only): a name from the catalog the page shows (`web/models.json`),
//! or `hf:ORG/REPO/FILE.gguf` / `hf:ORG/REPO` (a Hugging Face folder of safetensors), downloaded
//! into the cache as `mlx_lm --model` and `huggingface_hub` do: resumed where a download
//! stopped (HTTP Range), its size and SHA-256 recorded when whole and checked against the
//! catalog's where it gives them, `HF_TOKEN` sent to the Hugging Face endpoint
//! (`HF_ENDPOINT`, default https://huggingface.co), progress as every long command shows it.
//!
//! Cache layout: `<cache>/models/<name>/<file>` with `<file>.part` while it downloads and
//! `meta.json` (`{ "files": [{ name, url, size, sha256 }] }`) written once every file is whole;
//! a model whose meta.json is present and whose files have its sizes is used without a request.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::train::model_source::cache_dir;

/// The catalog the page and the CLI share.
const CATALOG: &str = include_str!("../web/models.json");

#[derive(Clone, Debug, Deserialize)]
pub struct Catalog {
    pub models: Vec<CatalogEntry>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub quant: String,
    #[serde(default)]
    pub megabytes: f64,
    pub files: Vec<CatalogFile>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CatalogFile {
    pub name: String,
    pub url: String,
    /// The file's SHA-256 (hex), checked when given.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// What `meta.json` records of a whole download.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Kept {
    pub files: Vec<KeptFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeptFile {
    pub name: String,
    pub url: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{0}")]
    Msg(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The catalog: `WEBQLORA_CATALOG` (a models.json file) if set, else the built-in one.
pub fn catalog() -> Result<Catalog, HubError> {
    let (text, from) = match std::env::var_os("WEBQLORA_CATALOG") {
        Some(path) => {
            let path = PathBuf::from(path);
            let from = format!("WEBQLORA_CATALOG={}", path.display());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| HubError::Msg(format!("{from}: {e}")))?;
            (text, from)
        }
        None => (CATALOG.to_string(), "web/models.json".to_string()),
    };
    let catalog: Catalog =
        serde_json::from_str(&text).map_err(|e| HubError::Msg(format!("{from}: {e}")))?;
    // An id names the model's folder in the cache: a plain name, never a path out of it.
    if let Some(m) = catalog.models.iter().find(|m| !plain_name(&m.id)) {
        return Err(HubError::Msg(format!(
            "{from}: model id {:?} is not a plain name (letters, digits, '.', '-', '_'; not \
             starting with '.')",
            m.id
        )));
    }
    Ok(catalog)
}

/// A name that stays one folder: not empty, no separator, not starting with '.'.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The Hugging Face endpoint: `HF_ENDPOINT` without a trailing slash, as huggingface_hub.
pub fn hf_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into())
        .trim_end_matches('/')
        .to_string()
}

/// A model to download: where it goes and its files.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The cache folder's name.
    pub key: String,
    pub files: Vec<CatalogFile>,
    /// Files that may be absent (a folder's optional tokenizer or generation config).
    pub optional: Vec<CatalogFile>,
    /// What the path is: the one GGUF file, or the folder.
    pub gguf: bool,
}

/// What `name` asks for, if it is a model name rather than a path: a catalog id (or its
/// display name, any case) or `hf:ORG/REPO[@REVISION][/FILE.gguf]`.
pub fn wanted(name: &str) -> Result<Option<Wanted>, HubError> {
    if let Some(rest) = name.strip_prefix("hf:") {
        return hf_wanted(rest).map(Some);
    }
    let catalog = catalog()?;
    let Some(entry) = catalog
        .models
        .iter()
        .find(|m| m.id == name || m.name.eq_ignore_ascii_case(name))
    else {
        return Ok(None);
    };
    let gguf = entry.files.len() == 1 && entry.files[0].name.ends_with(".gguf");
    Ok(Some(Wanted {
        key: entry.id.clone(),
        files: entry.files.clone(),
        optional: Vec::new(),
        gguf,
    }))
}

fn hf_wanted(rest: &str) -> Result<Wanted, HubError> {
    let bad = || {
        HubError::Msg(format!(
            "hf:{rest}: expected hf:ORG/REPO/FILE.gguf or hf:ORG/REPO (a folder of safetensors), \
             optionally with @REVISION after REPO"
        ))
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 2
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad());
    }
    let (repo, revision) = match parts[1].split_once('@') {
        Some((r, rev)) if !r.is_empty() && !rev.is_empty() => (r, rev),
        Some(_) => return Err(bad()),
        None => (parts[1], "main"),
    };
    let org = parts[0];
    let base = format!("{}/{org}/{repo}/resolve/{revision}", hf_endpoint());
    let file = |name: &str| CatalogFile {
        name: name.rsplit('/').next().unwrap_or(name).to_string(),
        url: format!("{base}/{name}"),
        sha256: None,
        size: None,
    };
    let key = format!("hf--{org}--{repo}--{revision}").replace(['/', '\\'], "-");
    if parts.len() > 2 {
        let path = parts[2..].join("/");
        if !path.ends_with(".gguf") {
            return Err(bad());
        }
        return Ok(Wanted {
            key: format!("{key}--{}", path.replace('/', "-")),
            files: vec![file(&path)],
            optional: Vec::new(),
            gguf: true,
        });
    }
    Ok(Wanted {
        key,
        files: vec![file("config.json"), file("model.safetensors")],
        optional: vec![
            file("tokenizer.json"),
            file("tokenizer_config.json"),
            file("generation_config.json"),
        ],
        gguf: false,
    })
}

/// Where a model by name is kept.
pub fn model_dir(key: &str) -> PathBuf {
    cache_dir().join("models").join(key)
}

/// The path of `wanted` in the cache: the GGUF file or the folder.
pub fn model_path(wanted: &Wanted) -> PathBuf {
    let dir = model_dir(&wanted.key);
    if wanted.gguf {
        dir.join(&wanted.files[0].name)
    } else {
        dir
    }
}

/// What the cache holds of a model, if it is whole: meta.json, with every file of its size.
pub fn kept(key: &str) -> Option<Kept> {
    let dir = model_dir(key);
    let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let kept: Kept = serde_json::from_str(&text).ok()?;
    kept.files
        .iter()
        .all(|f| std::fs::metadata(dir.join(&f.name)).is_ok_and(|m| m.len() == f.size))
        .then_some(kept)
}

/// Progress of a download: called with (bytes so far, total bytes if known, file name).
pub type OnProgress<'a> = &'a mut dyn FnMut(u64, Option<u64>, &str);

/// Make `wanted` whole in the cache (downloading what is missing, resuming a part) and
/// return its path.
///
/// One process at a time downloads a model: the others wait on its lock file
/// (`models/.<key>.lock`, never removed, so that no two processes ever hold two different
/// files) and then find it kept. A download that fails leaves its parts for the next run to
/// resume, and no empty folder.
pub fn fetch(wanted: &Wanted, progress: OnProgress) -> Result<PathBuf, HubError> {
    if kept(&wanted.key).is_some() {
        return Ok(model_path(wanted));
    }
    let models = cache_dir().join("models");
    std::fs::create_dir_all(&models).map_err(io_err(&models))?;
    let lock_path = models.join(format!(".{}.lock", wanted.key));
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "webqlora: another process is downloading {}; waiting for it",
                wanted.key
            );
            lock.lock().map_err(io_err(&lock_path))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
    }
    if kept(&wanted.key).is_some() {
        return Ok(model_path(wanted));
    }
    let dir = model_dir(&wanted.key);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let fetched = fetch_locked(wanted, &dir, progress);
    if fetched.is_err() {
        // Only an empty folder goes (`remove_dir` refuses any other): parts stay to resume.
        let _ = std::fs::remove_dir(&dir);
    }
    drop(lock);
    fetched
}

/// `fetch`'s download, under its lock, into `dir`.
fn fetch_locked(wanted: &Wanted, dir: &Path, progress: OnProgress) -> Result<PathBuf, HubError> {
    let dir = dir.to_path_buf();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("webqlora/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut files = Vec::new();
    let required = wanted.files.iter().map(|f| (f, true));
    for (file, required) in required.chain(wanted.optional.iter().map(|f| (f, false))) {
        match download(&agent, file, &dir, progress)? {
            Some(kept) => files.push(kept),
            None if file.name == "model.safetensors" && !wanted.gguf => {
                // A sharded folder: the index names the shards.
                let index_file = CatalogFile {
                    name: "model.safetensors.index.json".into(),
                    url: file
                        .url
                        .replace("model.safetensors", "model.safetensors.index.json"),
                    sha256: None,
                    size: None,
                };
                let kept = download(&agent, &index_file, &dir, progress)?.ok_or_else(|| {
                    HubError::Msg(format!(
                        "{}: no model.safetensors and no model.safetensors.index.json (HTTP 404)",
                        file.url.trim_end_matches("model.safetensors")
                    ))
                })?;
                let path = dir.join(&kept.name);
                let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
                files.push(kept);
                let shards = shard_names(&text)
                    .map_err(|e| HubError::Msg(format!("{}: {e}", path.display())))?;
                for shard in &shards {
                    let f = CatalogFile {
                        name: shard.clone(),
                        url: file.url.replace("model.safetensors", shard),
                        sha256: None,
                        size: None,
                    };
                    files.push(download(&agent, &f, &dir, progress)?.ok_or_else(|| {
                        HubError::Msg(format!("{}: HTTP 404 (a shard the index names)", f.url))
                    })?);
                }
            }
            None if required => {
                return Err(HubError::Msg(format!(
                    "{}: HTTP 404: no such file (check the name{})",
                    file.url,
                    if std::env::var_os("HF_TOKEN").is_none() {
                        "; a gated or private repository needs HF_TOKEN"
                    } else {
                        ""
                    }
                )))
            }
            None => {}
        }
    }
    let kept = Kept { files };
    let meta = dir.join("meta.json");
    crate::io::write_atomic(
        &meta,
        serde_json::to_string_pretty(&kept)
            .expect("json")
            .as_bytes(),
    )
    .map_err(io_err(&meta))?;
    Ok(model_path(wanted))
}

/// The shard file names of a safetensors index (`weight_map`'s values), each a plain name.
fn shard_names(index: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(index).map_err(|e| e.to_string())?;
    let map = v["weight_map"].as_object().ok_or("no weight_map object")?;
    let mut names: Vec<String> = Vec::new();
    for value in map.values() {
        let name = value
            .as_str()
            .ok_or("a weight_map value that is not a string")?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(format!("shard name {name:?} is not a plain file name"));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Download `file` into `dir` (resuming `<name>.part`), check its size and SHA-256, and
/// rename it into place; `None` for an HTTP 404.
fn download(
    agent: &ureq::Agent,
    file: &CatalogFile,
    dir: &Path,
    progress: OnProgress,
) -> Result<Option<KeptFile>, HubError> {
    if file.name.is_empty() || file.name.contains('/') || file.name.starts_with('.') {
        return Err(HubError::Msg(format!(
            "{}: file name {:?} is not a plain file name",
            file.url, file.name
        )));
    }
    let dest = dir.join(&file.name);
    let part = dir.join(format!("{}.part", file.name));
    let mut have = std::fs::metadata(&part).map_or(0, |m| m.len());
    if file.size.is_some_and(|size| have > size) {
        have = 0;
    }
    let mut request = agent.get(&file.url);
    if have > 0 {
        request = request.header("Range", &format!("bytes={have}-"));
    }
    if let Some(token) = hf_token_for(&file.url) {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let response = request
        .call()
        .map_err(|e| HubError::Msg(format!("{}: {e}", file.url)))?;
    let (append, total) = match answer(&response, have, file)? {
        Answer::Bytes { append, total } => (append, total),
        Answer::NotFound => return Ok(None),
        Answer::Restart => {
            // The part is longer than the file (it changed upstream): start again.
            std::fs::remove_file(&part).map_err(io_err(&part))?;
            return download(agent, file, dir, progress);
        }
    };
    let total = total.or(file.size);
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&part)
        .map_err(io_err(&part))?;
    // A resumed part's bytes go into the hash first.
    let (mut hasher, mut done) = if append {
        hash_file(&part)?
    } else {
        (Sha256::new(), 0)
    };
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(u64::MAX)
        .reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = out.flush();
                return Err(HubError::Msg(format!(
                    "{}: the download stopped after {done}{} bytes ({e}); run the command \
                     again to resume it",
                    file.url,
                    total.map(|t| format!(" of {t}")).unwrap_or_default()
                )));
            }
        };
        out.write_all(&buf[..n]).map_err(io_err(&part))?;
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done, total, &file.name);
    }
    out.sync_all().map_err(io_err(&part))?;
    drop(out);
    let sha256 = format!("{:x}", hasher.finalize());
    check_download(file, &part, done, total, &sha256)?;
    std::fs::rename(&part, &dest).map_err(io_err(&dest))?;
    Ok(Some(KeptFile {
        name: file.name.clone(),
        url: file.url.clone(),
        size: done,
        sha256,
    }))
}

/// What a download's response says to do.
enum Answer {
    /// Bytes follow: appended to the part (a 206 at its length) or replacing it (a 200), of
    /// `total` bytes in all where the server says.
    Bytes {
        append: bool,
        total: Option<u64>,
    },
    NotFound,
    /// The server cannot resume at the part's length (416): the file changed upstream.
    Restart,
}

/// Read a response's status and headers; an error for a status that brings no file, or a
/// resume at another byte than the part's length `have`.
fn answer(
    response: &ureq::http::Response<ureq::Body>,
    have: u64,
    file: &CatalogFile,
) -> Result<Answer, HubError> {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Ok(match status {
        206 => {
            // Content-Range: bytes START-END/TOTAL
            let range = header("content-range").unwrap_or_default();
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            if start != Some(have) {
                return Err(HubError::Msg(format!(
                    "{}: asked to resume at byte {have}, the server answered {range:?}",
                    file.url
                )));
            }
            let total = range.rsplit('/').next().and_then(|t| t.parse().ok());
            Answer::Bytes {
                append: true,
                total,
            }
        }
        200 => Answer::Bytes {
            append: false,
            total: header("content-length").and_then(|l| l.parse().ok()),
        },
        404 => Answer::NotFound,
        416 if have > 0 => Answer::Restart,
        401 | 403 => {
            return Err(HubError::Msg(format!(
                "{}: HTTP {status}: not allowed{}",
                file.url,
                if std::env::var_os("HF_TOKEN").is_some() {
                    " (HF_TOKEN was sent: does it have access to this repository?)"
                } else {
                    " (a gated or private repository needs HF_TOKEN)"
                }
            )))
        }
        other => {
            return Err(HubError::Msg(format!("{}: HTTP {other}", file.url)));
        }
    })
}

/// The SHA-256 state and length of a file's bytes (a part being resumed).
fn hash_file(path: &Path) -> Result<(Sha256, u64), HubError> {
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut kept = std::fs::File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = kept.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok((hasher, done))
}

/// A finished download against what the server said (`total`) and the catalog lists: a part
/// that is not the listed file is removed.
fn check_download(
    file: &CatalogFile,
    part: &Path,
    done: u64,
    total: Option<u64>,
    sha256: &str,
) -> Result<(), HubError> {
    if let Some(t) = total {
        if done != t {
            return Err(HubError::Msg(format!(
                "{}: the download stopped after {done} of {t} bytes; run the command again to \
                 resume it",
                file.url
            )));
        }
    }
    if let Some(want) = &file.sha256 {
        if !want.eq_ignore_ascii_case(sha256) {
            let _ = std::fs::remove_file(part);
            return Err(HubError::Msg(format!(
                "{}: SHA-256 {sha256}, and the catalog says {want}: the file is not the one \
                 listed, and was removed",
                file.url
            )));
        }
    }
    if let Some(size) = file.size {
        if size != done {
            let _ = std::fs::remove_file(part);
            return Err(HubError::Msg(format!(
                "{}: {done} bytes, and the catalog says {size}: the file was removed",
                file.url
            )));
        }
    }
    Ok(())
}

/// `HF_TOKEN`, for URLs of the Hugging Face endpoint only (never sent elsewhere; ureq drops
/// it on a redirect to another host).
fn hf_token_for(url: &str) -> Option<String> {
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())?;
    let endpoint = hf_endpoint();
    (url.starts_with(&format!("{endpoint}/")) || url.starts_with("https://huggingface.co/"))
        .then(|| token.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_become_resolve_urls() {
        let w = hf_wanted("bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_K_M.gguf")
            .unwrap();
        assert!(w.gguf);
        assert_eq!(w.files[0].name, "SmolLM2-135M-Instruct-Q4_K_M.gguf");
        assert!(w.files[0].url.ends_with(
            "/bartowski/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct-Q4_K_M.gguf"
        ));
        let folder = hf_wanted("HuggingFaceTB/SmolLM2-135M@abc123").unwrap();
        assert!(!folder.gguf);
        assert!(folder.files[0]
            .url
            .ends_with("/HuggingFaceTB/SmolLM2-135M/resolve/abc123/config.json"));
        for bad in [
            "org",
            "org/",
            "org/repo/../x.gguf",
            "org/repo/model.bin",
            "org/repo@/x.gguf",
        ] {
            assert!(hf_wanted(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_built_in_catalog_parses() {
        let c: Catalog = serde_json::from_str(CATALOG).unwrap();
        assert!(c.models.iter().any(|m| m.id == "smollm2-135m-instruct"));
        assert!(c
            .models
            .iter()
            .all(|m| !m.files.is_empty() && plain_name(&m.id)));
        for bad in ["", "../evil", "a/b", ".hidden", "a\\b"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn shard_names_are_plain_and_unique() {
        let index = r#"{"weight_map": {"a": "model-00002.safetensors", "b": "model-00001.safetensors", "c": "model-00001.safetensors"}}"#;
        assert_eq!(
            shard_names(index).unwrap(),
            ["model-00001.safetensors", "model-00002.safetensors"]
        );
        assert!(shard_names(r#"{"weight_map": {"a": "../x"}}"#).is_err());
    }
}
