//! The browser end-to-end test (`cargo xtask test` runs it; `cargo xtask browser-test` alone).
//!
//! Builds the page, serves it on 127.0.0.1, and drives headless Chromium (WebGPU on
//! SwiftShader) over the DevTools protocol through the page's own controls: the golden tiny
//! Llama's files into the model file input, a tokenized dataset into the data input, the
//! settings fields, Train, then Download. Checks that the loss falls and that the downloaded
//! adapter equals, within 1e-4 relative, the one the native binary trains from the same seed,
//! data and settings. Saves a screenshot of the finished page as target/e2e/page.png.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::install::run;

type Socket = WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// The page's settings, the same for the native run.
const STEPS: usize = 6;
/// The run interrupted by a reload and resumed from its checkpoint.
const RESUMED_STEPS: usize = 24;
const SETTINGS: [(&str, &str); 7] = [
    ("rank", "4"),
    ("alpha", "8"),
    ("lr", "0.01"),
    ("steps", "6"),
    ("seq", "64"),
    ("batch", "4"),
    ("seed", "7"),
];

pub(crate) struct Cdp {
    socket: Socket,
    next: u64,
    session: Option<String>,
    /// Console messages and exceptions of the page and its worker, for error reports.
    pub(crate) console: Vec<String>,
}

impl Cdp {
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::Text(msg.to_string().into()))
            .map_err(|e| format!("{method}: {e}"))?;
        loop {
            let reply = self.socket.read().map_err(|e| format!("{method}: {e}"))?;
            let Message::Text(text) = reply else { continue };
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match v["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    let args: Vec<String> = v["params"]["args"]
                        .as_array()
                        .map(|a| a.iter().map(|x| x["value"].to_string()).collect())
                        .unwrap_or_default();
                    self.console.push(args.join(" "));
                }
                Some("Runtime.exceptionThrown") => self
                    .console
                    .push(v["params"]["exceptionDetails"].to_string()),
                Some("Log.entryAdded") => {
                    self.console.push(v["params"]["entry"]["text"].to_string())
                }
                _ => {}
            }
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Evaluate a JavaScript expression in the page; its value (JSON-able).
    pub(crate) fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// The numbers of an array `expr` evaluates to.
    fn numbers(&mut self, expr: &str) -> Result<Vec<f64>, String> {
        let v = self.eval(expr)?;
        let items = v
            .as_array()
            .ok_or_else(|| format!("{expr}: not an array: {v}"))?;
        Ok(items.iter().filter_map(Value::as_f64).collect())
    }

    /// Wait until `expr` is true; fail with the page's message on timeout or error.
    pub(crate) fn wait_for(
        &mut self,
        expr: &str,
        what: &str,
        limit: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if self.eval(expr)? == json!(true) {
                return Ok(());
            }
            // Errors only: a lost device is a notice the page recovers from.
            let message = self.eval(
                "(m => !m || m.hidden || !m.classList.contains('error') ? '' : m.textContent)(document.getElementById('message'))",
            )?;
            if message.as_str().is_some_and(|m| !m.is_empty()) {
                return Err(format!(
                    "{what}: the page says: {message}; console:\n{}",
                    self.console.join("\n")
                ));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "{what}: not done after {} s; console:\n{}",
                    limit.as_secs(),
                    self.console.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The whole page as a PNG at `path`.
    fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn set_files(&mut self, selector: &str, files: &[PathBuf]) -> Result<(), String> {
        let doc = self.call("DOM.getDocument", json!({}))?;
        let node = self.call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": selector}),
        )?;
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": node["nodeId"], "files": files}),
        )?;
        Ok(())
    }
}

pub(crate) struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start headless Chromium with WebGPU on SwiftShader; its DevTools websocket URL.
fn start_chromium(profile: &Path) -> Result<(Browser, String), String> {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--enable-unsafe-webgpu",
            "--use-webgpu-adapter=swiftshader",
            "--remote-debugging-port=0",
            "--window-size=1100,1900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("chromium: {e} (cargo xtask test installs it)"))?;
    let stderr = child.stderr.take().expect("piped");
    let browser = Browser(child);
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(at) = line.find("ws://") {
                    break line[at..].trim().to_string();
                }
            }
            _ => return Err("chromium exited without a DevTools address".into()),
        }
    };
    // Keep draining stderr so Chromium never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Ok((browser, url))
}

/// The f32 tensors of a safetensors file, by name.
pub(crate) fn read_safetensors(path: &Path) -> Result<Vec<(String, Vec<f32>)>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| "short file")?) as usize;
    let header: Value =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| format!("{}: {e}", path.display()))?;
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, t) in header.as_object().ok_or("bad header")? {
        if name == "__metadata__" {
            continue;
        }
        if t["dtype"] != "F32" {
            return Err(format!("{name} is {}, not F32", t["dtype"]));
        }
        let (a, b) = (
            t["data_offsets"][0].as_u64().unwrap_or(0) as usize,
            t["data_offsets"][1].as_u64().unwrap_or(0) as usize,
        );
        let values = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.push((name.clone(), values));
    }
    out.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(out)
}

/// A byte-level BPE tokenizer.json with no merges for the tiny Llama's 256 ids (one token a
/// byte, GPT-2's byte-to-unicode alphabet), so the page's generation and MCQ scoring run on it.
pub(crate) fn byte_tokenizer() -> String {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut next = 256;
    let mut vocab = serde_json::Map::new();
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            next += 1;
            next - 1
        };
        vocab.insert(char::from_u32(c).expect("a char").to_string(), json!(b));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []},
    })
    .to_string()
}

/// Tokenized records the tiny Llama (vocabulary 256) can learn: arithmetic runs.
pub(crate) fn dataset() -> String {
    (0..16)
        .map(|i| {
            let ids: Vec<String> = (0..24)
                .map(|k| ((i * 7 + k * 3) % 256).to_string())
                .collect();
            format!("{{\"input_ids\": [{}]}}\n", ids.join(", "))
        })
        .collect()
}

/// Generate from the prompt box and score the bundled MCQ questions, filling the `tag`
/// ("before" / "after") column.
/// With `questions`, the user's own MCQ file instead of the bundled test split.
fn try_it(cdp: &mut Cdp, tag: &str, questions: Option<&Path>) -> Result<(), String> {
    let minute = Duration::from_secs(60);
    cdp.eval("document.getElementById('prompt').value = 'Hello'")?;
    cdp.eval("document.getElementById('generate').click()")?;
    cdp.wait_for(
        &format!(
            "(t => t.length > 0 && t !== '…')(document.getElementById('gen-{tag}').textContent) && !document.getElementById('generate').disabled"
        ),
        &format!("generation {tag} training"),
        2 * minute,
    )?;
    cdp.eval("document.getElementById('mcq-limit').value = '4'")?;
    let source = match questions {
        Some(file) => {
            cdp.set_files("#mcq-file", &[file.to_path_buf()])?;
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            format!("3 questions of {name}")
        }
        None => "4 questions of mcq-test.jsonl (bundled)".to_string(),
    };
    cdp.eval("document.getElementById('mcq').click()")?;
    cdp.wait_for(
        &format!("document.getElementById('mcq-{tag}').textContent.includes('{source}')"),
        &format!("MCQ accuracy {tag} training"),
        2 * minute,
    )?;
    Ok(())
}

/// Serve `site` (with `dir` under /files/), start Chromium, open the page (`query`: its URL's
/// query string, "" for none) and wait for the demo page's state.
fn open_page(
    site: PathBuf,
    dir: &Path,
    downloads: &Path,
    query: &str,
) -> Result<(Browser, Cdp, u16), String> {
    let served = crate::web::Site {
        root: site,
        files: Some(dir.to_path_buf()),
        uploads: None,
    };
    open_site(
        served,
        &dir.join("profile"),
        downloads,
        query,
        "document.readyState === 'complete' && !!window.webqloraState",
    )
}

/// Serve `served`, start Chromium with its profile in `profile`, open the page (`query`: its
/// URL's query string, with `{port}` replaced by the server's port) and wait until `ready`.
pub(crate) fn open_site(
    served: crate::web::Site,
    profile: &Path,
    downloads: &Path,
    query: &str,
    ready: &str,
) -> Result<(Browser, Cdp, u16), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || crate::web::serve_on(listener, served));
    let query = query.replace("{port}", &port.to_string());

    let (browser, ws) = start_chromium(profile)?;
    let (socket, _) = tungstenite::connect(ws.as_str()).map_err(|e| format!("{ws}: {e}"))?;
    let mut cdp = Cdp {
        socket,
        next: 0,
        session: None,
        console: Vec::new(),
    };
    cdp.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.display().to_string()}),
    )?;
    let target = cdp.call(
        "Target.createTarget",
        json!({"url": format!("http://127.0.0.1:{port}/{query}")}),
    )?;
    let attached = cdp.call(
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    )?;
    cdp.session = attached["sessionId"].as_str().map(str::to_string);
    cdp.call("Runtime.enable", json!({}))?;
    cdp.call("Log.enable", json!({}))?;
    // The worker's console too: attach to it when it starts (events come tagged with its
    // session, collected all the same).
    cdp.call(
        "Target.setAutoAttach",
        json!({"autoAttach": true, "waitForDebuggerOnStart": false, "flatten": true}),
    )?;
    cdp.wait_for(ready, "page load", Duration::from_secs(60))?;
    Ok((browser, cdp, port))
}

/// The native binary the browser tests compare the page with: the dev profile's (optimized,
/// `[profile.dev]`), which `cargo test` has already built in `cargo xtask test`, so the tests
/// do not compile the crate again in release (about 4 minutes on 2 cores). Built if missing.
pub(crate) fn native_binary() -> Result<PathBuf, String> {
    run(crate::test::cargo()
        .args(["build", "--bin", "webqlora"])
        .current_dir(crate::repo_root()))?;
    Ok(native_binary_path())
}

fn native_binary_path() -> PathBuf {
    crate::repo_root().join("target/debug/webqlora")
}

/// `webqlora train` (the dev binary, on the portable kernels as the page runs them) of
/// `model` on `data` into `out`, quietly, with `args`.
pub(crate) fn train_native(
    model: &Path,
    data: &Path,
    out: &Path,
    args: &[&str],
) -> Result<(), String> {
    let mut cmd = Command::new(native_binary_path());
    crate::test::with_env(&mut cmd).env("WEBQLORA_KERNELS", "portable");
    run(cmd
        .args(["train", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--output")
        .arg(out)
        .arg("--quiet")
        .args(args)
        .stdout(Stdio::null()))
}

/// Optional (`cargo xtask browser-test --smollm2`): one SmolLM2-135M training step in the page
/// (the GGUF through the file input, the bundled MCQ sample, batch 1) against the native step's
/// loss, 1e-3 relative; prints how long the browser took.
pub fn run_smollm2() -> Result<(), String> {
    crate::install::chromium()?;
    let root = crate::repo_root();
    let gguf = crate::fetch_model::fetch()?;
    let site = crate::web::build()?;
    let webqlora = native_binary()?;
    let dir = root.join("target/e2e-smollm2");
    let downloads = fresh_downloads(&dir)?;
    let data = site.join("mcq-train.jsonl");
    let native = dir.join("native");
    let mut cmd = Command::new(&webqlora);
    crate::test::with_env(&mut cmd);
    run(cmd
        .args(["train", "--model"])
        .arg(&gguf)
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(&native)
        .args([
            "--steps", "1", "--batch", "1", "--seed", "3", "--lr", "1e-3", "--quiet",
        ])
        .stdout(Stdio::null()))?;
    let native_loss = std::fs::read_to_string(native.join("metrics.jsonl"))
        .map_err(|e| e.to_string())?
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok()?["loss"].as_f64())
        .ok_or("no native loss")?;
    let started = Instant::now();
    let (_browser, mut cdp, _) = open_page(site, &dir, &downloads, "")?;
    let minutes = |n: u64| Duration::from_secs(60 * n);
    cdp.set_files("#model-files", std::slice::from_ref(&gguf))?;
    cdp.wait_for(
        "document.getElementById('model-info').textContent.includes('30 layers')",
        "opening SmolLM2",
        minutes(5),
    )?;
    cdp.eval("document.getElementById('data-sample').click()")?;
    cdp.wait_for(
        "document.getElementById('data-info').textContent.includes('400 records')",
        "the bundled MCQ sample",
        minutes(1),
    )?;
    set_values(
        &mut cdp,
        &[
            ("steps", "1"),
            ("batch", "1"),
            ("seed", "3"),
            ("lr", "0.001"),
            ("rank", "16"),
            ("alpha", "32"),
            ("seq", "512"),
        ],
    )?;
    cdp.eval("document.getElementById('train').click()")?;
    cdp.wait_for(
        "document.getElementById('train-info').textContent.endsWith('done')",
        "the SmolLM2 step",
        minutes(10),
    )?;
    let loss = cdp
        .eval("window.webqloraState.losses[0]")?
        .as_f64()
        .ok_or("no loss")?;
    let rel = ((loss - native_loss) / native_loss).abs();
    println!(
        "browser SmolLM2 step: loss {loss:.6} (native {native_loss:.6}, relative difference {rel:.1e}); {:.0} s in the browser from page load",
        started.elapsed().as_secs_f64()
    );
    if rel > 1e-3 {
        return Err(format!(
            "the browser's SmolLM2 loss differs from the native one by {rel:.1e}"
        ));
    }
    // The merged GGUF the page writes is what `webqlora merge --format gguf` writes for the
    // page's adapter.
    cdp.eval("document.getElementById('download').click()")?;
    let adapter = downloads.join("adapter_model.safetensors");
    wait_for_file(&adapter, minutes(1))?;
    wait_for_file(&downloads.join("adapter_config.json"), minutes(1))?;
    cdp.eval("document.getElementById('merged-dtype').value = 'q8_0'; document.getElementById('download-merged').click()")?;
    let merged = downloads.join("merged-q8_0.gguf");
    wait_for_file(&merged, minutes(3))?;
    let native_merged = dir.join("native-merged.gguf");
    let mut cmd = Command::new(&webqlora);
    run(crate::test::with_env(&mut cmd)
        .args(["merge", "--model"])
        .arg(&gguf)
        .arg("--adapter")
        .arg(&downloads)
        .args(["--format", "gguf", "--dtype", "q8_0", "--output"])
        .arg(&native_merged)
        .stdout(Stdio::null()))?;
    let (page, native) = (
        std::fs::read(&merged).map_err(|e| e.to_string())?,
        std::fs::read(&native_merged).map_err(|e| e.to_string())?,
    );
    if page != native {
        return Err(format!(
            "the page's merged-q8_0.gguf ({} bytes) differs from `webqlora merge --format gguf` ({} bytes)",
            page.len(),
            native.len()
        ));
    }
    println!(
        "browser SmolLM2: the page's merged Q8_0 GGUF ({} bytes) equals `webqlora merge`'s",
        page.len()
    );
    Ok(())
}

/// Wait until a download `path` is complete (Chromium writes `*.crdownload` until then).
fn wait_for_file(path: &Path, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(format!("{} was not downloaded", path.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The browser end-to-end test, stage by stage (see the module's comment).
pub fn run_test() -> Result<(), String> {
    crate::install::chromium()?;
    let root = crate::repo_root();
    let site = crate::web::build()?;
    let webqlora = native_binary()?;
    let dir = root.join("target/e2e");
    let downloads = fresh_downloads(&dir)?;
    let data = dir.join("e2e-data.jsonl");
    std::fs::write(&data, dataset()).map_err(|e| e.to_string())?;
    // Chromium's file chooser wants plain absolute paths (no "..").
    let model = root
        .join("../shared/golden/tiny-llama/base-f32")
        .canonicalize()
        .map_err(|e| format!("the golden tiny Llama: {e}"))?;
    let (native, native_long) = train_like_the_page(&dir, &model, &data)?;
    let (tokenizer, folder) = tiny_llama_folder(&dir, &model)?;
    let hashes = write_catalog(&dir, &folder)?;
    // The portable kernels (what hardware GPUs run), so that Tint, stricter than naga,
    // compiles them; the SmolLM2 step runs the software kernels SwiftShader gets by default.
    // Parts of 64 KiB, so that the 364 KB weights come in six.
    let (browser, cdp, port) = open_page(
        site,
        &dir,
        &downloads,
        "?kernels=portable&catalog=/files/catalog.json&chunk_kib=64",
    )?;
    let mut e2e = E2e {
        dir,
        downloads,
        webqlora,
        model,
        data,
        tokenizer,
        folder,
        native,
        native_long,
        hashes,
        cdp,
        port,
        _browser: browser,
    };
    e2e.open_model_and_data()?;
    let trained = e2e.train_and_download()?;
    let resumed = e2e.resume_after_reload_and_lost_device()?;
    e2e.stop_and_open_kept_and_by_url()?;
    e2e.will_it_fit()?;
    e2e.packing_and_dora()?;
    e2e.labels_and_keyboard()?;
    e2e.ready_model()?;
    e2e.phone_width()?;
    let native_losses = e2e.check_losses(&trained, &resumed)?;
    e2e.check_exports_and_generation(&trained, &native_losses)
}

const MINUTE: Duration = Duration::from_secs(60);

/// Remove `dir` and make it again with an empty downloads folder in it; that folder.
fn fresh_downloads(dir: &Path) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir);
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| e.to_string())?;
    Ok(downloads)
}

/// One of the page's `SETTINGS`.
fn setting(k: &str) -> &'static str {
    SETTINGS.iter().find(|s| s.0 == k).expect("a setting").1
}

/// Set the page's fields `id` to `value`.
fn set_values(cdp: &mut Cdp, values: &[(&str, &str)]) -> Result<(), String> {
    for (id, value) in values {
        cdp.eval(&format!(
            "document.getElementById('{id}').value = '{value}'"
        ))?;
    }
    Ok(())
}

/// The losses of a native run's metrics.jsonl, step by step.
fn metrics_losses(out: &Path) -> Result<Vec<f64>, String> {
    Ok(std::fs::read_to_string(out.join("metrics.jsonl"))
        .map_err(|e| e.to_string())?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["loss"].as_f64())
        .collect())
}

/// The native runs the page's must reproduce: the same seed, data and settings; and the same
/// at RESUMED_STEPS steps (the schedule depends on the total) with validation, what the page's
/// interrupted and resumed run must reproduce. Their folders: (native, native-long).
fn train_like_the_page(
    dir: &Path,
    model: &Path,
    data: &Path,
) -> Result<(PathBuf, PathBuf), String> {
    let native_train = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "--rank",
            setting("rank"),
            "--alpha",
            setting("alpha"),
            "--lr",
            setting("lr"),
            "--steps",
            steps,
            "--max-seq-len",
            setting("seq"),
            "--batch",
            setting("batch"),
            "--seed",
            setting("seed"),
        ];
        args.extend_from_slice(extra);
        train_native(model, data, out, &args)
    };
    let native = dir.join("native");
    native_train(&native, setting("steps"), &[])?;
    let native_long = dir.join("native-long");
    let long_steps = RESUMED_STEPS.to_string();
    native_train(
        &native_long,
        &long_steps,
        &["--valid-split", "0.25", "--eval-every", "4"],
    )?;
    Ok((native, native_long))
}

/// The tiny Llama with a byte-level tokenizer, as a folder: served under /files/ for the
/// page's URL loading, and given to the native binary. (tokenizer.json, the folder).
fn tiny_llama_folder(dir: &Path, model: &Path) -> Result<(PathBuf, PathBuf), String> {
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(&tokenizer, byte_tokenizer()).map_err(|e| e.to_string())?;
    let folder = dir.join("tiny-llama");
    std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), folder.join(f)).map_err(|e| e.to_string())?;
    }
    std::fs::copy(&tokenizer, folder.join("tokenizer.json")).map_err(|e| e.to_string())?;
    Ok((tokenizer, folder))
}

/// A catalog of ready models served here (`dir`/catalog.json): the tiny Llama's folder, each
/// file with its SHA-256; those hashes.
fn write_catalog(dir: &Path, folder: &Path) -> Result<Vec<String>, String> {
    let mut catalog_files = Vec::new();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        let out = Command::new("sha256sum")
            .arg(folder.join(f))
            .output()
            .map_err(|e| format!("sha256sum: {e}"))?;
        let hash = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        catalog_files.push(json!({"name": f, "url": format!("tiny-llama/{f}"), "sha256": hash}));
    }
    let hashes: Vec<String> = catalog_files
        .iter()
        .map(|f| f["sha256"].as_str().unwrap_or("").to_string())
        .collect();
    let catalog = json!({"models": [{"id": "tiny-llama", "name": "Tiny Llama (test server)",
        "family": "Llama", "megabytes": 1, "files": catalog_files}]});
    std::fs::write(dir.join("catalog.json"), catalog.to_string()).map_err(|e| e.to_string())?;
    Ok(hashes)
}

/// The browser test's page open in Chromium, and what its stages share.
struct E2e {
    /// target/e2e: the screenshots, the native runs, the served files.
    dir: PathBuf,
    /// Where Chromium saves the page's downloads.
    downloads: PathBuf,
    /// The native (dev) binary.
    webqlora: PathBuf,
    /// The golden tiny Llama (config.json, model.safetensors).
    model: PathBuf,
    /// The tokenized dataset both trainers get.
    data: PathBuf,
    /// The byte-level tokenizer.json.
    tokenizer: PathBuf,
    /// The tiny Llama with its tokenizer, as a folder.
    folder: PathBuf,
    /// The native run of STEPS steps.
    native: PathBuf,
    /// The native run of RESUMED_STEPS steps with validation.
    native_long: PathBuf,
    /// The SHA-256 of the ready-model catalog's files.
    hashes: Vec<String>,
    cdp: Cdp,
    /// The server's port.
    port: u16,
    _browser: Browser,
}

/// What the first run in the page leaves for the final checks.
struct Trained {
    losses: Vec<f64>,
    /// The downloaded adapter_model.safetensors, adapter_config.json and adapter.gguf.
    weights: PathBuf,
    config: PathBuf,
    gguf: PathBuf,
    /// The generations and MCQ accuracies before and after training.
    tried: Value,
    /// The text generated before training.
    page_text: Value,
}

/// What the run interrupted by a reload and a lost device leaves for the final checks.
struct Resumed {
    label: Value,
    lost_notice: Value,
    info: Value,
    val: Value,
    losses: Vec<f64>,
}

impl E2e {
    /// The model's files through the file input open on the portable kernels
    /// (`?kernels=portable`), and the dataset through the data input.
    fn open_model_and_data(&mut self) -> Result<(), String> {
        let cdp = &mut self.cdp;
        cdp.set_files(
            "#model-files",
            &[
                self.model.join("config.json"),
                self.model.join("model.safetensors"),
                self.tokenizer.clone(),
            ],
        )?;
        cdp.wait_for(
            "document.getElementById('model-info').textContent.includes('layers')",
            "opening the model",
            2 * MINUTE,
        )?;
        cdp.screenshot(&self.dir.join("01-model.png"))?;
        let kernels = cdp.eval("window.webqloraState.info.kernels")?;
        if kernels.as_str() != Some("matmul=portable,nf4=portable,attention=portable,rmsnorm=portable,cross_entropy=portable")
        {
            return Err(format!(
                "the page's kernels with ?kernels=portable: {kernels}"
            ));
        }
        cdp.set_files("#data-file", std::slice::from_ref(&self.data))?;
        cdp.wait_for(
            "document.getElementById('data-info').textContent.includes('16 records')",
            "the dataset",
            MINUTE,
        )?;
        Ok(())
    }

    /// Try the model before training, train with `SETTINGS`, try it after (on the user's own
    /// MCQ file), and download the adapter (PEFT and GGUF).
    fn train_and_download(&mut self) -> Result<Trained, String> {
        let (cdp, dir, downloads) = (&mut self.cdp, &self.dir, &self.downloads);
        // Before training: a prompt and the MCQ accuracy (the untrained model babbles).
        try_it(cdp, "before", None)?;
        cdp.screenshot(&dir.join("02-before-training.png"))?;
        set_values(cdp, &SETTINGS)?;
        cdp.eval("document.getElementById('train').click()")?;
        cdp.wait_for(
            "document.getElementById('train-info').textContent.endsWith('done')",
            "training",
            5 * MINUTE,
        )?;
        // The user's own questions (three, fewer than the limit of four).
        let questions = dir.join("my-questions.jsonl");
        let mcq: String = ["sky", "grass", "snow"]
            .iter()
            .zip(["blue", "green", "white"])
            .map(|(thing, colour)| {
                format!(
                    "{}\n",
                    json!({"question": format!("What colour is {thing}?"), "choices": ["red", colour, "black"], "answer": 1})
                )
            })
            .collect();
        std::fs::write(&questions, mcq).map_err(|e| e.to_string())?;
        try_it(cdp, "after", Some(&questions))?;
        cdp.screenshot(&dir.join("03-after-training.png"))?;
        let losses = cdp.numbers("window.webqloraState.losses")?;
        cdp.eval("document.getElementById('download').click()")?;
        let weights = downloads.join("adapter_model.safetensors");
        let config = downloads.join("adapter_config.json");
        wait_for_file(&weights, MINUTE)?;
        wait_for_file(&config, MINUTE)?;
        // The same adapter for llama.cpp.
        cdp.eval("document.getElementById('download-gguf').click()")?;
        let gguf = downloads.join("adapter.gguf");
        wait_for_file(&gguf, MINUTE)?;
        std::thread::sleep(Duration::from_millis(500));
        cdp.screenshot(&dir.join("page.png"))?;
        cdp.screenshot(&dir.join("04-downloaded.png"))?;

        let tried = cdp.eval(
            "['gen-before', 'gen-after', 'mcq-before', 'mcq-after'].map(id => document.getElementById(id).textContent).join(' | ')",
        )?;
        let page_text = cdp.eval("document.getElementById('gen-before').textContent")?;
        Ok(Trained {
            losses,
            weights,
            config,
            gguf,
            tried,
            page_text,
        })
    }

    /// Survive a reload: checkpoints every 2 steps into the Origin Private File System, the
    /// page reloaded mid-run, the run resumed from its last checkpoint with the model kept
    /// there; then a lost device mid-run, after which the run goes on from its last checkpoint.
    fn resume_after_reload_and_lost_device(&mut self) -> Result<Resumed, String> {
        let cdp = &mut self.cdp;
        cdp.eval(&format!(
            "document.getElementById('steps').value = '{RESUMED_STEPS}'; document.getElementById('save-every').value = '2'; document.getElementById('valid-split').value = '0.25'; document.getElementById('eval-every').value = '4'"
        ))?;
        cdp.eval("document.getElementById('train').click()")?;
        cdp.wait_for(
            "Number(document.getElementById('train-info').dataset.saved || 0) >= 4 && window.webqloraState.losses.length >= 4",
            "the second checkpoint",
            2 * MINUTE,
        )?;
        cdp.call("Page.reload", json!({}))?;
        if let Err(e) = cdp.wait_for(
            "document.readyState === 'complete' && !!window.webqloraState && !document.getElementById('resume-run').hidden",
            "the resume button after a reload mid-run",
            MINUTE,
        ) {
            let kept = cdp.eval("(async () => { const r = await navigator.storage.getDirectory(); const out = []; for await (const [n, h] of r.entries()) { out.push(n); if (h.kind === 'directory') for await (const [m] of h.entries()) out.push(n + '/' + m); } return JSON.stringify([out, window.webqloraState.keptLatest, window.webqloraState.keptError]); })()")?;
            return Err(format!("{e}\nkept run: {kept}"));
        }
        let label = cdp.eval("document.getElementById('resume-run').textContent")?;
        cdp.eval("document.getElementById('resume-run').click()")?;
        // A lost device mid-run (GPUDevice.destroy(), as a GPU reset): said in words, a new
        // device, and the run goes on from its last checkpoint.
        cdp.wait_for(
            "Number(document.getElementById('train-info').dataset.saved || 0) >= 12",
            "the resumed run's checkpoint of step 12",
            2 * MINUTE,
        )?;
        cdp.eval("window.webqloraLoseDevice()")?;
        cdp.wait_for(
            "document.getElementById('message').textContent.includes('The GPU device was lost')",
            "the notice of the lost device",
            MINUTE,
        )?;
        let lost_notice = cdp.eval("document.getElementById('message').textContent")?;
        cdp.wait_for(
            "document.getElementById('train-info').textContent.endsWith('done')",
            "the resumed run",
            5 * MINUTE,
        )?;
        let losses_of_device = cdp.eval("window.webqloraState.deviceLosses")?;
        if losses_of_device != json!(1) {
            return Err(format!(
                "{losses_of_device} device losses seen, one forced ({lost_notice})"
            ));
        }
        cdp.screenshot(&self.dir.join("05-resumed-after-reload-and-lost-device.png"))?;
        let info = cdp.eval("document.getElementById('train-info').textContent")?;
        let val = cdp.eval("window.webqloraState.valLosses")?;
        let losses = cdp.numbers("window.webqloraState.losses")?;
        Ok(Resumed {
            label,
            lost_notice,
            info,
            val,
            losses,
        })
    }

    /// Stop: a long run stops after the step in progress. The next visit loads the model kept
    /// in the Origin Private File System; a model by URL loads with its download progress; the
    /// bundled MCQ sample loads.
    fn stop_and_open_kept_and_by_url(&mut self) -> Result<(), String> {
        let cdp = &mut self.cdp;
        cdp.eval("document.getElementById('steps').value = '500'")?;
        cdp.eval("document.getElementById('train').click()")?;
        cdp.wait_for(
            "window.webqloraState.losses.length >= 2",
            "the second training",
            MINUTE,
        )?;
        cdp.eval("document.getElementById('stop').click()")?;
        cdp.wait_for(
            "document.getElementById('train-info').textContent.endsWith('stopped') && window.webqloraState.losses.length < 500",
            "stopping",
            MINUTE,
        )?;
        // The next visit loads the model kept in the Origin Private File System.
        cdp.call("Page.reload", json!({}))?;
        cdp.wait_for(
            "document.readyState === 'complete' && !!window.webqloraState && !document.getElementById('model-cached').hidden",
            "the kept model's button after a reload",
            MINUTE,
        )?;
        cdp.eval("document.getElementById('model-cached').click()")?;
        cdp.wait_for(
            "(t => t.includes('kept in this browser') && t.includes('2 layers'))(document.getElementById('model-info').textContent)",
            "opening the kept model",
            MINUTE,
        )?;
        // And a model by URL (a Hugging Face folder's files), with the download progress.
        let port = self.port;
        cdp.eval(&format!(
            "document.getElementById('model-url').value = 'http://127.0.0.1:{port}/files/tiny-llama/'"
        ))?;
        cdp.eval("document.getElementById('model-url-load').click()")?;
        cdp.wait_for(
            "(t => t.includes('/files/tiny-llama/') && t.includes('2 layers'))(document.getElementById('model-info').textContent) && document.getElementById('download-progress').value > 0",
            "opening a model by URL",
            MINUTE,
        )?;
        cdp.eval("document.getElementById('data-sample').click()")?;
        cdp.wait_for(
            "document.getElementById('data-info').textContent.includes('(bundled): 400 records')",
            "the bundled MCQ sample",
            MINUTE,
        )?;
        Ok(())
    }

    /// Will it fit: the step's plan, then a budget just under it: Train is refused in words
    /// with a smaller batch proposed (more accumulation, the same examples a step), which
    /// trains.
    fn will_it_fit(&mut self) -> Result<(), String> {
        let cdp = &mut self.cdp;
        cdp.eval("window.webqloraState.fit = null; document.getElementById('batch').value = '4'; document.getElementById('accumulation').value = '1'; document.getElementById('budget').value = '100000'; document.getElementById('check-fit').click()")?;
        cdp.wait_for(
            "!!window.webqloraState.fit && !document.getElementById('check-fit').disabled",
            "the fit check",
            MINUTE,
        )?;
        let fits_text = cdp.eval("document.getElementById('fit-info').textContent")?;
        let planned = cdp
            .eval(
                "window.webqloraState.fit.fits ? window.webqloraState.fit.asked.plannedBytes : null",
            )?
            .as_f64()
            .ok_or_else(|| format!("batch 4 does not fit in 100,000 MiB: {fits_text}"))?;
        cdp.eval(&format!(
            "window.webqloraState.fit = null; window.webqloraState.losses = []; document.getElementById('budget').value = '{}'; document.getElementById('train').click()",
            (planned - 1.0) / (1u64 << 20) as f64
        ))?;
        cdp.wait_for(
            "!!window.webqloraState.fit && !document.getElementById('train').disabled",
            "the refusal of a run over the budget",
            MINUTE,
        )?;
        let refusal = cdp.eval("document.getElementById('fit-info').textContent + ' | ' + (document.getElementById('fit-proposal').hidden ? 'no proposal' : document.getElementById('fit-proposal').textContent) + ' | ' + window.webqloraState.losses.length")?;
        let refused = refusal.as_str().unwrap_or("");
        if !refused.contains("It does not fit")
            || !refused.contains("Train with batch 2 × 2 accumulation")
            || !refused.ends_with("| 0")
        {
            return Err(format!("a run over the budget: {refusal}"));
        }
        cdp.screenshot(&self.dir.join("06-over-the-budget.png"))?;
        cdp.eval("document.getElementById('fit-proposal').click()")?;
        cdp.wait_for(
            "window.webqloraState.losses.length >= 1",
            "training with the proposed batch",
            2 * MINUTE,
        )?;
        cdp.eval("document.getElementById('stop').click()")?;
        cdp.wait_for(
            "document.getElementById('train-info').textContent.endsWith('stopped')",
            "stopping the proposed run",
            MINUTE,
        )?;
        let proposed = cdp.eval("[document.getElementById('batch').value, document.getElementById('accumulation').value, document.getElementById('train-info').textContent].join(' | ')")?;
        if !proposed
            .as_str()
            .is_some_and(|t| t.starts_with("2 | 2 |") && t.contains("batches of 2 ×"))
        {
            return Err(format!("the proposal's run: {proposed}"));
        }
        println!(
            "browser e2e: will it fit: {fits_text} -> under a smaller budget: {refusal} -> {proposed}"
        );
        Ok(())
    }

    /// Run `start` (JavaScript that clicks Train for a two-step run) until done; the page's
    /// train info and losses.
    fn two_step_run(&mut self, start: &str, what: &str) -> Result<Value, String> {
        self.cdp.eval(start)?;
        self.cdp.wait_for(
            "document.getElementById('train-info').textContent.endsWith('done') && window.webqloraState.losses.length === 2",
            what,
            2 * MINUTE,
        )?;
        self.cdp.eval("document.getElementById('train-info').textContent + ' | ' + JSON.stringify(window.webqloraState.losses)")
    }

    /// Packing (short examples laid end to end) and DoRA train on the portable kernels (Tint
    /// compiles the masked backward and DoRA's three kernels).
    fn packing_and_dora(&mut self) -> Result<(), String> {
        // Packing: short examples laid end to end (Tint compiles the masked backward).
        let packed = self.two_step_run("document.getElementById('packing').checked = true; document.getElementById('steps').value = '2'; document.getElementById('budget').value = '100000'; document.getElementById('train').click()", "a packed run")?;
        if !packed.as_str().is_some_and(|t| t.contains("packed rows")) {
            return Err(format!("the packed run: {packed}"));
        }
        self.cdp
            .eval("document.getElementById('packing').checked = false")?;
        println!("browser e2e: packed run: {packed}");
        // DoRA (Tint compiles its three kernels; the magnitudes are trained values too).
        let dora = self.two_step_run(
            "document.getElementById('dora').checked = true; document.getElementById('train').click()",
            "a DoRA run",
        )?;
        let losses_finite = self
            .cdp
            .eval("window.webqloraState.losses.every(Number.isFinite)")?;
        if !dora.as_str().is_some_and(|t| t.starts_with("DoRA, ")) || losses_finite != true {
            return Err(format!("the DoRA run: {dora}"));
        }
        self.cdp
            .eval("document.getElementById('dora').checked = false")?;
        println!("browser e2e: DoRA run: {dora}");
        Ok(())
    }

    /// Every control has a label (or its own text), and works from the keyboard: Tab reaches
    /// it and Enter on a focused button acts.
    fn labels_and_keyboard(&mut self) -> Result<(), String> {
        let cdp = &mut self.cdp;
        let unlabelled = cdp.eval(
            "[...document.querySelectorAll('input, select, button, textarea')].filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !(e.tagName === 'BUTTON' && e.textContent.trim())).map(e => e.id || e.outerHTML)",
        )?;
        if unlabelled.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(format!("controls without a label: {unlabelled}"));
        }
        let unreachable = cdp.eval(
            "[...document.querySelectorAll('input, select, button, a, [onclick], [tabindex]')].filter(e => e.tabIndex < 0 || !['INPUT', 'SELECT', 'BUTTON', 'A'].includes(e.tagName)).map(e => e.id || e.outerHTML)",
        )?;
        if unreachable.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(format!("controls the keyboard cannot reach: {unreachable}"));
        }
        cdp.eval("window.webqloraState.fit = null; document.getElementById('budget').value = '100000'; document.getElementById('check-fit').focus()")?;
        for kind in ["rawKeyDown", "char", "keyUp"] {
            cdp.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": "Enter", "code": "Enter", "text": "\r", "windowsVirtualKeyCode": 13}),
            )?;
        }
        cdp.wait_for(
            "!!window.webqloraState.fit && window.webqloraState.fit.fits",
            "the fit check by the keyboard (Enter on the focused button)",
            MINUTE,
        )?;
        Ok(())
    }

    /// A ready model by name: downloaded into the Origin Private File System with its hashes,
    /// interrupted (the parts a closed tab would not have written are removed, with
    /// meta.json), resumed after a reload from its first missing byte, used, and removed.
    fn ready_model(&mut self) -> Result<(), String> {
        let (cdp, hashes) = (&mut self.cdp, &self.hashes);
        let row = |field: &str| {
            format!("(r => r && r.{field})(document.getElementById('model-tiny-llama'))")
        };
        cdp.wait_for(
            &format!("{} === 'none'", row("dataset.state")),
            "the ready models' list",
            MINUTE,
        )?;
        cdp.eval(&format!("{}.click()", row("querySelector('button')")))?;
        cdp.wait_for(
            &format!("{} === 'kept'", row("dataset.state")),
            "downloading the ready model",
            MINUTE,
        )?;
        let kept_hashes = cdp.eval(&row("querySelector('.status').dataset.sha256"))?;
        if kept_hashes.as_str() != Some(hashes.join(" ").as_str()) {
            return Err(format!(
                "the downloaded model's hashes {kept_hashes}, the files' {hashes:?}"
            ));
        }
        cdp.eval("(async () => { const d = await (await (await navigator.storage.getDirectory()).getDirectoryHandle('models')).getDirectoryHandle('tiny-llama'); for (const n of ['meta.json', 'model.safetensors.0003', 'model.safetensors.0004', 'model.safetensors.0005', 'tokenizer.json.0000']) await d.removeEntry(n); })()")?;
        cdp.call("Page.reload", json!({}))?;
        cdp.wait_for(
            &format!("{} === 'partial'", row("dataset.state")),
            "the interrupted download after a reload",
            MINUTE,
        )?;
        let partial = cdp.eval(&row("querySelector('.status').textContent"))?;
        cdp.eval(&format!("{}.click()", row("querySelector('button')")))?;
        cdp.wait_for(
            &format!("{} === 'kept'", row("dataset.state")),
            "resuming the download",
            MINUTE,
        )?;
        let resumed_at =
            cdp.eval("JSON.stringify(window.webqloraState.lastDownload.info.resumedAt)")?;
        let kept_hashes = cdp.eval(&row("querySelector('.status').dataset.sha256"))?;
        if resumed_at.as_str() != Some("[[\"model.safetensors\",196608]]")
            || kept_hashes.as_str() != Some(hashes.join(" ").as_str())
        {
            return Err(format!(
                "the resumed download: ranges {resumed_at}, hashes {kept_hashes} (the files' {hashes:?})"
            ));
        }
        cdp.eval(&format!("{}.click()", row("querySelector('button')")))?;
        cdp.wait_for(
            "(t => t.includes('Tiny Llama (test server)') && t.includes('2 layers'))(document.getElementById('model-info').textContent)",
            "opening the ready model",
            MINUTE,
        )?;
        cdp.screenshot(&self.dir.join("08-ready-models.png"))?;
        cdp.eval(&format!("{}.click()", row("querySelectorAll('button')[1]")))?;
        cdp.wait_for(
            &format!("{} === 'none'", row("dataset.state")),
            "removing the ready model",
            MINUTE,
        )?;
        let gone = cdp.eval("(async () => { try { await (await (await navigator.storage.getDirectory()).getDirectoryHandle('models')).getDirectoryHandle('tiny-llama'); return false; } catch (e) { return true; } })()")?;
        if gone != json!(true) {
            return Err("the removed model is still in the browser's storage".into());
        }
        println!("browser e2e: ready model: downloaded ({}), interrupted ({partial}), resumed from {resumed_at}, used, removed", hashes.join(", "));
        Ok(())
    }

    /// A phone's width: nothing wider than the screen.
    fn phone_width(&mut self) -> Result<(), String> {
        let cdp = &mut self.cdp;
        cdp.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let wide = cdp.eval(
            "[document.documentElement.scrollWidth, ...[...document.querySelectorAll('input, select, button, canvas, progress, pre, p, label')].filter(e => e.offsetParent && e.getBoundingClientRect().right > 391).map(e => e.id || e.tagName)]",
        )?;
        cdp.screenshot(&self.dir.join("07-phone-390px.png"))?;
        if wide
            .as_array()
            .is_none_or(|a| a.len() != 1 || a[0].as_f64().is_none_or(|w| w > 390.0))
        {
            return Err(format!(
                "at 390 px wide, the page's width and what sticks out: {wide}"
            ));
        }
        Ok(())
    }

    /// The page's loss falls; the resumed run (after the reload and the lost device) gives
    /// every loss and validation loss an uninterrupted native run gives. The native run's
    /// losses, for the last report.
    fn check_losses(&mut self, trained: &Trained, resumed: &Resumed) -> Result<Vec<f64>, String> {
        let losses = &trained.losses;
        if losses.len() != STEPS {
            return Err(format!("{} losses for {STEPS} steps", losses.len()));
        }
        let native_losses = metrics_losses(&self.native)?;
        if losses.last() >= losses.first() {
            let steps = self
                .cdp
                .eval("JSON.stringify(window.webqloraState.steps)")?;
            return Err(format!(
                "the page's loss did not fall: {losses:?} (native {native_losses:?}); steps {steps}; console:\n{}",
                self.cdp.console.join("\n")
            ));
        }
        // The resumed run: every loss an uninterrupted (native) run gives.
        let long_losses = metrics_losses(&self.native_long)?;
        let (resumed_info, resume_label) = (&resumed.info, &resumed.label);
        if !resumed_info
            .as_str()
            .is_some_and(|t| t.contains("resumed after step"))
        {
            return Err(format!(
                "the reloaded run did not resume: {resumed_info} ({resume_label})"
            ));
        }
        let resumed_losses = &resumed.losses;
        let worst_loss = resumed_losses
            .iter()
            .zip(&long_losses)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0.0f64, f64::max);
        if resumed_losses.len() != RESUMED_STEPS
            || long_losses.len() != RESUMED_STEPS
            || worst_loss > 1e-4
        {
            return Err(format!(
                "the resumed run's losses {resumed_losses:?} against an uninterrupted run's {long_losses:?}"
            ));
        }
        // Validation (a quarter held out, every 4 steps and at the end), kept across the reload.
        let long_val: Vec<(f64, f64)> =
            std::fs::read_to_string(self.native_long.join("metrics.jsonl"))
                .map_err(|e| e.to_string())?
                .lines()
                .filter_map(|l| {
                    let v = serde_json::from_str::<Value>(l).ok()?;
                    Some((v["step"].as_f64()?, v["val_loss"].as_f64()?))
                })
                .collect();
        let page_val: Vec<(f64, f64)> = resumed
            .val
            .as_array()
            .ok_or("no validation losses")?
            .iter()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect();
        let val_ok = page_val.len() == long_val.len()
            && page_val.len() == RESUMED_STEPS / 4
            && page_val
                .iter()
                .zip(&long_val)
                .all(|(a, b)| a.0 == b.0 && ((a.1 - b.1) / b.1).abs() < 1e-4);
        if !val_ok {
            return Err(format!(
                "the page's validation losses {page_val:?} against the native run's {long_val:?}"
            ));
        }
        let lost_notice = &resumed.lost_notice;
        println!("browser e2e: {resume_label} -> {lost_notice} -> {resumed_info}; {RESUMED_STEPS} losses within {worst_loss:.1e} of an uninterrupted run; validation {page_val:?}");
        Ok(native_losses)
    }

    /// The page's GGUF LoRA is what `webqlora export` writes for its PEFT adapter, that
    /// adapter equals the native one within 1e-4 relative, its config is PEFT's, and the
    /// page's greedy text before training is the native binary's.
    fn check_exports_and_generation(
        &mut self,
        trained: &Trained,
        native_losses: &[f64],
    ) -> Result<(), String> {
        let (dir, webqlora) = (&self.dir, &self.webqlora);
        // The page's GGUF LoRA is what `webqlora export` writes for the page's PEFT adapter.
        let exported = dir.join("exported.gguf");
        let mut cmd = Command::new(webqlora);
        run(crate::test::with_env(&mut cmd)
            .args(["export", "--model"])
            .arg(&self.model)
            .arg("--adapter")
            .arg(&self.downloads)
            .arg("--output")
            .arg(&exported)
            .stdout(Stdio::null()))?;
        let (page_gguf, native_gguf) = (
            std::fs::read(&trained.gguf).map_err(|e| e.to_string())?,
            std::fs::read(&exported).map_err(|e| e.to_string())?,
        );
        if page_gguf != native_gguf {
            return Err(format!(
                "the page's adapter.gguf ({} bytes) differs from `webqlora export` of its PEFT adapter ({} bytes)",
                page_gguf.len(),
                native_gguf.len()
            ));
        }
        let worst = crate::package_test::adapter_difference(
            &trained.weights,
            &self.native.join("adapter_model.safetensors"),
        )?;
        let config_text = std::fs::read_to_string(&trained.config).map_err(|e| e.to_string())?;
        if !config_text.contains("\"peft_type\": \"LORA\"") || !config_text.contains("\"r\": 4") {
            return Err(format!(
                "adapter_config.json is not the PEFT config: {config_text}"
            ));
        }
        println!("browser e2e: tried before | after: {}", trained.tried);
        // The page's greedy text before training is the native binary's on the same model.
        let mut cmd = Command::new(webqlora);
        crate::test::with_env(&mut cmd).env("WEBQLORA_KERNELS", "portable");
        let out = cmd
            .args(["generate", "--model"])
            .arg(&self.folder)
            .args(["--prompt", "Hello", "--max-new-tokens", "48"])
            .stderr(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let native_text = String::from_utf8_lossy(&out.stdout);
        let native_text = native_text
            .strip_prefix("Hello")
            .unwrap_or(&native_text)
            .trim_end_matches('\n');
        let page_text = &trained.page_text;
        if page_text.as_str() != Some(native_text) {
            return Err(format!(
                "the page generated {page_text} before training, the native binary {native_text:?}"
            ));
        }
        println!(
            "browser e2e: losses {:?} (native {:?}); adapter vs native: worst relative difference {worst:.2e}; screenshot {}",
            trained.losses.iter().map(|l| (l * 1e4).round() / 1e4).collect::<Vec<_>>(),
            native_losses.iter().map(|l| (l * 1e4).round() / 1e4).collect::<Vec<_>>(),
            dir.join("page.png").display()
        );
        if worst > 1e-4 {
            return Err(format!(
                "the page's adapter differs from the native one by {worst:.2e} (relative)"
            ));
        }
        Ok(())
    }
}
