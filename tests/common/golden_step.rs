//! One `webqlora dump-step` on the golden tiny Llama + PEFT adapter against PyTorch + PEFT:
//! logits and loss within 1e-4 relative, gradients within 1e-3 relative per tensor, the
//! adapter after one AdamW step within 1e-5 absolute (golden/README.md).

use std::process::Command;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webqlora::model::safetensors_files::SafetensorsFiles;

use super::{golden, golden_json, rel_err, temp_dir, Golden};

pub fn write_batch(path: &std::path::Path, names: &[&str]) {
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

/// `webqlora dump-step` on golden `model` with the golden adapter, then `extra`.
pub fn dump_step(
    model: &str,
    batch: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .arg("dump-step")
        .arg("--model")
        .arg(golden(model))
        .arg("--adapter")
        .arg(golden("tiny-llama/adapter"))
        .arg("--batch")
        .arg(batch)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// One dump-step on the golden batch with the golden adapter, checked against the golden
/// `<key>` tensors within golden/README.md's tolerances.
pub fn check_golden_step(model: &str, key: &str, extra: &[&str]) {
    let dir = temp_dir(&format!("dump_step_{key}_{}", model.replace('/', "_")));
    let batch = dir.join("batch.safetensors");
    let out = dir.join("step.safetensors");
    write_batch(&batch, &["input_ids", "labels"]);
    let lr = golden_json("tiny-llama/expected.json")["lr"]
        .as_f64()
        .unwrap()
        .to_string();
    let mut args = vec!["--adamw-lr", &lr];
    args.extend_from_slice(extra);
    let run = dump_step(model, &batch, &out, &args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("loss "));

    let ours = SafetensorsFiles::open_files(std::slice::from_ref(&out)).unwrap();
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let get = |name: &str| ours.f32(name, &ours.raw(name).unwrap().1).unwrap();
    let e = rel_err(&get("logits"), &expected.f32(&format!("logits_{key}")));
    assert!(e < 1e-4, "{key} logits: {e}");
    assert_eq!(ours.raw("logits").unwrap().1, vec![2, 16, 256]);
    let e = rel_err(&get("loss"), &expected.f32(&format!("loss_{key}")));
    assert!(e < 1e-4, "{key} loss: {e}");
    let mut grads = 0;
    for name in ours.names().filter_map(|n| n.strip_prefix("grad.")) {
        let e = rel_err(
            &get(&format!("grad.{name}")),
            &expected.f32(&format!("grad_{key}.{name}")),
        );
        assert!(e < 1e-3, "{key} grad {name}: {e}");
        let after = get(&format!("after_adamw.{name}"));
        let want = expected.f32(&format!("after_adamw_{key}.{name}"));
        let d = after
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-5, "{key} after AdamW {name}: {d}");
        grads += 1;
    }
    assert_eq!(grads, 28);
}
