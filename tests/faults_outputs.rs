//! Files the user owns are never overwritten or deleted unasked, and never at all when they
//! are an input: `--force` never writes over the model, the adapter or the data (by any
//! spelling of the path, a symbolic link or a hard link); a folder holding a model no merge
//! wrote, or a finished training run, is not taken over without `--force` (or `--resume`);
//! a killed run's temporary files are removed by the next run that writes there; temporary
//! names never make a legal 255-byte name fail.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cli::{fails, listing, ok, path, pattern_jsonl, tiny_llama, tiny_llama_with_config};
use common::{golden, temp_dir};

fn webqlora<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(args)
        .output()
        .unwrap()
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir)
        .into_iter()
        .filter(|f| dir.join(f).is_file())
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

/// A copy of the golden adapter in `dir`.
fn adapter_copy(dir: &Path) -> PathBuf {
    let src = golden("tiny-llama/adapter");
    std::fs::create_dir_all(dir).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir.to_path_buf()
}

/// The id of a process that has exited (what a killed run leaves in its temporary names).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn merge(model: &Path, adapter: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "merge".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--adapter".as_ref(),
        adapter.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    webqlora(args)
}

#[test]
fn merge_never_writes_over_its_inputs_or_a_model_it_did_not_write() {
    let dir = temp_dir("outputs-merge");
    let model = tiny_llama_with_config(&dir.join("model"), |_| {});
    let adapter = adapter_copy(&dir.join("adapter"));
    let before = contents(&dir);

    // The model's own folder, by its path and by another spelling, with and without --force.
    let respelled = dir.join("adapter/../model");
    for out in [&model, &respelled] {
        for extra in [&[][..], &["--force"][..]] {
            let err = fails(merge(&model, &adapter, out, extra));
            assert!(err.contains("writes over --model"), "{err}");
        }
    }
    // Into the adapter's folder.
    let err = fails(merge(&model, &adapter, &adapter, &["--force"]));
    assert!(err.contains("--adapter"), "{err}");
    assert_eq!(contents(&dir), before);

    // Another model's folder (only model-file names in it, but no merge wrote them): refused
    // without --force, untouched; replaced when asked.
    let other = tiny_llama_with_config(&dir.join("other"), |c| c["rms_norm_eps"] = 1e-5.into());
    let other_before = contents(&other);
    let err = fails(merge(&model, &adapter, &other, &[]));
    assert!(
        err.contains("no merge wrote") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(contents(&other), other_before);
    ok(merge(&model, &adapter, &other, &["--force"]));
    assert_ne!(contents(&other), other_before);
    // ... and from then on it is a merge's output, replaced by the next merge.
    ok(merge(&model, &adapter, &other, &["--dtype", "f32"]));
}

#[test]
fn export_never_writes_over_its_inputs_even_with_force() {
    let dir = temp_dir("outputs-export");
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let base = models.join("base.gguf");
    std::fs::write(&base, b"GGUF the user's base model").unwrap();
    let adapter = adapter_copy(&dir.join("adapter"));
    std::fs::hard_link(&base, dir.join("hard.gguf")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&base, dir.join("soft.gguf")).unwrap();
    let before = contents(&dir);

    let export = |model: &Path, out: &Path| {
        webqlora([
            "export".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
            "--adapter".as_ref(),
            adapter.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
            "--force".as_ref(),
        ])
    };
    for out in [
        base.clone(),
        models.join("../models/base.gguf"),
        dir.join("hard.gguf"),
        dir.join("soft.gguf"),
    ] {
        let err = fails(export(&base, &out));
        assert!(
            err.contains("writes over --model"),
            "{}: {err}",
            out.display()
        );
    }
    // A file of the adapter, the adapter's folder.
    let tiny = tiny_llama();
    for out in [adapter.join("adapter_model.safetensors"), adapter.clone()] {
        let err = fails(export(&tiny, &out));
        assert!(
            err.contains("writes over --adapter"),
            "{}: {err}",
            out.display()
        );
    }
    assert_eq!(contents(&dir), before);
}

fn train(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "train".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--base".as_ref(),
        "f32".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--batch".as_ref(),
        "2".as_ref(),
        "--quiet".as_ref(),
    ];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    webqlora(args)
}

#[test]
fn a_run_folder_is_continued_or_replaced_only_when_asked() {
    let dir = temp_dir("outputs-train");
    let model = tiny_llama_with_config(&dir.join("model"), |_| {});
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(4, 8)).unwrap();
    let run = dir.join("run");
    ok(train(&model, &data, &run, &["--steps", "1"]));
    let finished = contents(&run);
    assert!(finished
        .iter()
        .any(|(f, _)| f == "checkpoint/trainer_state.json"));

    // A fresh run into it: refused before anything is loaded, every file named, nothing cut.
    let err = fails(train(&model, &data, &run, &["--seed", "7", "--steps", "1"]));
    for word in [
        "--resume",
        "--force",
        "adapter_model.safetensors",
        "metrics.jsonl",
    ] {
        assert!(err.contains(word), "{word}: {err}");
    }
    assert_eq!(contents(&run), finished);

    // Into the model's folder, or over the data: refused even with --force.
    let model_before = contents(&model);
    let err = fails(train(&model, &data, &model, &["--force", "--steps", "1"]));
    assert!(err.contains("--model"), "{err}");
    assert_eq!(contents(&model), model_before);
    let err = fails(train(&model, &data, &data, &["--force", "--steps", "1"]));
    assert!(err.contains("--data"), "{err}");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), pattern_jsonl(4, 8));

    // --force replaces the run; data kept inside a run folder is fine.
    let kept = run.join("my-data.jsonl");
    std::fs::write(&kept, pattern_jsonl(4, 8)).unwrap();
    ok(train(
        &model,
        &kept,
        &run,
        &["--force", "--seed", "7", "--steps", "1"],
    ));
    assert_ne!(
        std::fs::read(run.join("adapter_model.safetensors")).unwrap(),
        finished
            .iter()
            .find(|(f, _)| f == "adapter_model.safetensors")
            .unwrap()
            .1
    );
    assert!(kept.exists());
    // A replacing run that diverges before its first save leaves none of the old run's
    // files behind (never a folder that says "nothing was saved" beside an old adapter).
    let err = fails(train(
        &model,
        &kept,
        &run,
        &["--force", "--steps", "4", "--lr", "1e30"],
    ));
    assert!(err.contains("nothing was saved"), "{err}");
    for gone in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "checkpoint",
    ] {
        assert!(!run.join(gone).exists(), "{gone}");
    }
    assert!(kept.exists());
}

#[test]
fn a_killed_runs_temporary_files_are_removed_and_long_names_work() {
    let dir = temp_dir("outputs-temps");
    let dead = dead_pid();
    let live = std::process::id();
    let adapter = golden("tiny-llama/adapter");
    let model = tiny_llama();

    // export: `.NAME.tmp-PID` of a dead process goes, a live one's stays.
    let out = dir.join("adapter.gguf");
    let stale = dir.join(format!(".adapter.gguf.tmp-{dead}"));
    let running = dir.join(format!(".adapter.gguf.tmp-{live}"));
    std::fs::write(&stale, vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&running, b"another run's").unwrap();
    ok(webqlora([
        "export".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--adapter".as_ref(),
        adapter.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]));
    assert!(out.exists() && !stale.exists() && running.exists());
    std::fs::remove_file(&running).unwrap();

    // merge: the `.DIR.merge-PID/` folder a killed merge left.
    let merged = dir.join("merged");
    let stale = dir.join(format!(".merged.merge-{dead}"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 1 << 20]).unwrap();
    ok(merge(&model, &adapter, &merged, &[]));
    assert!(!stale.exists());
    assert_eq!(
        listing(&dir),
        [
            "adapter.gguf",
            "merged",
            "merged/config.json",
            "merged/generation_config.json",
            "merged/model.safetensors"
        ]
    );

    // Names of 251 to 255 bytes, legal on every common file system, are written.
    for len in [251, 255] {
        let name = format!("{}.gguf", "a".repeat(len - 5));
        let out = dir.join(&name);
        ok(webqlora([
            "export".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
            "--adapter".as_ref(),
            adapter.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
        ]));
        assert!(out.exists());
        let folder = dir.join("m".repeat(len));
        ok(merge(&model, &adapter, &folder, &[]));
        assert!(
            folder.join("model.safetensors").exists(),
            "{}",
            path(&folder)
        );
    }
}
