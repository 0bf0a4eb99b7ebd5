//! `webqlora dump-step` on the golden tiny Llama + PEFT adapter against PyTorch + PEFT (f32
//! base) and PyTorch + PEFT + bitsandbytes (NF4 base): logits and loss within 1e-4 relative,
//! gradients within 1e-3 relative per tensor, the adapter after one AdamW step within 1e-5
//! absolute (golden/README.md).

mod common;

use std::process::Command;

use common::golden_step::{check_golden_step, dump_step, write_batch};
use common::{golden, rel_err, temp_dir, Golden, Tol};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webqlora::model::safetensors_files::SafetensorsFiles;

#[test]
fn dump_step_matches_pytorch_and_peft() {
    check_golden_step("tiny-llama/base-f32", "lora", &["--base", "f32"]);
}

/// The QLoRA step of the golden data ran on bitsandbytes' CPU path with the effects that
/// `quant::bnb_cpu` describes: its NF4 model had been through an eval pass and a save (absmax
/// repacked), and layer 0's q, k and v (inputs without gradient) ran the bf16 kernel. With both
/// reproduced, the step matches from the bitsandbytes checkpoint and from quantizing the f32
/// model on load alike (our quantization equals bitsandbytes', nested codes included).
#[test]
fn qlora_step_matches_bitsandbytes_and_peft() {
    let bnb_cpu = ["--base", "nf4", "--bnb-cpu-bf16", "--bnb-cpu-repacked"];
    check_golden_step("tiny-llama/base-bnb-nf4", "qlora", &bnb_cpu);
    check_golden_step("tiny-llama/base-f32", "qlora", &bnb_cpu);
}

/// Without them the step is bitsandbytes' f32 path (its CUDA one): a QLoRA step all the same,
/// but some 3e-3 from these golden logits.
#[test]
fn the_f32_nf4_path_differs_from_the_cpu_golden_step() {
    let dir = temp_dir("dump_step_f32_nf4");
    let batch = dir.join("batch.safetensors");
    let out = dir.join("step.safetensors");
    write_batch("tiny-llama", &batch, &["input_ids", "labels"]);
    let model = "tiny-llama/base-bnb-nf4";
    let run = dump_step(model, &batch, &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ours = SafetensorsFiles::open_files(std::slice::from_ref(&out)).unwrap();
    let logits = ours.f32("logits", &ours.raw("logits").unwrap().1).unwrap();
    let want = Golden::open("tiny-llama/expected.safetensors").f32("logits_qlora");
    let e = rel_err(&logits, &want);
    assert!(
        (1e-3..1e-2).contains(&e),
        "f32 NF4 path vs the CPU golden step: {e}"
    );
    // The reproduction switches apply to an NF4 base only.
    let run = dump_step(model, &batch, &out, &["--base", "f32", "--bnb-cpu-bf16"]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("apply to an NF4 base"), "{err}");
}

#[test]
fn a_bad_batch_is_named_and_nothing_is_written() {
    let dir = temp_dir("dump_step_bad");
    let batch = dir.join("batch.safetensors");
    let out = dir.join("step.safetensors");
    write_batch("tiny-llama", &batch, &["input_ids"]);
    let run = dump_step("tiny-llama/base-bnb-nf4", &batch, &out, &[]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("tensor 'labels' not found in") && err.contains("batch.safetensors"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The texture kernels of software devices (lavapipe here) against the buffer kernels
/// (`WEBQLORA_TEXTURES=0`) on a whole step large enough to use them: 4 x 32 tokens are 128
/// rows, so the lm-head, the MLP and the q/o products run on textures, on the f32 base and on
/// the NF4 base (quantized on load) alike. Logits and loss within 1e-5 relative, every
/// gradient within 1e-4.
#[test]
fn texture_kernels_agree_with_buffer_kernels_on_a_whole_step() {
    use rand::Rng;
    common::for_each_seed("texture_step", &[], |mut rng| {
        let dir = temp_dir("dump_step_textures");
        let (batch, seq) = (4usize, 32usize);
        let ids: Vec<i64> = (0..batch * seq).map(|_| rng.random_range(0..256)).collect();
        let labels: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| if i % seq < 5 { -100 } else { id })
            .collect();
        let (ids_bytes, label_bytes): (Vec<u8>, Vec<u8>) = (
            bytemuck::cast_slice(&ids).to_vec(),
            bytemuck::cast_slice(&labels).to_vec(),
        );
        let batch_file = dir.join("batch.safetensors");
        let views = vec![
            (
                "input_ids".to_string(),
                TensorView::new(Dtype::I64, vec![batch, seq], &ids_bytes).unwrap(),
            ),
            (
                "labels".to_string(),
                TensorView::new(Dtype::I64, vec![batch, seq], &label_bytes).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, &batch_file).unwrap();
        let model = golden("tiny-llama/base-f32");
        let adapter = golden("tiny-llama/adapter");
        for base in ["f32", "nf4"] {
            let run = |textures: bool| {
                let out = dir.join(format!("{base}-{textures}.safetensors"));
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_webqlora"));
                cmd.arg("dump-step")
                    .args(["--model", model.to_str().unwrap()])
                    .args(["--adapter", adapter.to_str().unwrap()])
                    .args(["--batch", batch_file.to_str().unwrap()])
                    .args(["--out", out.to_str().unwrap()])
                    .args(["--base", base]);
                if !textures {
                    cmd.env("WEBQLORA_TEXTURES", "0");
                }
                let run = cmd.output().unwrap();
                assert!(
                    run.status.success(),
                    "{}",
                    String::from_utf8_lossy(&run.stderr)
                );
                SafetensorsFiles::open_files(&[out]).unwrap()
            };
            let (tex, buf) = (run(true), run(false));
            let names: Vec<String> = buf.names().map(String::from).collect();
            assert!(names.iter().filter(|n| n.starts_with("grad.")).count() >= 28);
            for name in names {
                let get = |f: &SafetensorsFiles| f.f32(&name, &f.raw(&name).unwrap().1).unwrap();
                let tol = if name.starts_with("grad.") {
                    Tol::rel(1e-4)
                } else {
                    Tol::F32
                };
                tol.check(format!("{base} base, {name}"), &get(&tex), &get(&buf));
            }
        }
    });
}

/// A GGUF model, as every other command takes one: SmolLM2-135M-Instruct's Q4_1 file (from
/// `cargo xtask fetch-model`) with an adapter on q_proj whose B is zero, so the adapted model
/// is the base. The logits after each golden text (smollm2/smollm2_reference.json) are within
/// 1e-2 of transformers' top-10 for the file dequantized to f32, and every adapter tensor gets
/// a finite gradient.
#[test]
fn dump_step_takes_a_gguf_model() {
    let model = common::smollm2_path();
    let reference = common::golden_json("smollm2/smollm2_reference.json");
    let case = &reference["cases"][0];
    let ids: Vec<i64> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let seq = ids.len();
    let dir = temp_dir("dump_step_gguf");

    // The adapter: r 2 on every layer's q_proj, A seeded, B zero.
    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let config = webqlora::lora::LoraConfig {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["q_proj".into()],
        use_rslora: false,
        use_dora: false,
        base_model_name_or_path: String::new(),
    };
    std::fs::write(
        adapter.join("adapter_config.json"),
        webqlora::lora::peft::config_json(&config),
    )
    .unwrap();
    common::for_each_seed("dump_step_gguf", &[], |mut rng| {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for layer in 0..30 {
            let module = format!("base_model.model.model.layers.{layer}.self_attn.q_proj");
            let a = common::random_f32(&mut rng, 2 * 576, 0.05);
            tensors.push((
                format!("{module}.lora_A.weight"),
                vec![2, 576],
                common::bytes(&a),
            ));
            tensors.push((
                format!("{module}.lora_B.weight"),
                vec![576, 2],
                vec![0; 576 * 2 * 4],
            ));
        }
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &adapter.join("adapter_model.safetensors"))
            .unwrap();

        // The batch: the text's ids, each labelled with the next (the last unlabelled).
        let labels: Vec<i64> = (0..seq)
            .map(|i| ids.get(i + 1).copied().unwrap_or(-100))
            .collect();
        let batch = dir.join("batch.safetensors");
        let (id_bytes, label_bytes) = (
            bytemuck::cast_slice(&ids).to_vec(),
            bytemuck::cast_slice(&labels).to_vec(),
        );
        let views = vec![
            (
                "input_ids".to_string(),
                TensorView::new(Dtype::I64, vec![1, seq], &id_bytes).unwrap(),
            ),
            (
                "labels".to_string(),
                TensorView::new(Dtype::I64, vec![1, seq], &label_bytes).unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, &batch).unwrap();

        let out = dir.join("step.safetensors");
        let run = Command::new(env!("CARGO_BIN_EXE_webqlora"))
            .arg("dump-step")
            .arg("--model")
            .arg(&model)
            .arg("--adapter")
            .arg(&adapter)
            .arg("--batch")
            .arg(&batch)
            .arg("--out")
            .arg(&out)
            .args(["--base", "f32"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let step = SafetensorsFiles::open_files(std::slice::from_ref(&out)).unwrap();
        let get = |name: &str| step.f32(name, &step.raw(name).unwrap().1).unwrap();
        let logits = get("logits");
        let vocab = 49152;
        assert_eq!(logits.len(), seq * vocab);
        let last = &logits[(seq - 1) * vocab..];
        let top = case["top10_ids"].as_array().unwrap();
        let want = case["top10_logits"].as_array().unwrap();
        for (id, want) in top.iter().zip(want) {
            let (id, want) = (id.as_u64().unwrap() as usize, want.as_f64().unwrap() as f32);
            assert!(
                (last[id] - want).abs() < 1e-2,
                "token {id}: {} against {want}",
                last[id]
            );
        }
        assert!(get("loss")[0].is_finite());
        let mut grads = 0;
        for name in step.names().filter(|n| n.starts_with("grad.")) {
            assert!(get(name).iter().all(|g| g.is_finite()), "{name}");
            grads += 1;
        }
        assert_eq!(grads, 60);
    });
}
