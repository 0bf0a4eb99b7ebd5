//! `webqlora train` and `webqlora eval` end to end on the golden tiny Llama: one step equals
//! PyTorch + PEFT's AdamW step, the loss falls, a resumed run equals an uninterrupted one,
//! gradient accumulation equals a larger batch, eval's loss equals PEFT's, and bad input is
//! named.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{fails, ok, path, pattern_jsonl, webqlora};
use common::{golden, golden_batch_jsonl, temp_dir, Golden};
use webqlora::lora::peft::Adapter;

fn base_f32() -> String {
    golden("tiny-llama/base-f32").display().to_string()
}

fn max_abs_diff(a: &Adapter, b: &Adapter) -> f32 {
    assert_eq!(a.tensors.len(), b.tensors.len());
    a.tensors
        .iter()
        .map(|(name, (_, va))| {
            let vb = &b.tensors[name].1;
            va.iter()
                .zip(vb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        })
        .fold(0.0, f32::max)
}

#[test]
fn one_step_equals_pytorch_adamw() {
    let dir = temp_dir("train-golden");
    let out = common::cli::one_golden_step(&golden("tiny-llama/adapter"), &dir);
    let trained = Adapter::load(&out).unwrap();
    let expected = Golden::open("tiny-llama/expected.safetensors");
    assert_eq!(trained.tensors.len(), 28);
    for (name, (_, values)) in &trained.tensors {
        let want = expected.f32(&format!("after_adamw_lora.{name}"));
        let diff = values
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
    // The first metrics line carries PEFT's loss for this batch.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let loss = expected.f32("loss_lora")[0];
    assert!(((first["loss"].as_f64().unwrap() as f32 - loss) / loss).abs() < 1e-4);
}

#[test]
fn training_lowers_the_loss_and_writes_its_outputs() {
    let dir = temp_dir("train-falls");
    std::fs::write(dir.join("data.jsonl"), pattern_jsonl(16, 24)).unwrap();
    let out = dir.join("out");
    let stdout = ok(webqlora(&[
        "train",
        "--model",
        &base_f32(),
        "--data",
        path(&dir.join("data.jsonl")),
        "--valid-split",
        "0.25",
        "--output",
        path(&out),
        "--rank",
        "4",
        "--lr",
        "1e-2",
        "--schedule",
        "constant",
        "--steps",
        "32",
        "--eval-every",
        "12",
        "--export",
        "gguf-lora",
        "--quiet",
    ]));
    assert!(stdout.contains("adapter: "), "{stdout}");
    assert!(stdout.contains("llama.cpp adapter: "), "{stdout}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses: Vec<f64> = lines.iter().filter_map(|l| l["loss"].as_f64()).collect();
    let vals: Vec<f64> = lines
        .iter()
        .filter_map(|l| l["val_loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 32);
    assert_eq!(vals.len(), 3, "steps 12, 24 and the end");
    let first = losses[..4].iter().sum::<f64>() / 4.0;
    let last = losses[28..].iter().sum::<f64>() / 4.0;
    assert!(last < first - 0.3, "loss {first} -> {last}");
    assert!(vals[2] < vals[0], "validation loss {vals:?}");
    for l in lines.iter().filter(|l| l["loss"].is_number()) {
        for key in ["lr", "grad_norm", "tokens_per_s", "epoch"] {
            assert!(l[key].is_number(), "{key} in {l}");
        }
    }
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(summary["planned_peak_gpu_bytes"].as_u64().unwrap() > 0);
    assert!(summary["best_val_loss"].as_f64().unwrap() <= vals[2]);
    let adapter = Adapter::load(&out).unwrap();
    assert_eq!(adapter.config.r, 4);
    assert_eq!(adapter.tensors.len(), 28);
    // --export gguf-lora: the saved adapter, as `webqlora export` writes it.
    let config = webqlora::model::ModelConfig::load(&golden("tiny-llama/base-f32")).unwrap();
    let want = webqlora::lora::gguf_lora::gguf_lora_bytes(
        &adapter,
        &config,
        webqlora::lora::gguf_lora::GgufLoraDtype::F32,
        "",
    )
    .unwrap();
    assert_eq!(std::fs::read(out.join("adapter.gguf")).unwrap(), want);
    // Nothing temporary is left behind.
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.contains(".tmp") && !name.ends_with(".old"), "{name}");
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = temp_dir("train-resume");
    std::fs::write(dir.join("data.jsonl"), pattern_jsonl(10, 20)).unwrap();
    let data = dir.join("data.jsonl");
    let run = |out: &Path, steps: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--model",
            &base_f32(),
            "--data",
            path(&data),
            "--output",
            path(out),
            "--rank",
            "4",
            "--lr",
            "5e-3",
            "--schedule",
            "constant",
            "--batch",
            "3",
            "--steps",
            steps,
            "--quiet",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if resume {
            args.push("--resume".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(webqlora(&refs));
    };
    let straight = dir.join("straight");
    run(&straight, "6", false);
    let resumed = dir.join("resumed");
    run(&resumed, "3", false);
    run(&resumed, "6", true);
    let a = Adapter::load(&straight).unwrap();
    let b = Adapter::load(&resumed).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6);
    let metrics = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6, "the resumed run appends");
    let state = std::fs::read_to_string(resumed.join("checkpoint/trainer_state.json")).unwrap();
    assert!(state.contains("\"step\": 6"), "{state}");
}

/// `--packing`: examples of several lengths packed into rows of --max-seq-len; the loss falls,
/// a resumed packed run equals an uninterrupted one, and resuming it without --packing is
/// refused in words.
#[test]
fn packed_training_trains_resumes_exactly_and_refuses_a_mismatch() {
    let dir = temp_dir("train-packing");
    let data: String = (0..14)
        .map(|i| {
            let ids: Vec<String> = (0..4 + (i * 5) % 19)
                .map(|k| ((i * 11 + k * 7) % 256).to_string())
                .collect();
            format!("{{\"input_ids\": [{}]}}\n", ids.join(", "))
        })
        .collect();
    std::fs::write(dir.join("data.jsonl"), data).unwrap();
    let data = dir.join("data.jsonl");
    let model = base_f32();
    let run = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            &model,
            "--data",
            path(&data),
            "--output",
            path(out),
            "--rank",
            "4",
            "--lr",
            "1e-2",
            "--schedule",
            "constant",
            "--batch",
            "2",
            "--max-seq-len",
            "32",
            "--steps",
            steps,
            "--quiet",
        ];
        args.extend(extra);
        webqlora(&args)
    };
    let straight = dir.join("straight");
    let out = ok(run(&straight, "8", &["--packing"]));
    assert!(out.contains("14 training examples packed into"), "{out}");
    let resumed = dir.join("resumed");
    ok(run(&resumed, "3", &["--packing"]));
    let err = fails(run(&resumed, "8", &["--resume"]));
    assert!(
        err.contains("with packing") && err.contains("--packing"),
        "{err}"
    );
    ok(run(&resumed, "8", &["--packing", "--resume"]));
    let a = Adapter::load(&straight).unwrap();
    let b = Adapter::load(&resumed).unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-6);
    let losses: Vec<f64> = std::fs::read_to_string(straight.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < losses[0], "{losses:?}");
}

#[test]
fn accumulated_micro_batches_equal_one_larger_batch() {
    let dir = temp_dir("train-accumulate");
    std::fs::write(dir.join("data.jsonl"), pattern_jsonl(8, 20)).unwrap();
    let run = |out: &str, batch: &str, accumulation: &str| {
        ok(webqlora(&[
            "train",
            "--model",
            &base_f32(),
            "--base",
            "f32",
            "--adapter",
            path(&golden("tiny-llama/adapter")),
            "--data",
            path(&dir.join("data.jsonl")),
            "--output",
            path(&dir.join(out)),
            "--batch",
            batch,
            "--accumulation",
            accumulation,
            "--steps",
            "2",
            "--lr",
            "1e-3",
            "--quiet",
        ]));
        Adapter::load(&dir.join(out)).unwrap()
    };
    let whole = run("whole", "4", "1");
    let accumulated = run("accumulated", "2", "2");
    let moved = max_abs_diff(
        &whole,
        &Adapter::load(&golden("tiny-llama/adapter")).unwrap(),
    );
    assert!(moved > 1e-3, "the adapter moved ({moved})");
    assert!(max_abs_diff(&whole, &accumulated) < 2e-5);
}

#[test]
fn eval_gives_peft_loss_and_json() {
    let dir = temp_dir("eval-golden");
    std::fs::write(dir.join("batch.jsonl"), golden_batch_jsonl()).unwrap();
    let stdout = ok(webqlora(&[
        "eval",
        "--model",
        &base_f32(),
        "--base",
        "f32",
        "--adapter",
        path(&golden("tiny-llama/adapter")),
        "--data",
        path(&dir.join("batch.jsonl")),
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let loss = expected.f32("loss_lora")[0] as f64;
    assert!(
        ((j["loss"].as_f64().unwrap() - loss) / loss).abs() < 1e-4,
        "{j}"
    );
    assert!((j["perplexity"].as_f64().unwrap() - loss.exp()).abs() / loss.exp() < 1e-3);
    assert!(j["accuracy"].is_null() && j["acc_norm"].is_null());
    assert_eq!(j["n"], golden_batch_jsonl().lines().count());
}

#[test]
fn bad_input_is_named() {
    let dir = temp_dir("train-bad");
    let good = r#"{"input_ids": [1, 2, 3]}"#;
    let cases = [
        (
            format!("{good}\n{good}\n{{\"input_ids\": [1, -2]}}\n"),
            "bad.jsonl:3:",
        ),
        (format!("{good}\nnot json\n"), "bad.jsonl:2: not JSON"),
        (
            format!("{good}\n{{\"input_ids\": [1, 999]}}\n"),
            "outside the model's vocabulary",
        ),
        ("\n\n".to_string(), "bad.jsonl: the dataset is empty"),
        (
            format!("{{\"input_ids\": {:?}}}\n", vec![1; 40]),
            "longer than the maximum sequence length 32",
        ),
        ("{\"text\": \"hello\"}\n".to_string(), "tokenizer.json"),
        (
            "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": \"C\"}\n".to_string(),
            "'answer' \"C\"",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.join("bad.jsonl"), &text).unwrap();
        let err = fails(webqlora(&[
            "train",
            "--model",
            &base_f32(),
            "--data",
            path(&dir.join("bad.jsonl")),
            "--output",
            path(&dir.join("out")),
            "--max-seq-len",
            "32",
            "--quiet",
        ]));
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(!dir.join("out").exists(), "nothing written for bad data");
    }
    let err = fails(webqlora(&[
        "train",
        "--model",
        "/nonexistent/model",
        "--data",
        "x.jsonl",
    ]));
    assert!(err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn lora_dropout_trains_and_is_saved_in_the_adapter_config() {
    let dir = temp_dir("train-dropout");
    std::fs::write(dir.join("data.jsonl"), pattern_jsonl(16, 24)).unwrap();
    let out = dir.join("out");
    let (model, data) = (base_f32(), dir.join("data.jsonl"));
    let run_with = |seed: &str, kernels: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            &model,
            "--data",
            path(&data),
            "--output",
            path(&out),
            // Each run replaces the one before.
            "--force",
            "--rank",
            "4",
            "--lr",
            "1e-2",
            "--schedule",
            "constant",
            "--steps",
            "32",
            "--lora-dropout",
            "0.1",
            "--seed",
            seed,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        ok(std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
            .env("WEBQLORA_KERNELS", kernels)
            .args(&args)
            .output()
            .unwrap());
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect();
        (losses, Adapter::load(&out).unwrap())
    };
    let run = |seed: &str| run_with(seed, "software", &[]);
    let (losses, adapter) = run("1");
    let first = losses[..4].iter().sum::<f64>() / 4.0;
    let last = losses[28..].iter().sum::<f64>() / 4.0;
    assert!(last < first - 0.2, "loss {first} -> {last}");
    assert_eq!(adapter.config.dropout, 0.1);
    // The same seed gives the same run (masks included); another seed another run.
    let (_, again) = run("1");
    assert!(max_abs_diff(&adapter, &again) == 0.0);
    let (_, other) = run("2");
    assert!(max_abs_diff(&adapter, &other) > 0.0);
    // Without checkpointing the same run: the recomputed layers draw the same masks (and on
    // the portable path reuse the forward's x·Aᵀ of the dropped inputs). A wrong mask or
    // product moves the adapter by ~lr = 1e-2. On the portable path the forward's input norms
    // come from the fused add + norm and the recomputation's from the plain norm, whose sums
    // run in another order: the last bits of the normed inputs differ, 8e-6 after 32 steps.
    for (kernels, tolerance) in [("software", 1e-6), ("portable", 1e-4)] {
        let (_, checkpointed) = run_with("1", kernels, &[]);
        let (_, whole) = run_with("1", kernels, &["--no-checkpointing"]);
        let d = max_abs_diff(&checkpointed, &whole);
        assert!(d <= tolerance, "{kernels}: checkpointed and not: {d}");
    }
}

#[test]
fn ctrl_c_saves_the_adapter_and_a_resumable_checkpoint() {
    let dir = temp_dir("train-ctrlc");
    std::fs::write(dir.join("data.jsonl"), pattern_jsonl(8, 16)).unwrap();
    let out = dir.join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["train", "--model", &base_f32(), "--data"])
        .arg(dir.join("data.jsonl"))
        .arg("--output")
        .arg(&out)
        .args(["--rank", "4", "--steps", "1000000", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is training, then interrupt it as Ctrl-C would.
    let metrics = out.join("metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 3 {
        assert!(start.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("stopped at step"), "{stdout}");
    let steps = std::fs::read_to_string(&metrics).unwrap().lines().count();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["step"].as_u64().unwrap() as usize,
        steps,
        "saved after the last step"
    );
    assert!(steps < 1_000_000);
    Adapter::load(&out).unwrap();
}

/// Without a terminal (here: pipes), `train` prints a plain progress line at the first step,
/// every --log-every steps or ~10 s, and at the last, with the count, the loss, the rate and
/// an ETA; `--quiet` prints none; `--log-format json` makes stdout JSON objects only: one a
/// step (metrics.jsonl's lines) and the summary last.
#[test]
fn progress_is_printed_without_a_terminal() {
    let dir = temp_dir("train-progress");
    let data = dir.join("data.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 12)).unwrap();
    let train = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["train", "--model"];
        let model = base_f32();
        args.extend([model.as_str(), "--base", "f32", "--data", path(&data)]);
        args.extend(["--output", path(&out), "--steps", "4", "--batch", "2"]);
        args.extend(extra);
        ok(webqlora(&args))
    };
    let text = train("text", &["--log-every", "2"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(
        lines.len(),
        3,
        "steps 1, 2 and 4 (2: --log-every; 4: the last):\n{text}"
    );
    assert!(lines[0].starts_with("step 1/4 (25%): loss "), "{text}");
    assert!(lines[1].starts_with("step 2/4 (50%): loss "), "{text}");
    assert!(lines[2].starts_with("step 4/4 (100%): loss "), "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("tok/s") && l.contains("ETA ")),
        "{text}"
    );

    let quiet = train("quiet", &["--quiet"]);
    assert!(!quiet.lines().any(|l| l.starts_with("step ")), "{quiet}");
    assert!(quiet.contains("done: 4 steps"), "{quiet}");

    let json = train("json", &["--log-format", "json"]);
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let steps: Vec<_> = objects.iter().filter(|o| o["loss"].is_number()).collect();
    assert_eq!(steps.len(), 4, "{json}");
    assert_eq!(steps[3]["step"], 4);
    let summary = objects.last().unwrap();
    assert_eq!(summary["steps"], 4, "{json}");
    let metrics = std::fs::read_to_string(dir.join("json/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), objects.len() - 1);
}
