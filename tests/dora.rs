//! DoRA (PEFT's `use_dora`) against PEFT itself, on the golden tiny Llama with the reference
//! data of tests/data/dora/make_expected.py: PEFT's DoRA adapter file loads, the logits, the
//! loss and the gradient of every A, B and magnitude match (golden/README.md's tolerances),
//! one CLI training step equals PyTorch's AdamW step and saves a DoRA adapter PEFT's way, the
//! merge equals PEFT's merge_and_unload, a fresh magnitude is the base's row norms as PEFT
//! initialises it, and the NF4 and GGUF kernels take the same path.

mod common;

use common::cli::{fails, ok, path, webqlora};
use common::{golden, rel_err, temp_dir, test_data, Golden, Tol};
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::lora::peft::Adapter;
use webqlora::model::load::upload_model;
use webqlora::model::safetensors_files::SafetensorsFiles;
use webqlora::model::transformer::{BaseFormat, Transformer};
use webqlora::model::ModelConfig;

fn expected() -> Golden {
    Golden::open_test_data("dora/expected.safetensors")
}

fn dora_adapter() -> Adapter {
    Adapter::load(&test_data("dora/adapter")).unwrap()
}

#[test]
fn peft_dora_files_load_and_save_back_the_same() {
    let adapter = dora_adapter();
    assert!(adapter.config.use_dora);
    let magnitudes = adapter
        .tensors
        .keys()
        .filter(|n| n.ends_with(".lora_magnitude_vector"))
        .count();
    assert_eq!((adapter.tensors.len(), magnitudes), (42, 14));
    let dir = temp_dir("dora-save");
    adapter.save(&dir).unwrap();
    let again = Adapter::load(&dir).unwrap();
    assert_eq!(again, adapter);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["use_dora"], true);
}

#[test]
fn dora_logits_match_peft() {
    let got = common::tiny_llama_logits(
        &golden("tiny-llama/base-f32"),
        BaseFormat::F32,
        Some(&dora_adapter()),
    );
    Tol::GOLDEN.check("logits", &got, &expected().f32("logits"));
}

/// The loss and the gradient of every adapter tensor of one training step on `dir`'s weights
/// in `base` format, by name.
fn step(dir: &str, base: BaseFormat, checkpointing: bool) -> (f32, Vec<(String, Vec<f32>)>) {
    let (ids, labels, (batch, seq)) = expected().ids_labels();
    let targets = common::shifted_targets(&labels, seq);
    let dir = golden(dir);
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let adapter = dora_adapter();
    let mut g = Graph::new();
    let model = Transformer::declare(&mut g, &config, base, Some(&adapter.config), seq).unwrap();
    let input = g.input("input_ids", &[batch * seq], DType::U32);
    let target_t = g.input("targets", &[batch * seq], DType::U32);
    let step = model
        .train_step(
            &mut g,
            input,
            target_t,
            None,
            seq,
            config.vocab_size,
            checkpointing,
        )
        .unwrap();
    g.mark_output(step.loss);
    step.grads.iter().for_each(|&(_, t)| g.mark_output(t));
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, &files, base, Some(&adapter)).unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    compiled
        .write(gpu, target_t, bytemuck::cast_slice(&targets))
        .unwrap();
    compiled.run(gpu);
    let read = |t| pollster::block_on(compiled.read_f32(gpu, t)).unwrap();
    let loss = read(step.loss)[0];
    let grads = step.grads.iter().map(|(n, t)| (n.clone(), read(*t)));
    (loss, grads.collect())
}

fn gradients_match_peft(checkpointing: bool) {
    let (loss, grads) = step("tiny-llama/base-f32", BaseFormat::F32, checkpointing);
    let expected = expected();
    let want = expected.f32("loss")[0];
    assert!(((loss - want) / want).abs() < 1e-4, "loss {loss} vs {want}");
    assert_eq!(grads.len(), 42);
    for (name, got) in &grads {
        Tol::rel(1e-3).check(name, got, &expected.f32(&format!("grad.{name}")));
    }
}

#[test]
fn dora_loss_and_gradients_match_peft() {
    gradients_match_peft(false);
}

/// With each layer recomputed before its backward (down_proj's product included: the
/// magnitude's gradient reads it).
#[test]
fn with_checkpointing_too() {
    gradients_match_peft(true);
}

/// The NF4 kernels (A·Wᵀ through the NF4 product, ‖W_j‖² of the dequantized codes) give the
/// step of the f32 path on the weights bitsandbytes' checkpoint dequantizes to.
#[test]
fn nf4_base_equals_the_f32_path_on_dequantized_weights() {
    let folder = "tiny-llama/base-bnb-nf4";
    let (nf4_loss, nf4) = step(folder, BaseFormat::Nf4 { blocksize: 64 }, true);
    let (f32_loss, f32) = step(folder, BaseFormat::F32, true);
    assert!(((nf4_loss - f32_loss) / f32_loss).abs() < 1e-5);
    for ((name, a), (_, b)) in nf4.iter().zip(&f32) {
        Tol::GOLDEN.check(name, a, b);
    }
}

#[test]
fn merge_matches_peft_merge_and_unload() {
    use webqlora::lora::merge::{merged_tensors, MergeBase};
    let dir = golden("tiny-llama/base-f32");
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let merged = merged_tensors(
        &config,
        &files,
        &dora_adapter(),
        MergeBase::Original,
        |_, _| {},
    )
    .unwrap();
    let expected = expected();
    let mut checked = 0;
    for (name, _, values) in &merged {
        let key = format!("merged.{name}");
        if expected.names().contains(&key) {
            Tol::ELEMENTWISE.check(name, values, &expected.f32(&key));
            checked += 1;
        }
    }
    assert_eq!(checked, 14);
}

/// A fresh DoRA adapter starts where PEFT's does: B zero, each magnitude its base weight's row
/// norm, so the model is the base model.
#[test]
fn a_fresh_magnitude_is_the_base_row_norm() {
    let dir = golden("tiny-llama/base-f32");
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let lora = dora_adapter().config;
    let mut g = Graph::new();
    let model = Transformer::declare(&mut g, &config, BaseFormat::F32, Some(&lora), 8).unwrap();
    let name = "base_model.model.model.layers.1.mlp.gate_proj.lora_magnitude_vector";
    let magnitude = g.find(name).unwrap();
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, &files, BaseFormat::F32, None).unwrap();
    assert_eq!(missing.len(), 28, "A and B of 14 modules: {missing:?}");
    assert!(!missing.iter().any(|n| n.ends_with("magnitude_vector")));
    let got = pollster::block_on(compiled.read_f32(gpu, magnitude)).unwrap();
    let w = files
        .f32("model.layers.1.mlp.gate_proj.weight", &[128, 64])
        .unwrap();
    let want: Vec<f32> = w
        .chunks_exact(64)
        .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    Tol::ELEMENTWISE.check("row norms", &got, &want);
}

/// `webqlora train --adapter <PEFT DoRA adapter>` for one step equals PyTorch's AdamW step on
/// PEFT's gradients, and writes a DoRA adapter; DoRA has no GGUF LoRA form, which export says.
#[test]
fn one_cli_step_equals_pytorch_adamw_and_saves_dora() {
    let dir = temp_dir("dora-train");
    let out = common::cli::one_golden_step(&test_data("dora/adapter"), &dir);
    let base = golden("tiny-llama/base-f32");
    let trained = Adapter::load(&out).unwrap();
    assert!(trained.config.use_dora);
    let expected = expected();
    assert_eq!(trained.tensors.len(), 42);
    for (name, (_, values)) in &trained.tensors {
        let want = expected.f32(&format!("after_adamw.{name}"));
        let diff = values
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
    let err = fails(webqlora(&[
        "export",
        "--adapter",
        path(&out),
        "--model",
        path(&base),
        "--format",
        "gguf-lora",
        "--output",
        path(&dir.join("a.gguf")),
    ]));
    assert!(err.contains("DoRA adapter has no GGUF LoRA form"), "{err}");
    assert!(!dir.join("a.gguf").exists());
}

/// `train --dora` from scratch: the loss falls, the adapter is saved as DoRA with a magnitude
/// per module that moved from its start, `merge` takes it; DoRA with dropout and with
/// `--export gguf-lora` is refused before training, naming why.
#[test]
fn train_dora_from_scratch_and_merge() {
    let dir = temp_dir("dora-fresh");
    std::fs::write(dir.join("data.jsonl"), common::cli::pattern_jsonl(8, 24)).unwrap();
    let (data, out) = (dir.join("data.jsonl"), dir.join("out"));
    let base = golden("tiny-llama/base-f32");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            path(&base),
            "--data",
            path(&data),
            "--output",
            path(&out),
            "--rank",
            "4",
            "--lr",
            "1e-2",
            "--schedule",
            "constant",
            "--steps",
            "12",
            "--dora",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        webqlora(&args)
    };
    for (extra, says) in [
        (&["--lora-dropout", "0.1"][..], "DoRA with LoRA dropout"),
        (&["--export", "gguf-lora"][..], "no GGUF LoRA form"),
    ] {
        let err = fails(train(extra));
        assert!(err.contains(says), "{err}");
        assert!(!out.join("adapter_model.safetensors").exists());
    }
    let lora = golden("tiny-llama/adapter");
    let err = fails(train(&["--adapter", path(&lora)]));
    assert!(
        err.contains("--dora: the adapter to train on is a LoRA one"),
        "{err}"
    );
    ok(train(&[]));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 12);
    assert!(losses[11] < losses[0] - 0.3, "{losses:?}");
    let adapter = Adapter::load(&out).unwrap();
    assert!(adapter.config.use_dora);
    assert_eq!(adapter.tensors.len(), 42);
    // Each magnitude started at its base row norm, and training moved it.
    let files = SafetensorsFiles::open_dir(&base).unwrap();
    let name = "base_model.model.model.layers.0.self_attn.o_proj.lora_magnitude_vector";
    let w = files
        .f32("model.layers.0.self_attn.o_proj.weight", &[64, 64])
        .unwrap();
    let start: Vec<f32> = w
        .chunks_exact(64)
        .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let moved = rel_err(&adapter.tensors[name].1, &start);
    assert!(moved > 1e-4 && moved < 0.5, "{moved}");
    let merged = dir.join("merged");
    ok(webqlora(&[
        "merge",
        "--model",
        path(&base),
        "--adapter",
        path(&out),
        "--output",
        path(&merged),
    ]));
    assert!(merged.join("model.safetensors").exists());
}

/// A magnitude in a file whose config does not say use_dora, and a DoRA adapter without one
/// of its magnitudes, are refused naming the tensor (never a fresh magnitude in its place).
#[test]
fn magnitudes_must_match_the_config() {
    let dir = temp_dir("dora-faults");
    let src = test_data("dora/adapter");
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("adapter_config.json")).unwrap();
    let plain = config.replace("\"use_dora\": true", "\"use_dora\": false");
    assert_ne!(plain, config);
    std::fs::write(dir.join("adapter_config.json"), plain).unwrap();
    let err = Adapter::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("lora_magnitude_vector' is a DoRA magnitude") && err.contains("use_dora"),
        "{err}"
    );

    let mut partial = dora_adapter();
    let name = "base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector";
    partial.tensors.remove(name).unwrap();
    let base = golden("tiny-llama/base-f32");
    let config = ModelConfig::load(&base).unwrap();
    let files = SafetensorsFiles::open_dir(&base).unwrap();
    let mut g = Graph::new();
    let model =
        Transformer::declare(&mut g, &config, BaseFormat::F32, Some(&partial.config), 8).unwrap();
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    let err = upload_model(
        gpu,
        &compiled,
        &model,
        &files,
        BaseFormat::F32,
        Some(&partial),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(name), "{err}");
}
