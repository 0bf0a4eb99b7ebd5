//! `cargo xtask build-web` and `cargo xtask serve`.
//!
//! build-web: the library for wasm32-unknown-unknown (release), wasm-bindgen through the
//! wasm-bindgen-cli-support crate (pinned to the library's exact wasm-bindgen version) into
//! the npm package `target/npm/` (web/package/ with the module and the catalog, its version
//! the crate's), and the page from web/ into target/web/ with the package as ./webqlora/.
//!
//! serve: a static server on 127.0.0.1 with the right MIME types (application/wasm for the
//! module, which browsers require to compile it streaming). `--files DIR` also serves DIR
//! under /files/ (models and data for a page to fetch by URL); `--uploads DIR` accepts
//! `POST /upload/<name>` into DIR (the end-to-end test collects the page's results so).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use crate::install::run;

pub fn out_dir() -> PathBuf {
    crate::repo_root().join("target/web")
}

pub fn npm_dir() -> PathBuf {
    crate::repo_root().join("target/npm")
}

/// The crate's version, from the root Cargo.toml's [package] table.
pub fn crate_version() -> Result<String, String> {
    let path = crate::repo_root().join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let (true, Some(v)) = (in_package, line.strip_prefix("version")) {
            if let Some(v) = v.trim().strip_prefix('=') {
                return Ok(v.trim().trim_matches('"').to_string());
            }
        }
    }
    Err(format!("{}: no version in [package]", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            copy(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The npm package into target/npm/: the wasm module and its bindings in pkg/, the package's
/// sources from web/package/, the catalog (web/models.json, the CLI's too) and package.json
/// with the crate's version.
pub fn build_package() -> Result<PathBuf, String> {
    let root = crate::repo_root();
    crate::install::wasm_target()?;
    run(crate::test::cargo()
        .args([
            "build",
            "--lib",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .current_dir(&root))?;
    let wasm = root.join("target/wasm32-unknown-unknown/release/webqlora.wasm");
    let out = npm_dir();
    let _ = std::fs::remove_dir_all(&out);
    let pkg = out.join("pkg");
    std::fs::create_dir_all(&pkg).map_err(|e| format!("{}: {e}", pkg.display()))?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)
        .map_err(|e| format!("wasm-bindgen: {e}"))?
        .typescript(false)
        .generate(&pkg)
        .map_err(|e| format!("wasm-bindgen on {}: {e}", wasm.display()))?;
    let source = root.join("web/package");
    for entry in std::fs::read_dir(&source).map_err(|e| format!("{}: {e}", source.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_name() != "package.json" {
            copy(&entry.path(), &out.join(entry.file_name()))?;
        }
    }
    copy(&root.join("web/models.json"), &out.join("models.json"))?;
    let manifest = source.join("package.json");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    json["version"] = crate_version()?.into();
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n";
    std::fs::write(out.join("package.json"), text).map_err(|e| format!("package.json: {e}"))?;
    Ok(out)
}

pub fn build() -> Result<PathBuf, String> {
    let root = crate::repo_root();
    let package = build_package()?;
    let out = out_dir();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let web = root.join("web");
    for entry in std::fs::read_dir(&web).map_err(|e| format!("{}: {e}", web.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.path().is_file() {
            copy(&entry.path(), &out.join(entry.file_name()))?;
        }
    }
    // The page imports the package by name (index.html's import map names ./webqlora/).
    copy_tree(&package, &out.join("webqlora"))?;
    // The bundled MCQ sample: the demo's training split and part of its test split.
    for (from, to, lines) in [
        ("train", "mcq-train.jsonl", 400),
        ("test", "mcq-test.jsonl", 120),
    ] {
        let src = root.join(format!("data/mcq/{from}.jsonl"));
        let text = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        let sample: String = text.lines().take(lines).map(|l| format!("{l}\n")).collect();
        std::fs::write(out.join(to), sample).map_err(|e| format!("{to}: {e}"))?;
    }
    Ok(out)
}

pub fn build_main() -> Result<(), String> {
    let out = build()?;
    println!("npm package: {}", npm_dir().display());
    println!("web: {}", out.display());
    Ok(())
}

/// `cargo xtask pack-npm`: the package built and packed by `npm pack` into
/// target/webqlora-VERSION.tgz (what `npm publish` would upload).
pub fn pack_main() -> Result<(), String> {
    let tarball = pack()?;
    println!("npm package: {}", tarball.display());
    Ok(())
}

/// Build the package and `npm pack` it; the tarball's path.
pub fn pack() -> Result<PathBuf, String> {
    crate::install::npm()?;
    let dir = build_package()?;
    let target = crate::repo_root().join("target");
    let out = std::process::Command::new("npm")
        .args(["pack", "--json", "--pack-destination"])
        .arg(&target)
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("npm pack: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm pack in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("npm pack --json: {e}"))?;
    let name = report[0]["filename"]
        .as_str()
        .ok_or("npm pack --json named no file")?;
    Ok(target.join(name))
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "jsonl" => "application/jsonl",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// What the server serves.
#[derive(Clone)]
pub struct Site {
    pub root: PathBuf,
    pub files: Option<PathBuf>,
    pub uploads: Option<PathBuf>,
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &[u8]) {
    respond_with(stream, status, kind, "", body)
}

fn respond_with(stream: &mut TcpStream, status: &str, kind: &str, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// The file under `base` for URL path `rest`, refusing anything that climbs out.
fn resolve(base: &Path, rest: &str) -> Option<PathBuf> {
    let mut path = base.to_path_buf();
    for part in rest.split('/').filter(|p| !p.is_empty()) {
        if part == ".." || part.contains('\\') {
            return None;
        }
        path.push(part);
    }
    if path.is_dir() {
        path.push("index.html");
    }
    Some(path)
}

fn handle(mut stream: TcpStream, site: &Site) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut length = 0usize;
    let mut from: Option<usize> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        // `Range: bytes=N-` (what a resumed download asks for); other forms get the whole file.
        if let Some(v) = lower.strip_prefix("range:") {
            from = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    if method == "POST" {
        let (Some(dir), Some(name)) = (&site.uploads, path.strip_prefix("/upload/")) else {
            return respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"no uploads here",
            );
        };
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() || name.contains('/') || name.starts_with('.') {
            return respond(&mut stream, "400 Bad Request", "text/plain", b"bad upload");
        }
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".{name}.part"));
        let ok = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
        return match ok {
            Ok(()) => respond(&mut stream, "200 OK", "text/plain", b"saved"),
            Err(e) => respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                e.to_string().as_bytes(),
            ),
        };
    }
    let file = match (path.strip_prefix("/files/"), &site.files) {
        (Some(rest), Some(dir)) => resolve(dir, rest),
        _ => resolve(&site.root, path),
    };
    match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
        Some((f, body)) => match from {
            Some(n) if n < body.len() => respond_with(
                &mut stream,
                "206 Partial Content",
                mime(&f),
                &format!(
                    "Content-Range: bytes {n}-{}/{}\r\n",
                    body.len() - 1,
                    body.len()
                ),
                &body[n..],
            ),
            Some(_) => respond_with(
                &mut stream,
                "416 Range Not Satisfiable",
                "text/plain",
                &format!("Content-Range: bytes */{}\r\n", body.len()),
                b"",
            ),
            None => respond(&mut stream, "200 OK", mime(&f), &body),
        },
        None => respond(&mut stream, "404 Not Found", "text/plain", b"not found"),
    }
}

/// Serve `site` on `listener` until the process ends (one thread per connection).
pub fn serve_on(listener: TcpListener, site: Site) {
    for stream in listener.incoming().flatten() {
        let site = site.clone();
        std::thread::spawn(move || handle(stream, &site));
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn serve_main(args: &[String]) -> Result<(), String> {
    let root = flag(args, "--dir")
        .map(PathBuf::from)
        .unwrap_or_else(out_dir);
    if !root.join("index.html").exists() {
        return Err(format!(
            "{} has no index.html: run `cargo xtask build-web` first",
            root.display()
        ));
    }
    let port = flag(args, "--port").unwrap_or_else(|| "8080".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
    let site = Site {
        root,
        files: flag(args, "--files").map(PathBuf::from),
        uploads: flag(args, "--uploads").map(PathBuf::from),
    };
    println!(
        "serving {} on http://127.0.0.1:{port}/",
        site.root.display()
    );
    serve_on(listener, site);
    Ok(())
}
