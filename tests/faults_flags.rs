//! Flags out of range are errors naming the flag, before anything is loaded or written: never
//! silently reinterpreted (`--batch 0` used to train with 1).

mod common;

use common::cli::{fails, path, tiny_llama, webqlora};
use common::temp_dir;

#[test]
fn train_flags_out_of_range_are_refused() {
    let dir = temp_dir("flags-train");
    std::fs::write(dir.join("d.jsonl"), "{\"input_ids\": [1, 2, 3]}\n").unwrap();
    let model = tiny_llama();
    let out = dir.join("out");
    let data = dir.join("d.jsonl");
    let base = [
        "train",
        "--model",
        path(&model),
        "--data",
        path(&data),
        "--output",
        path(&out),
        "--quiet",
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--batch", "0"], "--batch"),
        (&["--accumulation", "0"], "--accumulation"),
        (&["--epochs", "0"], "--epochs"),
        (&["--epochs", "-1"], "--epochs"),
        (&["--epochs", "nan"], "--epochs"),
        (&["--steps", "0"], "--steps"),
        (&["--rank", "0"], "--rank"),
        (&["--alpha", "0"], "--alpha"),
        (&["--alpha", "-16"], "--alpha"),
        (&["--lr", "nan"], "--lr"),
        (&["--lr", "inf"], "--lr"),
        (&["--lr", "-1e-4"], "--lr"),
        (&["--weight-decay", "-0.1"], "--weight-decay"),
        (&["--max-seq-len", "0"], "--max-seq-len"),
        (&["--max-grad-norm", "-1"], "--max-grad-norm"),
        (&["--max-grad-norm", "nan"], "--max-grad-norm"),
        (&["--lora-dropout", "1"], "--lora-dropout"),
        (&["--valid-split", "-0.5"], "--valid-split"),
        (&["--valid-split", "nan"], "--valid-split"),
        (&["--target-modules", "foo_proj"], "foo_proj"),
    ];
    for (extra, flag) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let err = fails(webqlora(&args));
        assert!(err.contains(flag), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}

#[test]
fn eval_generate_and_bench_flags_out_of_range_are_refused() {
    let model = tiny_llama();
    let cases: &[(&[&str], &str)] = &[
        (&["eval", "--data", "x.jsonl", "--limit", "0"], "--limit"),
        (
            &["eval", "--data", "x.jsonl", "--max-seq-len", "0"],
            "--max-seq-len",
        ),
        (
            &["generate", "--prompt", "hi", "--max-new-tokens", "0"],
            "--max-new-tokens",
        ),
        (
            &["generate", "--prompt", "hi", "--temperature", "-1"],
            "--temperature",
        ),
        (&["generate", "--prompt", "hi", "--top-p", "0"], "--top-p"),
        (&["bench", "step", "--batch", "0"], "--batch"),
        (&["bench", "step", "--steps", "0"], "--steps"),
        // A GGUF file's own codes need a GGUF file.
        (
            &["generate", "--prompt", "hi", "--base", "gguf"],
            "--base gguf",
        ),
        (
            &["eval", "--data", "x.jsonl", "--base", "gguf"],
            "--base gguf",
        ),
    ];
    for (args, flag) in cases {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--model", path(&model)]);
        let err = fails(webqlora(&all));
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}
