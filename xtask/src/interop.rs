//! `cargo xtask interop`: what webqlora exports, run by llama.cpp itself. Builds
//! llama-cpp-python from source into a virtual environment (target/interop/venv, once: about
//! 15 minutes on 2 cores), then for SmolLM2-135M (Llama: q/k rows permuted in GGUF) and
//! Gemma 3 270M (not permuted, tied embeddings):
//!
//! 1. trains a small adapter from the model's GGUF (`train --export gguf-lora`, 3 steps);
//! 2. writes the base in f32 (`merge --format gguf --dtype f32` of the adapter with B zeroed),
//!    and the adapter merged in f16 and q8_0;
//! 3. asks llama.cpp for the logits of one prompt (tokenized by llama.cpp) with each file and
//!    compares them with webqlora's (`dump-step`, the same tokens):
//!    - f32 base + GGUF LoRA, against webqlora's f32 base + the PEFT adapter: within 2e-3
//!      (both multiply f32 by f32; a LoRA without its q/k permutation is off by 0.13);
//!    - the merged f16 file within 1e-2, the q8_0 file within 6e-2 (llama.cpp multiplies
//!      8-bit weights by 8-bit activations), next-token argmax agreeing at ≥ 90% of positions;
//!    - the GGUF LoRA on the original quantized file: the change it makes to llama.cpp's
//!      logits against the change the adapter makes to webqlora's on the same codes
//!      (`--base gguf`), within 20% (the bases themselves differ by 3–6% there).
//!
//! Not part of `cargo xtask test` (the build alone takes longer than the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::install::run;

/// The llama-cpp-python release the checks were written against.
const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";

pub fn main(_args: &[String]) -> Result<(), String> {
    let root = crate::repo_root();
    let dir = root.join("target/interop");
    let python = venv(&dir)?;
    run(crate::test::cargo()
        .args(["build", "--release", "--bin", "webqlora"])
        .current_dir(&root))?;
    let bin = root.join("target/release/webqlora");
    crate::install::gpu_driver(&bin)?;
    let script = root.join("xtask/interop/check_llama_cpp.py");
    let mut lines = Vec::new();
    for model in crate::fetch_model::MODELS {
        let gguf = crate::fetch_model::fetch_model(model)?;
        let out = dir.join(model.name);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        lines.extend(check_model(&bin, &python, &script, &gguf, &out, &root)?);
    }
    println!("interop: {} llama.cpp checks passed", lines.len());
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}

/// The virtual environment's python, with llama-cpp-python, numpy and safetensors.
fn venv(dir: &Path) -> Result<PathBuf, String> {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import llama_cpp, numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    crate::install::pip()?;
    crate::install::debian_packages(&["python3-venv", "g++"], "building llama.cpp")?;
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    eprintln!("xtask: building {LLAMA_CPP_PYTHON} from source (about 15 minutes on 2 cores)");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
        .args([LLAMA_CPP_PYTHON, "numpy", "safetensors"])
        .env("CMAKE_BUILD_PARALLEL_LEVEL", num_cpus().to_string()))?;
    Ok(python)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Run the release binary; Err with its output when it fails.
fn webqlora(bin: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(bin);
    crate::test::with_env(&mut cmd);
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "webqlora {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Run one check of the script; its JSON line.
fn check(python: &Path, script: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!(
            "llama.cpp check {} failed: {stdout}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(stdout)
}

fn check_model(
    bin: &Path,
    python: &Path,
    script: &Path,
    gguf: &Path,
    out: &Path,
    root: &Path,
) -> Result<Vec<String>, String> {
    let s = |p: &Path| p.display().to_string();
    let (model, o) = (s(gguf), s(out));
    let at = |name: &str| s(&out.join(name));
    let data = s(&root.join("data/mcq/train.jsonl"));
    webqlora(
        bin,
        &[
            "train",
            "--model",
            &model,
            "--data",
            &data,
            "--steps",
            "3",
            "--batch",
            "2",
            "--lr",
            "2e-3",
            "--max-seq-len",
            "64",
            "--output",
            &o,
            "--export",
            "gguf-lora",
            "--quiet",
        ],
    )?;
    check(python, script, &["tokens", &model, &o])?;
    check(python, script, &["zero", &o, &at("zero")])?;
    let merge = |adapter: &str, dtype: &str, file: &str| {
        webqlora(
            bin,
            &[
                "merge",
                "--model",
                &model,
                "--adapter",
                adapter,
                "--format",
                "gguf",
                "--dtype",
                dtype,
                "--output",
                &at(file),
            ],
        )
    };
    merge(&at("zero"), "f32", "base-f32.gguf")?;
    merge(&o, "f16", "merged-f16.gguf")?;
    merge(&o, "q8_0", "merged-q8_0.gguf")?;
    let batch = at("batch.safetensors");
    let dump = |adapter: &str, base: &str, file: &str| {
        webqlora(
            bin,
            &[
                "dump-step",
                "--model",
                &model,
                "--adapter",
                adapter,
                "--batch",
                &batch,
                "--base",
                base,
                "--out",
                &at(file),
            ],
        )
    };
    dump(&o, "f32", "ours-f32.safetensors")?;
    dump(&o, "gguf", "ours-gguf.safetensors")?;
    dump(&at("zero"), "gguf", "ours0-gguf.safetensors")?;
    let ids = at("ids.json");
    let ours = at("ours-f32.safetensors");
    let lora = at("adapter.gguf");
    Ok(vec![
        check(
            python,
            script,
            &[
                "logits",
                &at("base-f32.gguf"),
                &ids,
                &ours,
                "2e-3",
                "--lora",
                &lora,
            ],
        )?,
        check(
            python,
            script,
            &["logits", &at("merged-f16.gguf"), &ids, &ours, "1e-2"],
        )?,
        check(
            python,
            script,
            &["logits", &at("merged-q8_0.gguf"), &ids, &ours, "6e-2"],
        )?,
        check(
            python,
            script,
            &[
                "change",
                &model,
                &lora,
                &ids,
                &at("ours-gguf.safetensors"),
                &at("ours0-gguf.safetensors"),
                "0.25",
            ],
        )?,
    ])
}
