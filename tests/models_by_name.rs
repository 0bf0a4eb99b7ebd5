//! Models by name (`--model NAME`, `hf:ORG/REPO/FILE.gguf`, `webqlora models`), against a
//! local HTTP server: a download cut off midway fails saying so, keeps its part and the next
//! run resumes it with a Range request; the whole file's SHA-256 is recorded and checked
//! against the catalog's (a mismatch is refused and the file removed); a 404 names the URL;
//! `HF_ENDPOINT` and `HF_TOKEN` are honoured.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::cli::{fails, ok, path, pattern_jsonl};
use common::temp_dir;
use sha2::Digest;

#[derive(Default)]
struct Server {
    files: HashMap<String, Vec<u8>>,
    /// Send only this many bytes of the next whole-file answer, then close.
    cut_next: Option<usize>,
    /// (path, Range header, Authorization header) of each request.
    log: Vec<(String, Option<String>, Option<String>)>,
    /// Wait this long before answering (a download slow enough for a second process to meet).
    delay: Option<std::time::Duration>,
}

/// Serve `state`'s files on 127.0.0.1 (HTTP/1.1, one request a connection, Range requests);
/// returns the base URL.
fn serve(state: Arc<Mutex<Server>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let delay = state.lock().unwrap().delay;
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            let mut s = state.lock().unwrap();
            let range = headers.get("range").cloned();
            s.log.push((
                path.clone(),
                range.clone(),
                headers.get("authorization").cloned(),
            ));
            let Some(body) = s.files.get(&path).cloned() else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            let (head, part) = match start {
                Some(n) => (
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{}\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len() - 1,
                        body.len(),
                        body.len() - n
                    ),
                    &body[n..],
                ),
                None => (
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    &body[..],
                ),
            };
            let send = match (start, s.cut_next.take()) {
                (None, Some(cut)) => &part[..cut],
                _ => part,
            };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(send);
            let _ = stream.flush();
        }
    });
    url
}

fn webqlora(env: &[(&str, &Path)], extra_env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webqlora"));
    cmd.args(args)
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn models_by_name_download_resume_and_are_checked() {
    let dir = temp_dir("models_by_name");
    let gguf = dir.join("tiny.gguf");
    common::tiny_gguf::tiny_llama_gguf(&gguf);
    let bytes = std::fs::read(&gguf).unwrap();
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    let state = Arc::new(Mutex::new(Server::default()));
    let url = serve(state.clone());
    {
        let mut s = state.lock().unwrap();
        s.files.insert("/files/tiny.gguf".into(), bytes.clone());
        s.files
            .insert("/org/repo/resolve/main/tiny.gguf".into(), bytes.clone());
    }
    let entry = |id: &str, sha256: &str| {
        serde_json::json!({"id": id, "name": id, "family": "Llama", "quant": "F32",
            "megabytes": 1, "files": [{"name": "tiny.gguf", "url": format!("{url}/files/tiny.gguf"),
            "sha256": sha256}]})
    };
    let catalog = dir.join("catalog.json");
    let zeros = "0".repeat(64);
    std::fs::write(
        &catalog,
        serde_json::json!({"models": [entry("tiny", &sha), entry("tiny-wrong", &zeros)]})
            .to_string(),
    )
    .unwrap();
    let cache = dir.join("cache");
    let env = [
        ("WEBQLORA_CACHE", cache.as_path()),
        ("WEBQLORA_CATALOG", catalog.as_path()),
    ];
    let data = dir.join("data.jsonl");
    std::fs::write(&data, pattern_jsonl(2, 8)).unwrap();
    let eval = [
        "eval",
        "--model",
        "tiny",
        "--data",
        path(&data),
        "--json",
        "--quiet",
    ];

    // Cut off halfway: an error that says so; the part is kept.
    let cut = bytes.len() / 2;
    state.lock().unwrap().cut_next = Some(cut);
    let err = fails(webqlora(&env, &[], &eval));
    assert!(
        err.contains("/files/tiny.gguf") && err.contains("run the command again to resume"),
        "{err}"
    );
    let part = cache.join("models/tiny/tiny.gguf.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);

    // The next run resumes from there and evaluates.
    let out = ok(webqlora(&env, &[], &eval));
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(j["loss"].as_f64().unwrap().is_finite());
    let last = state.lock().unwrap().log.last().cloned().unwrap();
    assert_eq!(last.1.as_deref(), Some(format!("bytes={cut}-").as_str()));
    let kept = cache.join("models/tiny");
    assert_eq!(std::fs::read(kept.join("tiny.gguf")).unwrap(), bytes);
    assert!(!part.exists());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kept.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["files"][0]["sha256"], sha.as_str());
    assert_eq!(meta["files"][0]["size"], bytes.len());

    // Kept: no request the next time, and `models` says so.
    let requests = state.lock().unwrap().log.len();
    ok(webqlora(&env, &[], &eval));
    assert_eq!(state.lock().unwrap().log.len(), requests);
    let listing = ok(webqlora(&env, &[], &["models"]));
    assert!(
        listing.contains("tiny") && listing.contains(&format!("SHA-256 {}", &sha[..12])),
        "{listing}"
    );

    // A file that is not the one the catalog lists: refused, nothing kept.
    let err = fails(webqlora(&env, &[], &["models", "--fetch", "tiny-wrong"]));
    assert!(err.contains("SHA-256") && err.contains("removed"), "{err}");
    let wrong = cache.join("models/tiny-wrong");
    assert!(!wrong.join("tiny.gguf").exists() && !wrong.join("tiny.gguf.part").exists());

    // hf: names on HF_ENDPOINT, with HF_TOKEN; a missing file is a 404 naming its URL.
    let hf = [
        ("HF_ENDPOINT", url.clone()),
        ("HF_TOKEN", "hf_secret".to_string()),
    ];
    let fetched = ok(webqlora(
        &env,
        &hf,
        &["models", "--fetch", "hf:org/repo/tiny.gguf"],
    ));
    assert_eq!(std::fs::read(fetched.trim()).unwrap(), bytes);
    let last = state.lock().unwrap().log.last().cloned().unwrap();
    assert_eq!(last.0, "/org/repo/resolve/main/tiny.gguf");
    assert_eq!(last.2.as_deref(), Some("Bearer hf_secret"));
    let err = fails(webqlora(
        &env,
        &hf,
        &["models", "--fetch", "hf:org/repo/missing.gguf"],
    ));
    assert!(
        err.contains("HTTP 404")
            && err.contains(&format!("{url}/org/repo/resolve/main/missing.gguf")),
        "{err}"
    );
    // ... and leaves no empty folder behind.
    let left: Vec<_> = std::fs::read_dir(cache.join("models"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("missing") && !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "a failed download left {left:?}");
    // The token goes to the Hugging Face endpoint only, never to a catalog's other hosts.
    let hf_elsewhere = [("HF_TOKEN", "hf_secret".to_string())];
    ok(webqlora(
        &env,
        &hf_elsewhere,
        &["models", "--fetch", "tiny"],
    ));
    std::fs::remove_dir_all(&kept).unwrap();
    ok(webqlora(
        &env,
        &hf_elsewhere,
        &["models", "--fetch", "tiny"],
    ));
    let last = state.lock().unwrap().log.last().cloned().unwrap();
    assert_eq!(last.0, "/files/tiny.gguf");
    assert_eq!(last.2, None);

    // Two processes fetching one model at once: the second waits for the first's download
    // and finds it kept; one request in all, and both name the same whole file.
    std::fs::remove_dir_all(&kept).unwrap();
    // The first holds the lock for 3 s, long enough for the second to meet it on a busy machine.
    state.lock().unwrap().delay = Some(std::time::Duration::from_millis(3000));
    let before = state.lock().unwrap().log.len();
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_webqlora"));
        cmd.args(["models", "--fetch", "tiny"])
            .env_remove("HF_TOKEN")
            .env_remove("HF_ENDPOINT")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let first = spawn();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = spawn();
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    state.lock().unwrap().delay = None;
    let (a, b) = (ok(first), ok(second.clone()));
    assert_eq!(a, b);
    assert_eq!(std::fs::read(a.trim()).unwrap(), bytes);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another process is downloading tiny"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(state.lock().unwrap().log.len() - before, 1);
}
