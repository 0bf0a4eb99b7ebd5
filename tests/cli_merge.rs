//! `webqlora merge`: the golden tiny Llama + PEFT adapter merged into a plain folder gives
//! PEFT's logits without an adapter (f32: 1e-4 relative; f16: the rounding of f16 weights);
//! the folder is a complete Hugging Face checkpoint; a mismatched adapter is refused.

mod common;

use std::process::Command;

use common::{golden, rel_err, temp_dir, tiny_llama_logits, Golden, Tol};
use webqlora::model::transformer::BaseFormat;

fn merge(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["merge", "--model"])
        .arg(golden("tiny-llama/base-f32"))
        .arg("--adapter")
        .arg(golden("tiny-llama/adapter"))
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn merged_model_gives_peft_logits() {
    let dir = temp_dir("merge");
    let want = Golden::open("tiny-llama/expected.safetensors").f32("logits_lora");
    for (dtype, tolerance) in [("f32", 1e-4), ("f16", 5e-3)] {
        let out = dir.join(dtype);
        let run = merge(&out, &["--dtype", dtype]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        // No terminal: progress as plain lines on stderr, the last at 100%; none with --quiet.
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            stderr.contains("merge: tensor") && stderr.contains("(100%)"),
            "{stderr}"
        );
        let got = tiny_llama_logits(&out, BaseFormat::F32, None);
        Tol::rel(tolerance).check(dtype, &got, &want);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            config["torch_dtype"],
            if dtype == "f32" { "float32" } else { "float16" }
        );
        assert!(config.get("quantization_config").is_none());
        assert!(out.join("generation_config.json").exists());
    }
    let quiet = merge(&dir.join("quiet"), &["--quiet"]);
    assert!(quiet.status.success() && !String::from_utf8_lossy(&quiet.stderr).contains("merge:"));
    // The base alone is far from the adapted logits: the merge did something.
    let base = Golden::open("tiny-llama/expected.safetensors").f32("logits_base");
    assert!(rel_err(&base, &want) > 1e-3);
}

#[test]
fn mismatched_adapter_is_refused_and_nothing_written() {
    let dir = temp_dir("merge-bad");
    // An adapter whose A is the wrong shape for q_proj.
    let mut adapter = webqlora::lora::peft::Adapter::load(&golden("tiny-llama/adapter")).unwrap();
    let name = adapter
        .tensors
        .keys()
        .find(|n| n.contains("q_proj.lora_A"))
        .unwrap()
        .clone();
    let (shape, values) = adapter.tensors.get_mut(&name).unwrap();
    shape[1] -= 1;
    values.truncate(shape[0] * shape[1]);
    adapter.save(&dir.join("bad-adapter")).unwrap();
    let out = dir.join("merged");
    let run = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["merge", "--model"])
        .arg(golden("tiny-llama/base-f32"))
        .arg("--adapter")
        .arg(dir.join("bad-adapter"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("q_proj.lora_A"), "{err}");
    assert!(!out.exists() && !dir.join("merged.tmp").exists());
}
