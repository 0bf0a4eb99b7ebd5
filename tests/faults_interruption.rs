//! Interruption and disk: a diverged run never overwrites the last good save; a crash between
//! a save's renames still resumes; a resumed run's metrics do not repeat steps; a full disk
//! leaves the adapter and its checkpoint a matching pair; `merge` never deletes or hides what
//! it does not own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cli::{fails, listing, ok, path, pattern_jsonl, tiny_llama, webqlora};
use common::{golden, temp_dir};
use webqlora::lora::peft::Adapter;

fn train_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let model = tiny_llama();
    let mut args: Vec<String> = [
        "train",
        "--model",
        path(&model),
        "--base",
        "f32",
        "--data",
        path(data),
        "--output",
        path(out),
        "--batch",
        "2",
        "--schedule",
        "constant",
        "--save-every",
        "1",
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = train_args(data, out, extra);
    webqlora(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The saved pair: (top-level adapter bytes, checkpoint adapter bytes, checkpoint step).
fn saved(out: &Path) -> (Vec<u8>, Vec<u8>, u64) {
    let top = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let ck = std::fs::read(out.join("checkpoint/adapter_model.safetensors")).unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint/trainer_state.json")).unwrap(),
    )
    .unwrap();
    (top, ck, state["step"].as_u64().unwrap())
}

fn all_finite(dir: &Path) {
    let adapter = Adapter::load(dir).unwrap();
    for (name, (_, v)) in &adapter.tensors {
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{name} in {}",
            dir.display()
        );
    }
}

fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

#[test]
fn a_diverging_run_never_overwrites_the_last_good_save() {
    let dir = temp_dir("diverge");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 12)).unwrap();

    // From scratch, as the issue tried it: nothing non-finite is ever written.
    let out = dir.join("fresh");
    let err = fails(train(&data, &out, &["--lr", "1e19", "--steps", "6"]));
    assert!(err.contains("diverged"), "{err}");
    assert!(
        !err.contains("the adapter before this step is saved"),
        "{err}"
    );
    if out.join("adapter_model.safetensors").exists() {
        all_finite(&out);
        all_finite(&out.join("checkpoint"));
        let (top, ck, step) = saved(&out);
        assert_eq!(top, ck);
        assert!(err.contains(&format!("of step {step}")), "{err}");
    } else {
        assert!(err.contains("nothing was saved"), "{err}");
    }

    // A good run, then a diverging continuation: the good pair stays (or a later finite one).
    let out = dir.join("resumed");
    ok(train(&data, &out, &["--steps", "2"]));
    let good = saved(&out);
    let err = fails(train(
        &data,
        &out,
        &["--resume", "--steps", "12", "--lr", "1e30"],
    ));
    assert!(err.contains("diverged"), "{err}");
    all_finite(&out);
    all_finite(&out.join("checkpoint"));
    let after = saved(&out);
    assert_eq!(after.0, after.1, "adapter and checkpoint differ");
    assert!(err.contains(&format!("of step {}", after.2)), "{err}");
    assert!(after.2 >= good.2);
}

#[test]
fn a_crash_between_the_checkpoint_renames_still_resumes_without_repeating_steps() {
    let dir = temp_dir("crash");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 12)).unwrap();
    let straight = dir.join("straight");
    ok(train(&data, &straight, &["--steps", "4"]));

    let out = dir.join("out");
    ok(train(&data, &out, &["--steps", "2"]));
    // The interrupted run had logged a step after its last checkpoint, then crashed between
    // the renames of the next save: only `checkpoint.old` is left.
    let mut metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    metrics.push_str("{\"step\": 3, \"loss\": 9.9}\n");
    std::fs::write(out.join("metrics.jsonl"), metrics).unwrap();
    std::fs::rename(out.join("checkpoint"), out.join("checkpoint.old")).unwrap();

    ok(train(&data, &out, &["--steps", "4", "--resume"]));
    assert_eq!(metric_steps(&out), [1, 2, 3, 4]);
    assert!(!out.join("checkpoint.old").exists());
    assert_eq!(saved(&out).2, 4);
    // The resumed run equals the uninterrupted one.
    let (a, b) = (
        Adapter::load(&out).unwrap(),
        Adapter::load(&straight).unwrap(),
    );
    for (name, (_, va)) in &a.tensors {
        let d = va
            .iter()
            .zip(&b.tensors[name].1)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-6, "{name}: {d}");
    }
}

/// `webqlora` under a file-size limit of `kib` KiB: webqlora ignores SIGXFSZ itself, so a
/// write past the limit fails with EFBIG as a full disk fails a write (never a silent kill).
fn with_file_limit(kib: u64, args: &[String]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_webqlora"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_full_disk_keeps_the_adapter_and_checkpoint_a_matching_pair() {
    let dir = temp_dir("disk-full");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 12)).unwrap();
    let out = dir.join("out");
    ok(train(&data, &out, &["--steps", "2"]));
    let before = saved(&out);
    let adapter_bytes = before.0.len() as u64;
    let moments_bytes = std::fs::metadata(out.join("checkpoint/optimizer.safetensors"))
        .unwrap()
        .len();
    // Room for the adapter's file but not the moments'.
    assert!(moments_bytes > adapter_bytes + 2048);
    let kib = adapter_bytes / 1024 + 1;
    let args = train_args(&data, &out, &["--steps", "4", "--resume"]);
    let err = fails(with_file_limit(kib, &args));
    assert!(err.contains("optimizer.safetensors"), "{err}");
    assert!(err.contains("of step 2"), "{err}");
    assert!(saved(&out) == before, "the step-2 pair changed");
    let left: Vec<String> = listing(&out)
        .into_iter()
        .filter(|f| f.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    // And it resumes from there.
    ok(train(&data, &out, &["--steps", "4", "--resume"]));
    assert_eq!(metric_steps(&out), [1, 2, 3, 4]);
}

fn merge(out: &Path, cwd: Option<&Path>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webqlora"));
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    cmd.args(["merge", "--model"])
        .arg(tiny_llama())
        .arg("--adapter")
        .arg(golden("tiny-llama/adapter"))
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn merge_never_deletes_or_hides_what_it_does_not_own() {
    let dir = temp_dir("merge-output");
    let written = ["config.json", "generation_config.json", "model.safetensors"];

    // A folder with the user's files: refused, untouched, nothing beside it.
    let mine = dir.join("mine");
    std::fs::create_dir_all(mine.join("sub")).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    std::fs::write(mine.join("sub/data.bin"), "and me").unwrap();
    let before = listing(&dir);
    let err = fails(merge(&mine, None, &[]));
    assert!(
        err.contains("notes.txt") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(listing(&dir), before);

    // With --force: the merged files go in, the user's stay.
    ok(merge(&mine, None, &["--force"]));
    let mut want: Vec<String> = ["notes.txt", "sub", "sub/data.bin"]
        .iter()
        .chain(&written)
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(listing(&mine), want);
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );

    // An earlier merge's folder is replaced without --force.
    let merged = dir.join("merged");
    ok(merge(&merged, None, &[]));
    let first = std::fs::metadata(merged.join("model.safetensors"))
        .unwrap()
        .len();
    ok(merge(&merged, None, &["--dtype", "f32"]));
    assert!(
        std::fs::metadata(merged.join("model.safetensors"))
            .unwrap()
            .len()
            > first
    );
    assert_eq!(listing(&merged), written);

    // An existing file: refused, kept as it was, no `.old` beside it.
    let file = dir.join("file.safetensors");
    std::fs::write(&file, "user data").unwrap();
    let before = listing(&dir);
    let err = fails(merge(&file, None, &[]));
    assert!(err.contains("not a folder"), "{err}");
    assert_eq!(listing(&dir), before);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "user data");

    // `--output .` in a folder of the user's: refused, no hidden folder left anywhere.
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("train.jsonl"), "{}").unwrap();
    let before = listing(&dir);
    fails(merge(Path::new("."), Some(&cwd), &[]));
    assert_eq!(listing(&dir), before);
    // In an empty folder: written there, nothing hidden left.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    ok(merge(Path::new("."), Some(&empty), &[]));
    assert_eq!(listing(&empty), written);
    let hidden: Vec<PathBuf> = std::fs::read_dir(&*dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // A merge that fails (an adapter for another model) leaves the earlier output whole.
    let mut bad = Adapter::load(&golden("tiny-llama/adapter")).unwrap();
    for (shape, values) in bad.tensors.values_mut() {
        if shape[0] == 64 && shape[1] != 64 {
            shape[0] = 32;
            values.truncate(shape[0] * shape[1]);
        }
    }
    bad.save(&dir.join("bad-adapter")).unwrap();
    let before = listing(&dir);
    let sizes = std::fs::read(merged.join("model.safetensors")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["merge", "--model", path(&tiny_llama()), "--adapter"])
        .arg(dir.join("bad-adapter"))
        .arg("--output")
        .arg(&merged)
        .output()
        .unwrap();
    fails(run);
    assert_eq!(listing(&dir), before);
    assert_eq!(
        std::fs::read(merged.join("model.safetensors")).unwrap(),
        sizes
    );
}

/// `--resume` takes the checkpoint's settings: one given that differs is refused, each
/// difference named; a damaged trainer_state.json or optimizer state is refused naming the
/// key or tensor, never a run restarted at step 1 or moments restarted from zero. Nothing in
/// the folder changes.
#[test]
fn resume_refuses_other_settings_and_a_damaged_checkpoint() {
    let dir = temp_dir("resume-settings");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 12)).unwrap();
    let out = dir.join("out");
    ok(train(&data, &out, &["--steps", "2"]));
    let before = saved(&out);
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let unchanged = |what: &str| {
        assert!(saved(&out) == before, "{what}: the saved pair changed");
        assert_eq!(
            std::fs::read(out.join("metrics.jsonl")).unwrap(),
            metrics,
            "{what}: metrics.jsonl changed"
        );
    };

    let adapter = golden("tiny-llama/adapter");
    let err = fails(train(
        &data,
        &out,
        &[
            "--resume",
            "--steps",
            "4",
            "--rank",
            "8",
            "--accumulation",
            "2",
            "--target-modules",
            "q_proj",
            "--seed",
            "9",
            "--adapter",
            path(&adapter),
        ],
    ));
    for named in [
        "--rank 8",
        "--accumulation 2",
        "--target-modules q_proj",
        "--seed 9",
        "--adapter",
    ] {
        assert!(err.contains(named), "{named}: {err}");
    }
    unchanged("other settings");
    // The checkpoint's own settings given again are fine (checked below by the resume).

    let state_path = out.join("checkpoint/trainer_state.json");
    let state_text = std::fs::read_to_string(&state_path).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state_text).unwrap();
    let mut damaged: Vec<(serde_json::Value, &str)> = Vec::new();
    for (key, value, named) in [
        ("step", serde_json::json!("2"), "'step'"),
        ("step", serde_json::json!(u64::MAX), "'step'"),
        ("step", serde_json::json!(0), "'step'"),
        ("batch", serde_json::json!(-1), "'batch'"),
        ("seed", serde_json::json!(null), "'seed'"),
        ("surprise", serde_json::json!(1), "surprise"),
    ] {
        let mut s = state.clone();
        s[key] = value;
        damaged.push((s, named));
    }
    let mut no_step = state.clone();
    no_step.as_object_mut().unwrap().remove("step");
    damaged.push((no_step, "step"));
    for (s, named) in damaged {
        std::fs::write(&state_path, s.to_string()).unwrap();
        let err = fails(train(&data, &out, &["--resume", "--steps", "4"]));
        assert!(
            err.contains(named) && err.contains("trainer_state.json"),
            "{s}: {err}"
        );
    }
    std::fs::write(&state_path, &state_text).unwrap();
    unchanged("a damaged trainer_state.json");

    // Moments missing for one tensor.
    let moments_path = out.join("checkpoint/optimizer.safetensors");
    let moments = std::fs::read(&moments_path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&moments).unwrap();
    let mut names = file.names();
    names.sort();
    let dropped = names[0].to_string();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = names[1..]
        .iter()
        .map(|n| (n.to_string(), file.tensor(n).unwrap()))
        .collect();
    safetensors::serialize_to_file(kept, None, &moments_path).unwrap();
    let err = fails(train(&data, &out, &["--resume", "--steps", "4"]));
    assert!(err.contains(&dropped), "{err}");
    std::fs::write(&moments_path, &moments).unwrap();
    assert!(saved(&out) == before);

    // Whole again, with its own settings repeated: it resumes.
    ok(train(
        &data,
        &out,
        &["--resume", "--steps", "4", "--seed", "42"],
    ));
    assert_eq!(metric_steps(&out), [1, 2, 3, 4]);
}

/// A second Ctrl-C while the first one's save runs stops at once and says what is on disk:
/// the last whole adapter and checkpoint pair (saves are renamed into place as a pair).
#[test]
fn a_second_ctrl_c_says_what_was_saved() {
    let dir = temp_dir("ctrl-c-twice");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 12)).unwrap();
    let out = dir.join("out");
    let args = train_args(&data, &out, &["--steps", "1000000"]);
    let child = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let logged =
        || std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |m| m.lines().count());
    while logged() < 3 {
        assert!(start.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for _ in 0..2 {
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted again"), "{err}");
    // What it says is on disk is: a whole pair of the step it names.
    let (_, _, step) = saved(&out);
    assert!(
        err.contains(&format!("the adapter and checkpoint of step {step} in")),
        "{err}"
    );
    all_finite(&out);
    Adapter::load(&out.join("checkpoint")).unwrap();
}
