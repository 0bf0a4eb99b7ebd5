//! The npm package's test (`cargo xtask test` runs it; `cargo xtask package-test` alone):
//!
//! 1. `npm pack --dry-run` lists exactly the package's intended files, and package.json's
//!    version is the crate's.
//! 2. `tsc --noEmit --strict` type-checks examples/typescript/example.ts against the packed
//!    index.d.ts, the package installed from its tarball as an app would have it (TypeScript
//!    from npm, installed into the cache like the other tools).
//! 3. examples/web-package/, a minimal page that imports the packed tarball's files through an
//!    import map (no bundler), fine-tunes the golden tiny Llama in headless Chromium, and its
//!    adapter equals the native binary's from the same seed, data and settings within 1e-4.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::browser_test::{dataset, open_site, read_safetensors};
use crate::install::run;

/// What the package holds, no more: what `files` in web/package/package.json and npm's own
/// rules (package.json, README.md) give.
const PACKAGE_FILES: [&str; 10] = [
    "README.md",
    "errors.js",
    "index.d.ts",
    "index.js",
    "models.js",
    "models.json",
    "package.json",
    "pkg/webqlora.js",
    "pkg/webqlora_bg.wasm",
    "worker.js",
];

const TYPESCRIPT: &str = "typescript@5.9.3";

pub fn run_test() -> Result<(), String> {
    crate::install::chromium()?;
    let root = crate::repo_root();
    let tarball = crate::web::pack()?;
    let dir = root.join("target/e2e-package");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    check_files()?;
    type_check(&tarball, &dir.join("typescript"))?;
    example_page(&tarball, &dir)
}

fn npm_json(args: &[&str], cwd: &Path) -> Result<Value, String> {
    let out = Command::new("npm")
        .args(args)
        .current_dir(cwd)
        .output()
        .map_err(|e| format!("npm {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "npm {} in {}: {}",
            args.join(" "),
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("npm {}: {e}", args.join(" ")))
}

/// `npm pack --dry-run`: exactly PACKAGE_FILES, at the crate's version.
fn check_files() -> Result<(), String> {
    let report = npm_json(&["pack", "--dry-run", "--json"], &crate::web::npm_dir())?;
    let mut files: Vec<String> = report[0]["files"]
        .as_array()
        .ok_or("npm pack --dry-run --json: no files")?
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    files.sort();
    if files != PACKAGE_FILES {
        return Err(format!(
            "the npm package holds {files:?}, and should hold {PACKAGE_FILES:?}"
        ));
    }
    let version = crate::web::crate_version()?;
    if report[0]["version"].as_str() != Some(version.as_str()) {
        return Err(format!(
            "the npm package's version is {}, the crate's {version}",
            report[0]["version"]
        ));
    }
    println!(
        "npm package: {} files, {} bytes packed, version {version}",
        files.len(),
        report[0]["size"]
    );
    Ok(())
}

/// The tarball's files under `app`/node_modules/webqlora, as `npm install TARBALL` puts them.
fn install_tarball(tarball: &Path, app: &Path) -> Result<(), String> {
    let into = app.join("node_modules/webqlora");
    std::fs::create_dir_all(&into).map_err(|e| format!("{}: {e}", into.display()))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("--strip-components=1")
        .arg("-C")
        .arg(&into))
}

/// TypeScript's compiler, installed once into the cache.
fn tsc() -> Result<PathBuf, String> {
    crate::install::npm()?;
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let prefix = PathBuf::from(home).join(".cache/webqlora/typescript");
    let bin = prefix.join("node_modules/.bin/tsc");
    if !bin.exists() {
        eprintln!(
            "xtask: installing {TYPESCRIPT} from npm into {}",
            prefix.display()
        );
        std::fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
        run(Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(TYPESCRIPT))?;
    }
    Ok(bin)
}

fn type_check(tarball: &Path, app: &Path) -> Result<(), String> {
    let tsc = tsc()?;
    install_tarball(tarball, app)?;
    let example = crate::repo_root().join("examples/typescript");
    for f in ["example.ts", "tsconfig.json"] {
        std::fs::copy(example.join(f), app.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    let out = Command::new(&tsc)
        .args(["--noEmit", "--strict", "-p", "."])
        .current_dir(app)
        .output()
        .map_err(|e| format!("{}: {e}", tsc.display()))?;
    if !out.status.success() {
        return Err(format!(
            "tsc --noEmit --strict on examples/typescript/example.ts against the packed index.d.ts:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!(
        "npm package: examples/typescript/example.ts type-checks against index.d.ts (tsc --strict)"
    );
    Ok(())
}

/// The worst relative L2 difference between two adapters' tensors, matched by name.
pub(crate) fn adapter_difference(a: &Path, b: &Path) -> Result<f64, String> {
    let (x, y) = (read_safetensors(a)?, read_safetensors(b)?);
    if x.len() != y.len() || x.is_empty() {
        return Err(format!(
            "{} tensors in {}, {} in {}",
            x.len(),
            a.display(),
            y.len(),
            b.display()
        ));
    }
    let mut worst = 0.0f64;
    for ((name, p), (other, q)) in x.iter().zip(&y) {
        if name != other || p.len() != q.len() {
            return Err(format!("tensor {name} vs {other}"));
        }
        let diff: f64 = p.iter().zip(q).map(|(u, v)| ((u - v) as f64).powi(2)).sum();
        let norm: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum();
        worst = worst.max((diff / norm.max(1e-30)).sqrt());
    }
    Ok(worst)
}

fn example_page(tarball: &Path, dir: &Path) -> Result<(), String> {
    let root = crate::repo_root();
    crate::browser_test::native_binary()?;
    // The app: the example's files and the package from its tarball.
    let app = dir.join("app");
    install_tarball(tarball, &app)?;
    let example = root.join("examples/web-package");
    for f in ["index.html", "main.js"] {
        std::fs::copy(example.join(f), app.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    // The golden tiny Llama as a folder with a byte-level tokenizer, and tokenized data.
    let golden = root
        .join("../shared/golden/tiny-llama/base-f32")
        .canonicalize()
        .map_err(|e| format!("the golden tiny Llama: {e}"))?;
    let files = dir.join("files");
    let model = files.join("tiny-llama");
    std::fs::create_dir_all(&model).map_err(|e| e.to_string())?;
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden.join(f), model.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    std::fs::write(
        model.join("tokenizer.json"),
        crate::browser_test::byte_tokenizer(),
    )
    .map_err(|e| e.to_string())?;
    let data = files.join("data.jsonl");
    std::fs::write(&data, dataset()).map_err(|e| e.to_string())?;

    // The native run with the example's settings.
    let native = dir.join("native");
    crate::browser_test::train_native(
        &model,
        &data,
        &native,
        &[
            "--rank",
            "4",
            "--alpha",
            "8",
            "--lr",
            "0.01",
            "--steps",
            "6",
            "--max-seq-len",
            "64",
            "--batch",
            "4",
            "--seed",
            "7",
        ],
    )?;

    let uploads = dir.join("uploads");
    let site = crate::web::Site {
        root: app,
        files: Some(files),
        uploads: Some(uploads.clone()),
    };
    let report_file = uploads.join("report.json");
    let (_browser, mut cdp, _port) = open_site(
        site,
        &dir.join("profile"),
        &dir.join("downloads"),
        "?model=http://127.0.0.1:{port}/files/tiny-llama/&data=/files/data.jsonl&kernels=portable&upload=/upload",
        "document.readyState === 'complete'",
    )?;
    let start = std::time::Instant::now();
    while !report_file.exists() {
        if start.elapsed() > Duration::from_secs(300) {
            let log = cdp.eval("document.getElementById('log').textContent")?;
            return Err(format!(
                "the package example page did not finish in 300 s: {log}; console:\n{}",
                cdp.console.join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&report_file).map_err(|e| e.to_string())?;
    let report: Value = serde_json::from_str(&text).map_err(|e| format!("report.json: {e}"))?;
    if let Some(e) = report["error"].as_str() {
        return Err(format!(
            "the package example page failed: {e}; console:\n{}",
            cdp.console.join("\n")
        ));
    }
    let problems = example_problems(&report);
    if !problems.is_empty() {
        return Err(format!(
            "the package example page: {}; report {report}",
            problems.join("; ")
        ));
    }
    let worst = adapter_difference(
        &uploads.join("adapter_model.safetensors"),
        &native.join("adapter_model.safetensors"),
    )?;
    let config = std::fs::read_to_string(uploads.join("adapter_config.json"))
        .map_err(|e| format!("the example's adapter_config.json: {e}"))?;
    if !config.contains("\"peft_type\": \"LORA\"") {
        return Err(format!(
            "the example's adapter_config.json is not PEFT's: {config}"
        ));
    }
    println!(
        "npm package: the example page (import map, packed files) trained {} steps, losses {}; eval loss {} base -> {} adapter; adapter vs native: worst relative difference {worst:.2e}",
        report["losses"].as_array().map_or(0, Vec::len),
        report["losses"],
        report["evalBase"],
        report["evalAdapter"]
    );
    if worst > 1e-4 {
        return Err(format!(
            "the example page's adapter differs from the native one by {worst:.2e} (relative)"
        ));
    }
    Ok(())
}

/// What the example page's report shows wrong.
fn example_problems(r: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let losses: Vec<f64> = r["losses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if losses.len() != 6 || losses.last() >= losses.first() {
        out.push(format!("6 falling losses expected, got {losses:?}"));
    }
    if r["badSetting"] != json!([true, "rnak", r["badSetting"][2]])
        || !r["badSetting"][2]
            .as_str()
            .is_some_and(|m| m.contains("settings.rnak"))
    {
        out.push(format!(
            "an unknown setting should throw SettingsError naming it: {}",
            r["badSetting"]
        ));
    }
    if r["zeroBatch"][0] != json!("WebQloraError")
        || !r["zeroBatch"][1]
            .as_str()
            .is_some_and(|m| m.contains("settings.batch"))
    {
        out.push(format!(
            "a batch of 0 should be refused naming settings.batch: {}",
            r["zeroBatch"]
        ));
    }
    if r["fit"] != json!(true) || r["stopped"] != json!(false) || r["checkpointStep"] != json!(6) {
        out.push("the run should fit, end unstopped with its checkpoint of step 6".into());
    }
    match (r["evalBase"].as_f64(), r["evalAdapter"].as_f64()) {
        (Some(base), Some(tuned)) if tuned < base => {}
        _ => out.push("the adapter should lower the evaluated loss".into()),
    }
    if r["streamed"].as_u64().unwrap_or(0) == 0 {
        out.push("generate streamed no text".into());
    }
    if r["ggufLoraBytes"].as_u64().unwrap_or(0) == 0 {
        out.push("the GGUF LoRA is empty".into());
    }
    out
}
