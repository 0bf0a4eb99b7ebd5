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
        (&["--epochs", "1e300"], "fewer steps or epochs"),
        (&["--steps", "99999999999"], "fewer steps or epochs"),
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

/// Generation stops at the model's context (128 positions in the tiny Llama) with a note,
/// whatever --max-new-tokens asks; a prompt that fills the context is refused before anything
/// is sized.
#[test]
fn generation_is_bounded_by_the_models_context() {
    let dir = common::tiny_llama_with_tokenizer("generate-context");
    let out = webqlora(&[
        "generate",
        "--model",
        path(&dir),
        "--base",
        "f32",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "100000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let counts: Vec<usize> = stderr
        .lines()
        .find(|l| l.contains(" prompt + "))
        .unwrap_or_else(|| panic!("{stderr}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    let (prompt, new) = (counts[0], counts[1]);
    assert!(prompt + new <= 128, "{stderr}");
    assert_eq!(
        prompt + new == 128,
        stderr.contains("stopped at the model's context of 128 tokens"),
        "{stderr}"
    );
    let long = "a".repeat(200);
    let err = fails(webqlora(&[
        "generate",
        "--model",
        path(&dir),
        "--base",
        "f32",
        "--prompt",
        &long,
    ]));
    assert!(err.contains("max_position_embeddings"), "{err}");
}

/// Sizes from flags are bounded before work starts: against the data (a step of more
/// micro-batches than training rows), the arithmetic (a product past usize) and the device (a
/// micro-batch whose hidden states pass its largest buffer). Never a capacity-overflow panic
/// or minutes of work before the error.
#[test]
fn batch_and_accumulation_are_bounded_before_work_starts() {
    let dir = temp_dir("flags-sizes");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, common::cli::pattern_jsonl(4, 8)).unwrap();
    let out = dir.join("out");
    let model = tiny_llama();
    let max = u64::MAX.to_string();
    let cases: [(&[&str], &str); 6] = [
        (&["--accumulation", "9223372036854775807"], "--accumulation"),
        (&["--accumulation", "5"], "--accumulation 5"),
        (&["--batch", &max], "--batch"),
        (&["--batch", "1099511627776"], "--batch 1099511627776"),
        (
            &["--batch", "576460752303423488"],
            "--batch 576460752303423488",
        ),
        (&["--batch", "16777216"], "largest buffer"),
    ];
    for (flags, named) in cases {
        let mut args = vec![
            "train",
            "--model",
            path(&model),
            "--base",
            "f32",
            "--data",
            path(&data),
            "--output",
            path(&out),
            "--quiet",
        ];
        args.extend(flags);
        let err = fails(webqlora(&args));
        assert!(err.contains(named), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?}");
    }
}
