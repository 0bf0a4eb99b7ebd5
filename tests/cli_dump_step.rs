//! `webqlora dump-step` on the golden tiny Llama + PEFT adapter (f32 base) against PyTorch +
//! PEFT: logits and loss within 1e-4 relative, gradients within 1e-3 relative per tensor, the
//! adapter after one AdamW step within 1e-5 absolute (golden/README.md).

mod common;

use std::process::Command;

use common::{golden, golden_json, rel_err, temp_dir, Golden};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webqlora::model::safetensors_files::SafetensorsFiles;

fn write_batch(path: &std::path::Path, names: &[&str]) {
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| (n.to_string(), expected.shape(n), expected.raw(n).2.to_vec()))
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::I64, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn dump_step(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .arg("dump-step")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn dump_step_matches_pytorch_and_peft() {
    let dir = temp_dir("dump_step");
    let batch = dir.join("batch.safetensors");
    let out = dir.join("step.safetensors");
    write_batch(&batch, &["input_ids", "labels"]);
    let lr = golden_json("tiny-llama/expected.json")["lr"]
        .as_f64()
        .unwrap()
        .to_string();
    let model = golden("tiny-llama/base-f32");
    let adapter = golden("tiny-llama/adapter");
    let run = dump_step(&[
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--batch",
        batch.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--base",
        "f32",
        "--adamw-lr",
        &lr,
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("loss "));

    let ours = SafetensorsFiles::open_files(std::slice::from_ref(&out)).unwrap();
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let get = |name: &str| ours.f32(name, &ours.raw(name).unwrap().1).unwrap();
    let e = rel_err(&get("logits"), &expected.f32("logits_lora"));
    assert!(e < 1e-4, "logits: {e}");
    assert_eq!(ours.raw("logits").unwrap().1, vec![2, 16, 256]);
    let e = rel_err(&get("loss"), &expected.f32("loss_lora"));
    assert!(e < 1e-4, "loss: {e}");
    let mut grads = 0;
    for name in ours.names().filter_map(|n| n.strip_prefix("grad.")) {
        let e = rel_err(
            &get(&format!("grad.{name}")),
            &expected.f32(&format!("grad_lora.{name}")),
        );
        assert!(e < 1e-3, "grad {name}: {e}");
        let after = get(&format!("after_adamw.{name}"));
        let want = expected.f32(&format!("after_adamw_lora.{name}"));
        let d = after
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-5, "after AdamW {name}: {d}");
        grads += 1;
    }
    assert_eq!(grads, 28);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_batch_is_named_and_nothing_is_written() {
    let dir = temp_dir("dump_step_bad");
    let batch = dir.join("batch.safetensors");
    let out = dir.join("step.safetensors");
    write_batch(&batch, &["input_ids"]);
    let model = golden("tiny-llama/base-bnb-nf4");
    let adapter = golden("tiny-llama/adapter");
    let run = dump_step(&[
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--batch",
        batch.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("tensor 'labels' not found in") && err.contains("batch.safetensors"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).unwrap();
}
