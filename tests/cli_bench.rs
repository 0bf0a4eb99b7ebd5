//! `webqlora bench step --json` on a model's shape with seeded random weights (a config.json
//! alone, as the device benchmark carries): one JSON line with the figures, on both kernel
//! paths, the same loss; a GGUF is not needed, and --base gguf without block codes is refused.

mod common;

use common::cli::{fails, ok, path, webqlora};

fn step(config: &str, kernels: &str) -> serde_json::Value {
    step_with(config, kernels, &[])
}

fn step_with(config: &str, kernels: &str, extra: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .env("WEBQLORA_KERNELS", kernels)
        .args(["bench", "step", "--model", config, "--random-weights"])
        .args([
            "--batch", "2", "--seq", "16", "--rank", "4", "--steps", "2", "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = ok(out);
    let line = text.lines().last().expect("a line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `--dora`: the DoRA kernels run, the magnitudes' gradients once a module a step.
#[test]
fn bench_step_with_dora() {
    let config = common::golden("tiny-llama/base-f32/config.json");
    let run = step_with(path(&config), "portable", &["--dora"]);
    let by_kernel = run["dispatches_by_kernel"].as_object().unwrap();
    assert_eq!(by_kernel["dora_magnitude_grad"], 14, "{run}");
    assert!(by_kernel["dora_norm"].as_u64().unwrap() >= 14, "{run}");
    assert!(run["loss"].as_f64().unwrap().is_finite());
}

#[test]
fn bench_step_json_on_random_weights_of_a_config() {
    let config = common::golden("tiny-llama/base-f32/config.json");
    let software = step(path(&config), "software");
    let portable = step(path(&config), "portable");
    for (run, kernels) in [(&software, "software"), (&portable, "portable")] {
        assert_eq!(run["random_weights"], true);
        assert_eq!(run["tokens"], 32);
        assert!(run["kernels"]
            .as_str()
            .unwrap()
            .contains(&format!("nf4={kernels}")));
        assert!(run["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(run["planned_peak_bytes"].as_u64().unwrap() > 0);
        let by_kernel = run["dispatches_by_kernel"].as_object().unwrap();
        let sum: u64 = by_kernel.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(sum, run["dispatches"].as_u64().unwrap());
        // The optimizer over groups: one AdamW and one gradient-norm pass a step.
        assert_eq!(by_kernel["adamw"], 1, "{run}");
        assert_eq!(by_kernel["grad_sumsq"], 1, "{run}");
    }
    assert!(portable["dispatches_by_kernel"]
        .as_object()
        .unwrap()
        .contains_key("nf4_gemm_forward"));
    let (a, b) = (
        software["loss"].as_f64().unwrap(),
        portable["loss"].as_f64().unwrap(),
    );
    // Step 2's loss, after one update: finite (the session, not the random source, starts
    // the adapter and AdamW's moments) and the same on both paths.
    assert!(a.is_finite() && ((a - b) / a).abs() < 1e-4, "{a} vs {b}");

    let err = fails(webqlora(&[
        "bench",
        "step",
        "--model",
        path(&common::golden("tiny-llama/base-f32")),
        "--random-weights",
        "--base",
        "gguf",
        "--steps",
        "1",
    ]));
    assert!(err.contains("--base gguf"), "{err}");
}

/// `bench kernels` with no tokens or no runs is refused in words (0 tokens divided the
/// attention rows' pairs by zero).
#[test]
fn bench_kernels_refuses_zero_tokens_and_runs() {
    for flag in ["--tokens", "--runs"] {
        let err = fails(webqlora(&["bench", "kernels", flag, "0"]));
        assert!(
            err.contains(&format!("invalid value '0' for '{flag}")) && err.contains("at least 1"),
            "{err}"
        );
    }
}
