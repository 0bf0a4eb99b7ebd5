//! `cargo xtask stress`: the random-seed tests under many fresh seeds, to find the failures
//! that only some inputs provoke before CI does. Each test draws its inputs from
//! `tests/common::for_each_seed`, which runs `WEBQLORA_STRESS` fresh seeds (after the fixed
//! regression seeds) and names the failing one; `WEBQLORA_SEED=<seed>` replays it.
//!
//!   cargo xtask stress [--seeds 200] [--path software|portable|both] [--test FILE]...
//!                      [--only NAME]... [--skip NAME]...
//!
//! `--only` and `--skip` pick tests by name within the files (libtest's filter and `--skip`):
//! a few tests (`a_2048_token_sequence_matches_cpu`) cost a hundred times the others a seed.
//!
//! Runs on both kernel paths by default: the software path (what lavapipe gets) and
//! `WEBQLORA_KERNELS=portable` (what hardware GPUs get). Not part of `cargo xtask test`: 200
//! seeds of every kernel file take longer than CI's budget.

use crate::install;
use crate::test::{cargo_test_with, Counts};

/// The test files whose tests draw random inputs for kernels against CPU references.
pub const KERNEL_TESTS: [&str; 10] = [
    "kernels_matmul",
    "kernels_elementwise",
    "kernels_attention",
    "kernels_cross_entropy",
    "kernels_optimizer",
    "kernels_ggml",
    "lora_dropout",
    "lora_nf4_module",
    "executor",
    "gpu_runtime",
];

pub fn main(args: &[String]) -> Result<(), String> {
    let mut seeds = 200usize;
    let mut paths: Vec<&str> = vec!["software", "portable"];
    let mut tests: Vec<String> = Vec::new();
    let mut only: Vec<String> = Vec::new();
    let mut skip: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("stress: {flag} needs a value"))
        };
        match arg.as_str() {
            "--seeds" => {
                let v = value("--seeds")?;
                seeds =
                    v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("stress: --seeds {v}: expected a count of 1 or more")
                    })?;
            }
            "--path" => {
                paths = match value("--path")?.as_str() {
                    "software" => vec!["software"],
                    "portable" => vec!["portable"],
                    "both" => vec!["software", "portable"],
                    other => {
                        return Err(format!(
                            "stress: --path {other}: expected software, portable or both"
                        ))
                    }
                }
            }
            "--test" => tests.push(value("--test")?),
            "--only" => only.push(value("--only")?),
            "--skip" => skip.push(value("--skip")?),
            other => return Err(format!("stress: unknown argument {other:?}")),
        }
    }
    if tests.is_empty() {
        tests = KERNEL_TESTS.iter().map(|t| t.to_string()).collect();
    }
    install::lavapipe()?;
    let mut counts = Counts::default();
    let seeds_text = seeds.to_string();
    let mut failed = Vec::new();
    for path in &paths {
        let mut env = vec![("WEBQLORA_STRESS", seeds_text.as_str())];
        if *path == "portable" {
            env.push(("WEBQLORA_KERNELS", "portable"));
        }
        let mut args: Vec<&str> = tests.iter().flat_map(|t| ["--test", t.as_str()]).collect();
        args.push("--");
        args.extend(only.iter().map(String::as_str));
        args.extend(skip.iter().flat_map(|t| ["--skip", t.as_str()]));
        eprintln!(
            "xtask: stress: {seeds} seeds a test on the {path} path: {}",
            tests.join(", ")
        );
        if let Err(e) = cargo_test_with(&env, &args, &mut counts) {
            eprintln!("xtask: stress on the {path} path: {e}");
            failed.push(*path);
        }
    }
    println!(
        "summary: {} passed, {} failed, {} skipped ({seeds} seeds a test)",
        counts.passed,
        counts.failed,
        counts.ignored + counts.skipped.len() as u64
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stress failed on the {} path",
            failed.join(" and ")
        ))
    }
}
