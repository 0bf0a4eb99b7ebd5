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
//! And TRL continues a webqlora run (`examples/continue_on_cluster.py`, in its own virtual
//! environment target/interop/trl-venv with torch, transformers, peft, trl and accelerate,
//! about 3.5 GB from PyPI, once): webqlora trains the tiny Llama 3 steps on tokenized records
//! with masked prompts; the script loads that PEFT adapter (checking every tensor loaded as
//! saved) and the same JSONL into SFTTrainer on the CPU, batches in file order, and trains 3
//! steps; its first loss must equal webqlora's `dump-step` on the batch TRL built within
//! 1e-4, and the adapter it saves must load back into webqlora.
//!
//! `--only llama.cpp` or `--only trl` runs one part. Not part of `cargo xtask test` (the
//! llama.cpp build alone takes longer than the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::install::run;

/// The llama-cpp-python release the checks were written against.
const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";

pub fn main(args: &[String]) -> Result<(), String> {
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    if !matches!(only, None | Some("llama.cpp") | Some("trl")) {
        return Err(format!(
            "--only {}: llama.cpp or trl",
            only.unwrap_or_default()
        ));
    }
    let root = crate::repo_root();
    let dir = root.join("target/interop");
    run(crate::test::cargo()
        .args(["build", "--release", "--bin", "webqlora"])
        .current_dir(&root))?;
    let bin = root.join("target/release/webqlora");
    crate::install::gpu_driver(&bin)?;
    let mut lines = Vec::new();
    if only != Some("llama.cpp") {
        lines.push(check_trl(&bin, &dir, &root, false)?);
        lines.push(check_trl(&bin, &dir, &root, true)?);
    }
    if only == Some("trl") {
        println!(
            "interop: TRL continues a webqlora run\n  {}\n  {}",
            lines[0], lines[1]
        );
        return Ok(());
    }
    let python = venv(&dir)?;
    let script = root.join("xtask/interop/check_llama_cpp.py");
    for model in crate::fetch_model::MODELS {
        let gguf = crate::fetch_model::fetch_model(model)?;
        let out = dir.join(model.name);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        lines.extend(check_model(&bin, &python, &script, &gguf, &out, &root)?);
    }
    println!("interop: {} checks passed (TRL and llama.cpp)", lines.len());
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}

/// The virtual environment's python, with llama-cpp-python, numpy and safetensors.
fn venv(dir: &Path) -> Result<PathBuf, String> {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let cmake_args = portable_cmake_args();
    // The flags the venv's llama.cpp was built with: one built natively (before this was
    // portable) or for another machine is rebuilt.
    let marker = venv.join("webqlora-cmake-args");
    let ready = Command::new(&python)
        .args(["-c", "import llama_cpp, numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success())
        && std::fs::read_to_string(&marker).is_ok_and(|m| m == cmake_args);
    if ready {
        return Ok(python);
    }
    crate::install::pip()?;
    crate::install::debian_packages(&["python3-venv", "g++"], "building llama.cpp")?;
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    eprintln!(
        "xtask: building {LLAMA_CPP_PYTHON} from source (about 15 minutes on 2 cores), \
         CMAKE_ARGS={cmake_args:?}"
    );
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
        .args([LLAMA_CPP_PYTHON, "numpy", "safetensors"])
        .env("CMAKE_ARGS", &cmake_args)
        .env("CMAKE_BUILD_PARALLEL_LEVEL", num_cpus().to_string()))?;
    std::fs::write(&marker, &cmake_args).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(python)
}

/// llama.cpp built for a portable x86 baseline rather than `-march=native`: its native build
/// on an Intel CPU with AMX (Sapphire Rapids) segfaults in its first eval, on the base model
/// alone, and AVX-512 paths differ between hosts. AVX2/FMA/F16C where this CPU has them (the
/// checks only compare logits), nothing wider; other architectures keep llama.cpp's default.
fn portable_cmake_args() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        let on = if avx2 { "ON" } else { "OFF" };
        format!(
            "-DGGML_NATIVE=OFF -DGGML_AVX={on} -DGGML_AVX2={on} -DGGML_FMA={on} \
             -DGGML_F16C={on} -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
             -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::new()
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The virtual environment's python with what `examples/continue_on_cluster.py` imports.
fn trl_venv(dir: &Path) -> Result<PathBuf, String> {
    let venv = dir.join("trl-venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args([
            "-c",
            "import torch, transformers, peft, trl, accelerate, datasets",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    crate::install::pip()?;
    crate::install::debian_packages(&["python3-venv"], "the TRL check")?;
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    eprintln!("xtask: installing torch, transformers, peft, trl, accelerate (about 3.5 GB)");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
        .args([
            "torch",
            "transformers",
            "peft",
            "trl",
            "accelerate",
            "datasets",
            "safetensors",
        ]))?;
    Ok(python)
}

/// TRL's SFTTrainer continues a webqlora run of the tiny Llama: its first loss against
/// webqlora's on the same batch.
/// TRL continues webqlora's run (a LoRA one, or with `dora` a DoRA one) from its adapter.
fn check_trl(bin: &Path, dir: &Path, root: &Path, dora: bool) -> Result<String, String> {
    let python = trl_venv(dir)?;
    let out = dir.join(if dora { "trl-dora" } else { "trl" });
    let _ = std::fs::remove_dir_all(&out);
    let model = out.join("tiny-llama");
    std::fs::create_dir_all(&model).map_err(|e| format!("{}: {e}", model.display()))?;
    let golden = root.join("../shared/golden/tiny-llama/base-f32");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden.join(f), model.join(f))
            .map_err(|e| format!("{}: {e}", golden.join(f).display()))?;
    }
    // A byte-level tokenizer for its 256 ids (TRL wants one to pad with); id 0 pads.
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        model.join("tokenizer.json"),
        crate::browser_test::byte_tokenizer(),
    )?;
    write(
        model.join("tokenizer_config.json"),
        serde_json::json!({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "\u{100}", "pad_token": "\u{100}"})
            .to_string(),
    )?;
    // Tokenized records of several lengths, the first four tokens of each a prompt (no loss).
    let data: String = (0..12)
        .map(|i| {
            let ids: Vec<usize> = (0..10 + 3 * i).map(|k| (i * 7 + k * 3) % 256).collect();
            let labels: Vec<i64> = ids
                .iter()
                .enumerate()
                .map(|(k, &id)| if k < 4 { -100 } else { id as i64 })
                .collect();
            format!(
                "{}\n",
                serde_json::json!({"input_ids": ids, "labels": labels})
            )
        })
        .collect();
    write(out.join("data.jsonl"), data)?;
    let s = |p: PathBuf| p.display().to_string();
    let (m, d, run_dir) = (
        s(model.clone()),
        s(out.join("data.jsonl")),
        s(out.join("run")),
    );
    let common = [
        "--rank", "4", "--alpha", "8", "--lr", "0.01", "--batch", "4",
    ];
    let mut train = vec!["train", "--model", &m, "--data", &d, "--output", &run_dir];
    train.extend(["--steps", "3", "--quiet"]);
    train.extend(common);
    if dora {
        train.push("--dora");
    }
    webqlora(bin, &train)?;
    let (report, more) = (s(out.join("report.json")), s(out.join("continued")));
    let script = root.join("examples/continue_on_cluster.py");
    let status = Command::new(&python)
        .arg(&script)
        .args([
            "--model",
            &m,
            "--adapter",
            &run_dir,
            "--data",
            &d,
            "--output",
            &more,
        ])
        .args([
            "--steps",
            "3",
            "--batch",
            "4",
            "--lr",
            "0.01",
            "--max-seq-len",
            "64",
        ])
        .args(["--in-order", "--report", &report])
        .status()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()));
    }
    let report_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&report).map_err(|e| format!("{report}: {e}"))?,
    )
    .map_err(|e| format!("{report}: {e}"))?;
    let trl_loss = report_json["first_loss"]
        .as_f64()
        .ok_or_else(|| format!("{report}: no first_loss"))?;
    let batch = format!("{report}.safetensors");
    let loss_of = |adapter: &str, file: &str| -> Result<f64, String> {
        let dump = s(out.join(file));
        let args = [
            "dump-step",
            "--model",
            &m,
            "--adapter",
            adapter,
            "--batch",
            &batch,
        ];
        let text = webqlora_output(
            bin,
            &[&args[..], &["--base", "f32", "--out", &dump]].concat(),
        )?;
        text.split_whitespace()
            .nth(1)
            .and_then(|l| l.trim_end_matches(';').parse().ok())
            .ok_or_else(|| format!("dump-step printed no loss: {text}"))
    };
    let ours = loss_of(&run_dir, "ours.safetensors")?;
    let continued = loss_of(&more, "continued.safetensors")?;
    let rel = ((trl_loss - ours) / ours).abs();
    if rel > 1e-4 || !continued.is_finite() {
        return Err(format!(
            "TRL's first loss {trl_loss} against webqlora's {ours} on the same batch (relative {rel:.1e}); the continued adapter's loss in webqlora {continued}"
        ));
    }
    Ok(format!(
        "{}TRL SFTTrainer from webqlora's adapter: first loss {trl_loss:.6}, webqlora's on the same batch {ours:.6} (relative {rel:.1e}); TRL's adapter after 3 more steps loads back into webqlora: loss {continued:.6}; losses {}",
        if dora { "DoRA: " } else { "" },
        report_json["losses"]
    ))
}

/// Run the release binary; Err with its output when it fails.
fn webqlora(bin: &Path, args: &[&str]) -> Result<(), String> {
    webqlora_output(bin, args).map(|_| ())
}

/// Run the release binary; its standard output, or Err with its output when it fails.
fn webqlora_output(bin: &Path, args: &[&str]) -> Result<String, String> {
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
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
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
