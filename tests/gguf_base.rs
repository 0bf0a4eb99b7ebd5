//! `--base gguf`: the linear weights kept on the GPU in their GGUF block types and multiplied
//! by the `ggml_matmul` kernels. A training step (loss and every LoRA gradient, with
//! checkpointing) on block codes of every type equals the step on an f32 base holding the
//! values those codes dequantize to, on every family; the training graph runs the block
//! kernels for every linear, and a decoder over the same codes generates what the f32 one
//! does. Without `--base` a GGUF is held as downloaded (codes, or f32 on the software path).

mod common;

use common::{random_blocks_scaled, Tol};
use rand::Rng;
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::lora::LoraConfig;
use webqlora::model::generate::{generate, Sampler};
use webqlora::model::load::{initialize_missing, upload_model};
use webqlora::model::transformer::{BaseFormat, Linear, Transformer};
use webqlora::model::transformer_decode::Decoder;
use webqlora::model::{ModelConfig, ModelError, WeightSource};
use webqlora::ops::cross_entropy::IGNORE;
use webqlora::quant::ggml::{dequantize, GgmlType};

const TYPES: [GgmlType; 10] = GgmlType::QUANTIZED;

/// A model whose linear weights are seeded random blocks of the types in
/// `config.gguf_types` (the rest seeded f32 values): `stored_blocks` gives the blocks,
/// `f32` what they dequantize to.
struct RandomBlocks {
    config: ModelConfig,
    seed: u64,
}

impl RandomBlocks {
    fn rng(&self, name: &str) -> rand::rngs::StdRng {
        common::named_rng(self.seed, name)
    }
}

impl WeightSource for RandomBlocks {
    fn contains(&self, _name: &str) -> bool {
        true
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        if let Some(&ty) = self.config.gguf_types.get(name) {
            return Ok(dequantize(ty, &self.stored_blocks(name, shape)?.1));
        }
        let n = shape.iter().product();
        let norm = name.ends_with("norm.weight");
        let mut v = common::random_f32(&mut self.rng(name), n, if norm { 0.1 } else { 0.5 });
        if norm && !self.config.family().norm_plus_one {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(v)
    }

    fn stored_blocks(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(GgmlType, Vec<u8>), ModelError> {
        let ty = self.config.gguf_types[name];
        let blocks = shape.iter().product::<usize>() / ty.block().0;
        // Scales for weights of about 0.05 (a k-quant's value is d · scale · code).
        let typical = match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => 8.0,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q2K => 16.0,
            GgmlType::Q8_0 | GgmlType::Q3K => 64.0,
            GgmlType::Q4K => 256.0,
            GgmlType::Q5K => 512.0,
            _ => 1024.0,
        };
        let mut rng = self.rng(name);
        Ok((
            ty,
            random_blocks_scaled(ty, blocks, &mut rng, 0.05 / typical),
        ))
    }
}

/// A config of `model_type` (hidden 256: k-quant rows are whole 256-value blocks) whose
/// linear weights take the ten block types in turn.
fn config(model_type: &str) -> ModelConfig {
    let mut json = serde_json::json!({
        "model_type": model_type,
        "vocab_size": 300,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "tie_word_embeddings": true,
        "max_position_embeddings": 64,
    });
    if model_type == "gemma3_text" {
        json["sliding_window"] = 4.into();
        json["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"]);
        json["query_pre_attn_scalar"] = 64.into();
    }
    let mut config = ModelConfig::from_json(&json.to_string(), "config.json").unwrap();
    let modules = webqlora::model::family::LINEAR_PATHS;
    for (i, name) in (0..config.num_layers)
        .flat_map(|l| modules.map(|m| format!("model.layers.{l}.{m}.weight")))
        .enumerate()
    {
        // One module of layer 1 stays in a float type (f32 on the GPU).
        if i != 9 {
            config.gguf_types.insert(name, TYPES[i % TYPES.len()]);
        }
    }
    config
}

/// Loss, every adapter gradient (by name) and the kernels of the graph's nodes.
type Step = (Vec<f32>, Vec<(String, Vec<f32>)>, Vec<String>);

/// Loss and every adapter gradient of one training step over `base`, and the kernels of the
/// graph's nodes.
fn step(
    files: &RandomBlocks,
    base: BaseFormat,
    (ids, targets, seq): (&[u32], &[u32], usize),
    use_dora: bool,
) -> Step {
    let config = &files.config;
    let lora = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        target_modules: ["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"]
            .map(String::from)
            .to_vec(),
        use_rslora: false,
        use_dora,
        base_model_name_or_path: String::new(),
    };
    let gpu = common::gpu();
    let mut g = Graph::for_device(gpu);
    let model = Transformer::declare(&mut g, config, base, Some(&lora), seq).unwrap();
    let ggml = model
        .layers
        .iter()
        .flat_map(|l| [l.q, l.k, l.v, l.o, l.gate, l.up, l.down])
        .filter(|m| matches!(m.weight, Linear::Ggml(_)))
        .count();
    let expected = if base == BaseFormat::Gguf { 13 } else { 0 };
    assert_eq!(ggml, expected, "{:?}", base);
    let input = g.input("input_ids", &[ids.len()], DType::U32);
    let target = g.input("targets", &[ids.len()], DType::U32);
    let s = model
        .train_step(&mut g, input, target, None, seq, 4096, true)
        .unwrap();
    g.mark_output(s.loss);
    for (_, t) in &s.grads {
        g.mark_output(*t);
    }
    let kernels = g.nodes.iter().map(|n| n.kernel_label()).collect();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, files, base, None).unwrap();
    initialize_missing(gpu, &compiled, &missing, 7).unwrap();
    // B starts at zero in PEFT: a nonzero one makes every gradient depend on the base.
    for (desc, t) in compiled.graph.tensors.iter().zip(0..) {
        if desc.name.ends_with("lora_B.weight") {
            let id = webqlora::graph::TensorId::from_index(t);
            let v = common::random_f32(&mut files.rng(&desc.name), desc.numel(), 0.05);
            compiled.write(gpu, id, &common::bytes(&v)).unwrap();
        }
    }
    compiled
        .write(gpu, input, bytemuck::cast_slice(ids))
        .unwrap();
    compiled
        .write(gpu, target, bytemuck::cast_slice(targets))
        .unwrap();
    compiled.run(gpu);
    let read = |t| pollster::block_on(compiled.read_f32(gpu, t)).unwrap();
    let grads = s.grads.iter().map(|(n, t)| (n.clone(), read(*t))).collect();
    (read(s.loss), grads, kernels)
}

#[test]
fn a_training_step_on_block_codes_equals_the_step_on_their_values() {
    for model_type in ["llama", "qwen2", "qwen3", "gemma3_text"] {
        block_codes_step_equals_values_step(model_type, false);
    }
}

/// The same with DoRA: A·Wᵀ for the norms through the block kernels, ‖W_j‖² and the fresh
/// magnitudes from the dequantized codes (qwen2: with the q/k/v biases after the scale).
#[test]
fn with_dora_too() {
    for model_type in ["llama", "qwen2"] {
        block_codes_step_equals_values_step(model_type, true);
    }
}

fn block_codes_step_equals_values_step(model_type: &str, dora: bool) {
    common::for_each_seed(model_type, &[], |mut rng| {
        let files = RandomBlocks {
            config: config(model_type),
            seed: rng.random(),
        };
        let seq = 12;
        let ids: Vec<u32> = (0..3 * seq).map(|_| rng.random_range(0..300)).collect();
        let targets: Vec<u32> = (0..3 * seq)
            .map(|i| match i % 7 {
                6 => IGNORE,
                _ => rng.random_range(0..300),
            })
            .collect();
        let batch = (&ids[..], &targets[..], seq);
        let (loss_a, grads_a, kernels) = step(&files, BaseFormat::Gguf, batch, dora);
        let (loss_b, grads_b, _) = step(&files, BaseFormat::F32, batch, dora);
        // Forward, recomputation and the backward's dx run on the codes (all 13 block
        // weights forward, then the recomputed ones).
        let count = |k: &str| kernels.iter().filter(|n| **n == k).count();
        assert!(count("ggml_matmul_forward") > 13, "{model_type}");
        assert_eq!(
            count("ggml_matmul_backward") + count("ggml_matmul_backward_acc"),
            13,
            "{model_type}"
        );
        assert!(loss_a[0].is_finite() && loss_a[1] > 0.0, "{loss_a:?}");
        assert!(
            (loss_a[0] - loss_b[0]).abs() < 1e-5 * loss_b[0].abs(),
            "{model_type}: {loss_a:?} vs {loss_b:?}"
        );
        let per_module = if dora { 3 } else { 2 };
        assert_eq!(grads_a.len(), per_module * 2 * 5);
        for ((name, a), (_, b)) in grads_a.iter().zip(&grads_b) {
            Tol::GOLDEN.check(format!("{model_type} {name}"), a, b);
            assert!(a.iter().any(|v| *v != 0.0), "{model_type} {name} is zero");
        }
    });
}

/// Greedy tokens of a decoder over `base` (one token at a time: the matvec kernel).
fn greedy(files: &RandomBlocks, base: BaseFormat, prompt: &[u32], new: usize) -> Vec<u32> {
    let gpu = common::gpu();
    let config = &files.config;
    let decoder = Decoder::new(gpu, config, base, None, prompt.len() + new).unwrap();
    let missing = upload_model(gpu, &decoder.compiled, &decoder.model, files, base, None).unwrap();
    initialize_missing(gpu, &decoder.compiled, &missing, 0).unwrap();
    let mut sampler = Sampler::new(0.0, 1.0, 0);
    pollster::block_on(generate(
        &decoder,
        gpu,
        prompt,
        new,
        &mut sampler,
        &[],
        |_| true,
    ))
    .unwrap()
}

#[test]
fn a_decoder_on_block_codes_generates_what_the_f32_one_does() {
    common::for_each_seed("gguf_decode", &[], |mut rng| {
        let files = RandomBlocks {
            config: config("llama"),
            seed: rng.random(),
        };
        let prompt: Vec<u32> = (0..5).map(|_| rng.random_range(0..300)).collect();
        let a = greedy(&files, BaseFormat::Gguf, &prompt, 6);
        let b = greedy(&files, BaseFormat::F32, &prompt, 6);
        assert_eq!(a, b);
    });
}

/// A GGUF is held as downloaded unless `--base` says otherwise: its codes where the base
/// products run the portable kernels, their exact f32 dequantization on the software path
/// (what lavapipe gets), never NF4. `train` records the choice and why in summary.json and its
/// header, `eval --json` reports it, and the default run's loss is the loss of the format it
/// names asked for explicitly. A Hugging Face folder keeps NF4.
#[test]
fn a_gguf_is_held_as_downloaded_by_default() {
    use common::cli::{ok, path, pattern_jsonl, tiny_llama};
    use std::process::Command;
    use webqlora::model::transformer::ModelKind;

    let dir = common::temp_dir("gguf_default_base");
    let model = dir.join("tiny-q8_0.gguf");
    common::tiny_gguf::tiny_llama_gguf_blocks(&model, &[], &[], None, &mut |name, v| {
        name.ends_with("_proj.weight")
            .then(|| (GgmlType::Q8_0, webqlora::quant::ggml::quantize_q8_0(v)))
    });
    let data = dir.join("data.jsonl");
    std::fs::write(&data, pattern_jsonl(4, 12)).unwrap();
    // `kernels` forces WEBQLORA_KERNELS (None: as the test runs, which CI varies).
    let train = |name: &str, kernels: Option<&str>, extra: &[&str]| {
        let out = dir.join(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_webqlora"));
        cmd.args(["train", "--model", path(&model), "--data", path(&data)])
            .args([
                "--output",
                path(&out),
                "--steps",
                "1",
                "--batch",
                "2",
                "--quiet",
            ])
            .args(extra);
        if let Some(k) = kernels {
            cmd.env("WEBQLORA_KERNELS", k);
        }
        let stdout = ok(cmd.output().unwrap());
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let loss = metrics
            .lines()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
            .expect("a step's loss");
        (stdout, summary, loss)
    };

    // As this test runs: the choice the library makes for this device.
    let want = BaseFormat::default_for(ModelKind::Gguf, &common::gpu().kernels);
    assert_ne!(want.format.key(), "nf4");
    let (stdout, summary, loss) = train("default", None, &[]);
    assert_eq!(summary["base"], want.format.key(), "{summary}");
    assert_eq!(summary["base_why"], want.why.as_str());
    assert!(
        stdout.contains(&format!("base: {}", want.describe())),
        "{stdout}"
    );
    let (_, asked, asked_loss) = train("asked", None, &["--base", want.format.key()]);
    assert_eq!(asked["base_why"], "asked for");
    assert_eq!(loss, asked_loss, "the default is the format it names");

    // Forced paths: codes on the portable kernels, f32 on the software ones.
    for (kernels, key) in [("portable", "gguf"), ("software", "f32")] {
        let (_, summary, loss) = train(&format!("forced-{kernels}"), Some(kernels), &[]);
        assert_eq!(
            summary["base"], key,
            "WEBQLORA_KERNELS={kernels}: {summary}"
        );
        assert!(loss.is_finite());
    }
    let (_, nf4, _) = train("nf4", None, &["--base", "nf4"]);
    assert_eq!(nf4["base"], "nf4");

    // eval reports it too; a Hugging Face folder stays NF4.
    let eval = |model: &std::path::Path| {
        let out = ok(common::cli::webqlora(&[
            "eval",
            "--model",
            path(model),
            "--data",
            path(&data),
            "--json",
        ]));
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    assert_eq!(eval(&model)["base"], want.format.key());
    let folder = eval(&tiny_llama());
    assert_eq!(folder["base"], "nf4", "{folder}");
}
