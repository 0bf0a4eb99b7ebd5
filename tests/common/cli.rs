//! Running the `webqlora` binary in tests, and model folders with one thing wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run `webqlora` with `args`.
pub fn webqlora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(args)
        .output()
        .unwrap()
}

/// `webqlora train` from the PEFT adapter `adapter` for one step on the golden batch of the
/// tiny Llama (f32 base), with the AdamW settings of golden/tiny-llama/expected.json, no
/// clipping, into `dir/out`; returns that folder.
pub fn one_golden_step(adapter: &Path, dir: &Path) -> PathBuf {
    std::fs::write(dir.join("batch.jsonl"), super::golden_batch_jsonl()).unwrap();
    let rows = super::golden_batch_jsonl().lines().count().to_string();
    let out = dir.join("out");
    let base = super::golden("tiny-llama/base-f32");
    ok(webqlora(&[
        "train",
        "--model",
        path(&base),
        "--base",
        "f32",
        "--adapter",
        path(adapter),
        "--data",
        path(&dir.join("batch.jsonl")),
        "--output",
        path(&out),
        "--batch",
        &rows,
        "--steps",
        "1",
        "--lr",
        "1e-3",
        "--weight-decay",
        "0.01",
        "--schedule",
        "constant",
        "--max-grad-norm",
        "0",
        "--quiet",
    ]));
    out
}

/// stdout of a run that must succeed.
pub fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// stderr of a run that must fail cleanly: a non-zero exit with an error, never a panic.
pub fn fails(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "should have failed:\n{}\n{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "a panic instead of an error:\n{err}"
    );
    err
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The golden tiny Llama (f32 weights, no tokenizer).
pub fn tiny_llama() -> PathBuf {
    super::golden("tiny-llama/base-f32")
}

/// A copy of the tiny Llama in `dir` whose config.json has `edit` applied.
pub fn tiny_llama_with_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = tiny_llama();
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

/// A copy of the tiny Llama in `dir` whose tensor `name` has `edit` applied to its values.
pub fn tiny_llama_with_tensor(dir: &Path, name: &str, edit: impl FnOnce(&mut [f32])) -> PathBuf {
    let src = tiny_llama();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32);
            (
                n,
                v.shape().to_vec(),
                bytemuck::pod_collect_to_vec(v.data()),
            )
        })
        .collect();
    let target = tensors
        .iter_mut()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    edit(&mut target.2);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                s.clone(),
                bytemuck::cast_slice(v),
            )
            .unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

/// `n` tokenized examples of `len` ids each, every token learned.
pub fn pattern_jsonl(n: usize, len: usize) -> String {
    (0..n)
        .map(|i| {
            let ids: Vec<u32> = (0..len).map(|k| ((i * 7 + k * 3) % 256) as u32).collect();
            serde_json::json!({ "input_ids": ids }).to_string() + "\n"
        })
        .collect()
}

/// Every file below `dir` (relative paths, sorted): what a failed command must not have
/// added to or taken from.
pub fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let p = entry.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}
