//! One `webqlora dump-step` on the golden tiny Llama + PEFT adapter against PyTorch + PEFT:
//! logits and loss within 1e-4 relative, gradients within 1e-3 relative per tensor, the
//! adapter after one AdamW step within 1e-5 absolute (golden/README.md).

use std::process::Command;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webqlora::model::safetensors_files::SafetensorsFiles;

use super::{golden, golden_json, rel_err, temp_dir, Golden, Tol};

/// The golden family folder of a model path: "tiny-qwen3/base-f32" → "tiny-qwen3".
fn family(model: &str) -> &str {
    model.split('/').next().unwrap_or(model)
}

/// The golden batch of `family` (e.g. "tiny-llama") as a dump-step batch file.
pub fn write_batch(family: &str, path: &std::path::Path, names: &[&str]) {
    let expected = Golden::open(&format!("{family}/expected.safetensors"));
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

/// `webqlora dump-step` on golden `model` with its family's golden adapter, then `extra`.
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
        .arg(golden(&format!("{}/adapter", family(model))))
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
    let family = family(model);
    write_batch(family, &batch, &["input_ids", "labels"]);
    let lr = golden_json(&format!("{family}/expected.json"))["lr"]
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
    let adapter_file = golden(&format!("{family}/adapter/adapter_model.safetensors"));
    let adapter = SafetensorsFiles::open_files(std::slice::from_ref(&adapter_file)).unwrap();
    let hyper = golden_json(&format!("{family}/expected.json"));
    let expected = Golden::open(&format!("{family}/expected.safetensors"));
    let get = |name: &str| ours.f32(name, &ours.raw(name).unwrap().1).unwrap();
    Tol::GOLDEN.check(
        format!("{key} logits"),
        &get("logits"),
        &expected.f32(&format!("logits_{key}")),
    );
    assert_eq!(
        ours.raw("logits").unwrap().1,
        expected.shape(&format!("logits_{key}"))
    );
    Tol::GOLDEN.check(
        format!("{key} loss"),
        &get("loss"),
        &expected.f32(&format!("loss_{key}")),
    );
    let mut grads = 0;
    for name in ours.names().filter_map(|n| n.strip_prefix("grad.")) {
        Tol::rel(1e-3).check(
            format!("{key} grad {name}"),
            &get(&format!("grad.{name}")),
            &expected.f32(&format!("grad_{key}.{name}")),
        );
        let after = get(&format!("after_adamw.{name}"));
        let want = expected.f32(&format!("after_adamw_{key}.{name}"));
        let ours_g = get(&format!("grad.{name}"));
        let their_g = expected.f32(&format!("grad_{key}.{name}"));
        let before = adapter.f32(name, &adapter.raw(name).unwrap().1).unwrap();
        // A first AdamW step moves each value by lr·g/(|g| + eps): where a gradient is within
        // a few times f32's rounding of its tensor's sums (below 1e-5 of the tensor's largest;
        // the rounding is ~1e-7 of it, the order of the sums decides it, and near eps the
        // step turns a 1e-8 difference into 1e-5), the step follows the rounding in either
        // implementation. There the step is checked against torch's AdamW formula on our own
        // gradient; everywhere else against PEFT's result.
        let floor = 1e-5 * their_g.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        for i in 0..after.len() {
            let reference = if their_g[i].abs() >= floor {
                want[i]
            } else {
                adamw_first_step(before[i], ours_g[i], &hyper)
            };
            let d = (after[i] - reference).abs();
            assert!(d <= 1e-5, "{key} after AdamW {name}[{i}]: {d}");
        }
        grads += 1;
    }
    let want = expected
        .names()
        .iter()
        .filter(|n| n.starts_with(&format!("grad_{key}.")))
        .count();
    assert!(want > 0);
    assert_eq!(grads, want, "{key}: every adapter gradient");
}

/// torch.optim.AdamW's first step on one value (`hyper`: the golden lr, betas, eps and
/// weight_decay), in f64.
fn adamw_first_step(w: f32, g: f32, hyper: &serde_json::Value) -> f32 {
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let (lr, eps, wd) = (f(&hyper["lr"]), f(&hyper["eps"]), f(&hyper["weight_decay"]));
    let (b1, b2) = (f(&hyper["betas"][0]), f(&hyper["betas"][1]));
    let g = g as f64;
    let (m, v) = ((1.0 - b1) * g, (1.0 - b2) * g * g);
    let (m_hat, v_hat) = (m / (1.0 - b1), v / (1.0 - b2));
    let w = w as f64 * (1.0 - lr * wd);
    (w - lr * m_hat / (v_hat.sqrt() + eps)) as f32
}

/// The base and adapted logits of golden `family` (`tiny-qwen3`, …) on its f32 base against
/// transformers and PEFT (1e-4 relative), the adapter making a difference.
pub fn check_golden_logits(family: &str) {
    use webqlora::lora::peft::Adapter;
    use webqlora::model::transformer::BaseFormat;
    let expected = Golden::open(&format!("{family}/expected.safetensors"));
    let dir = golden(&format!("{family}/base-f32"));
    let base = super::family_logits(family, &dir, BaseFormat::F32, None);
    Tol::GOLDEN.check(
        format!("{family} base logits"),
        &base,
        &expected.f32("logits_base"),
    );
    let adapter = Adapter::load(&golden(&format!("{family}/adapter"))).unwrap();
    let lora = super::family_logits(family, &dir, BaseFormat::F32, Some(&adapter));
    Tol::GOLDEN.check(
        format!("{family} adapted logits"),
        &lora,
        &expected.f32("logits_lora"),
    );
    assert!(
        rel_err(&base, &lora) > 1e-3,
        "{family}: the adapter changes the logits"
    );
}

/// The golden QLoRA step of `family` reproducing bitsandbytes' CPU path, from its
/// bitsandbytes checkpoint and from quantizing its f32 base on load.
pub fn check_golden_qlora_steps(family: &str) {
    let bnb_cpu = ["--base", "nf4", "--bnb-cpu-bf16", "--bnb-cpu-repacked"];
    check_golden_step(&format!("{family}/base-bnb-nf4"), "qlora", &bnb_cpu);
    check_golden_step(&format!("{family}/base-f32"), "qlora", &bnb_cpu);
}
