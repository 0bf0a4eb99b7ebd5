//! Vocabularies larger than one binding (Gemma 3's 262,144 × 640 is 671 MB in f32; WebGPU's
//! default binding limit and lavapipe's is 128 MiB): the embedding and the lm-head are kept in
//! f16 and declared as row parts, gathered part by part, and the lm-head loss, its gradient
//! and the logits run part by part (f16 rows widened to f32 a block at a time). Split tables
//! give the golden logits, f16 tables give what f32 tables of the same (f16) values give, and
//! a training step runs on every family at an embedding over 128 MiB.

mod common;

use common::{golden, rel_err, Golden, Tol};
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::lora::peft::Adapter;
use webqlora::lora::LoraConfig;
use webqlora::model::load::{initialize_missing, upload_model};
use webqlora::model::safetensors_files::SafetensorsFiles;
use webqlora::model::transformer::{parse_part_name, BaseFormat, Transformer};
use webqlora::model::{ModelConfig, ModelError, WeightSource};
use webqlora::ops::cross_entropy::IGNORE;

/// Row parts as the graph declares them: one when the table fits, else equal multiples of
/// 64 rows, each within the limit.
#[test]
fn row_parts_fit_the_binding_limit() {
    let mut g = Graph::new();
    assert_eq!(g.row_parts(49_152, 576, DType::F32), [49_152]);
    let gemma = g.row_parts(262_144, 640, DType::F32);
    assert_eq!(gemma.iter().sum::<usize>(), 262_144);
    assert!(gemma.len() == 6 && gemma.iter().all(|&r| r * 640 * 4 <= 128 << 20));
    let gemma = g.row_parts(262_144, 640, DType::F16);
    assert!(gemma.len() == 3 && gemma.iter().all(|&r| r * 640 * 2 <= 128 << 20));
    // The tables of Gemma 3 are f16, SmolLM2's (49,152 × 576, 113 MB) f32.
    use webqlora::model::transformer::table_dtype;
    assert_eq!(table_dtype(&g, 262_144, 640), DType::F16);
    assert_eq!(table_dtype(&g, 49_152, 576), DType::F32);
    g.max_binding_bytes = 200 * 256;
    assert_eq!(g.row_parts(512, 64, DType::F32), [192, 192, 128]);
    assert_eq!(
        parse_part_name("model.embed_tokens.weight@rows[192..384]"),
        Some(("model.embed_tokens.weight", 192, 192))
    );
}

/// The golden tiny Gemma 3 (vocabulary 512, tied) with its tables in three parts: the base
/// and adapted logits of transformers and PEFT, as whole.
#[test]
fn split_tables_give_the_golden_logits() {
    let expected = Golden::open("tiny-gemma3/expected.safetensors");
    let dir = golden("tiny-gemma3/base-f32");
    let adapter = Adapter::load(&golden("tiny-gemma3/adapter")).unwrap();
    for (key, adapter) in [("logits_base", None), ("logits_lora", Some(&adapter))] {
        let got = logits(&dir, adapter, 200 * 256);
        Tol::GOLDEN.check(key, &got, &expected.f32(key));
    }
}

/// The golden tiny Gemma 3's embedding held in f16 (three parts) gives the logits its f16
/// values give in f32: the f16 gather and the widened lm-head blocks add no error of their own.
#[test]
fn f16_tables_give_the_logits_of_their_values() {
    let dir = golden("tiny-gemma3/base-f32");
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let rounded = F16Tables(&files);
    let f32 = logits_of(&dir, &rounded, None, |_| {});
    let f16 = logits_of(&dir, &files, None, |g| {
        g.f16_tables_over = 0;
        g.max_binding_bytes = 200 * 128;
    });
    Tol::ELEMENTWISE.check("output", &f16, &f32);
    // And f16 values are not f32's: the comparison can fail.
    let plain = logits_of(&dir, &files, None, |_| {});
    assert!(rel_err(&plain, &f32) > 1e-6);
}

/// A weight source whose tables are rounded to f16 values.
struct F16Tables<'a>(&'a dyn WeightSource);

impl WeightSource for F16Tables<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let mut v = self.0.f32(name, shape)?;
        if name.contains("embed_tokens") {
            v.iter_mut()
                .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        }
        Ok(v)
    }
}

fn logits(dir: &std::path::Path, adapter: Option<&Adapter>, max_binding: u64) -> Vec<f32> {
    let files = SafetensorsFiles::open_dir(dir).unwrap();
    logits_of(dir, &files, adapter, |g| g.max_binding_bytes = max_binding)
}

/// The golden batch's logits of the tiny Gemma 3 from `files`; `setup` may make the graph
/// split its tables (in three).
fn logits_of(
    dir: &std::path::Path,
    files: &dyn WeightSource,
    adapter: Option<&Adapter>,
    setup: impl FnOnce(&mut Graph),
) -> Vec<f32> {
    let expected = Golden::open("tiny-gemma3/expected.safetensors");
    let ids = expected_ids(&expected, "input_ids");
    let seq = expected.shape("input_ids")[1];
    let config = ModelConfig::load(dir).unwrap();
    let mut g = Graph::new();
    setup(&mut g);
    let split = g.max_binding_bytes < 1 << 20;
    let lora = adapter.map(|a| &a.config);
    let model = Transformer::declare(&mut g, &config, BaseFormat::F32, lora, seq).unwrap();
    assert_eq!(model.embed.len() == 3, split, "split in three");
    let input = g.input("input_ids", &[ids.len()], DType::U32);
    let logits = model.forward_logits(&mut g, input, seq).unwrap();
    g.mark_output(logits);
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, files, BaseFormat::F32, adapter).unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    compiled.run(gpu);
    pollster::block_on(compiled.read_f32(gpu, logits)).unwrap()
}

fn expected_ids(expected: &Golden, name: &str) -> Vec<u32> {
    bytemuck::pod_collect_to_vec::<u8, i64>(expected.raw(name).2)
        .iter()
        .map(|&i| if i < 0 { IGNORE } else { i as u32 })
        .collect()
}

/// (table parts, loss, every adapter gradient by name) of one step.
type Step = (usize, Vec<f32>, Vec<(String, Vec<f32>)>);

/// Loss and every adapter gradient of one step (NF4 base, checkpointing) of `config` with
/// weights from `files`, the tables split to fit `max_binding` bytes; also how many parts.
#[allow(clippy::too_many_arguments)]
fn step(
    config: &ModelConfig,
    files: &RandomWeights,
    lora: &LoraConfig,
    (ids, targets, seq): (&[u32], &[u32], usize),
    tables: Tables,
    chunk: usize,
) -> Step {
    let gpu = common::gpu();
    let mut g = Graph::for_device(gpu);
    g.max_binding_bytes = tables.max_binding;
    g.f16_tables_over = tables.f16_over;
    let base = BaseFormat::Nf4 { blocksize: 64 };
    let model = Transformer::declare(&mut g, config, base, Some(lora), seq).unwrap();
    let input = g.input("input_ids", &[ids.len()], DType::U32);
    let target = g.input("targets", &[ids.len()], DType::U32);
    let s = model
        .train_step(&mut g, input, target, None, seq, chunk, true)
        .unwrap();
    g.mark_output(s.loss);
    for (_, t) in &s.grads {
        g.mark_output(*t);
    }
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, files, base, None).unwrap();
    // B starts at zero in PEFT: a nonzero one makes every gradient depend on the tables.
    initialize_missing(gpu, &compiled, &missing, 7).unwrap();
    for (name, t) in compiled.graph.tensors.iter().zip(0..) {
        if name.name.ends_with("lora_B.weight") {
            let id = webqlora::graph::TensorId::from_index(t);
            let v = common::random_f32(&mut files.rng(&name.name), name.numel(), 0.05);
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
    (model.embed.len(), read(s.loss), grads)
}

/// How a graph keeps its tables: parts within `max_binding` bytes, f16 when f32 would exceed
/// `f16_over`.
#[derive(Clone, Copy)]
struct Tables {
    max_binding: u64,
    f16_over: u64,
}

/// Seeded values for every tensor a model asks for (norm weights near one, or near zero where
/// the family adds the one; the embedding f16 values, so that f16 tables hold it exactly): a
/// model of any shape without writing it to disk.
struct RandomWeights {
    plus_one: bool,
    /// Each tensor's values come from this and its name, the same in every step.
    seed: u64,
}

impl RandomWeights {
    fn rng(&self, name: &str) -> rand::rngs::StdRng {
        common::named_rng(self.seed, name)
    }
}

impl WeightSource for RandomWeights {
    fn contains(&self, _name: &str) -> bool {
        true
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let n = shape.iter().product();
        let mut rng = self.rng(name);
        let scale = if name.ends_with("norm.weight") {
            0.1
        } else {
            0.5
        };
        let mut v = common::random_f32(&mut rng, n, scale);
        if name.ends_with("norm.weight") && self.plus_one {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        if name.contains("embed_tokens") || name.starts_with("lm_head") {
            v.iter_mut()
                .for_each(|x| *x = half::f16::from_f32(*x).to_f32());
        }
        Ok(v)
    }
}

/// One step of each family at a vocabulary of 135,000 × 256 (138 MB in f32, over lavapipe's
/// and WebGPU's default 128 MiB binding): its f16 tables in one part (as the device keeps them)
/// and in four, and f32 tables of the same values in two, give the same loss and gradients
/// (none of them zero), over the 20 rows with a target.
#[test]
fn a_training_step_on_every_family_with_an_embedding_over_128_mib() {
    for model_type in ["llama", "qwen2", "qwen3", "gemma3_text"] {
        let mut json = serde_json::json!({
            "model_type": model_type,
            "vocab_size": 135_000,
            "hidden_size": 256,
            "intermediate_size": 320,
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
        let config = ModelConfig::from_json(&json.to_string(), "config.json").unwrap();
        assert!(config.vocab_size * config.hidden_size * 4 > 128 << 20);
        let lora = LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
            use_rslora: false,
            use_dora: false,
            base_model_name_or_path: String::new(),
        };
        let mut rng = common::rng(model_type);
        use rand::Rng;
        let weights = RandomWeights {
            plus_one: !config.family().norm_plus_one,
            seed: rng.random(),
        };
        let seq = 12;
        let ids: Vec<u32> = (0..2 * seq).map(|_| rng.random_range(0..135_000)).collect();
        // Targets in every part of the table, and some rows without a loss.
        let targets: Vec<u32> = (0..2 * seq)
            .map(|i| match i % 5 {
                4 => IGNORE,
                _ => rng.random_range(0..135_000),
            })
            .collect();
        let limit = common::gpu().limits.max_storage_buffer_binding_size;
        let batch = (&ids[..], &targets[..], seq);
        let run = |tables, chunk| step(&config, &weights, &lora, batch, tables, chunk);
        // As a device keeps them: f16 (69 MB), one part.
        let f16 = Tables {
            max_binding: limit.min(128 << 20),
            f16_over: 128 << 20,
        };
        let (parts_a, loss_a, grads_a) = run(f16, 4096);
        // f16 in four parts, other chunks.
        let (parts_b, loss_b, grads_b) = run(
            Tables {
                max_binding: 20 << 20,
                ..f16
            },
            1000,
        );
        // f32 tables of the same values, in two parts.
        let f32 = Tables {
            f16_over: u64::MAX,
            ..f16
        };
        let (parts_c, loss_c, grads_c) = run(f32, 4096);
        assert_eq!((parts_a, parts_b, parts_c), (1, 4, 2), "{model_type}");
        assert!(loss_a[0].is_finite() && loss_a[1] == 20.0, "{loss_a:?}");
        for (loss, grads) in [(&loss_b, &grads_b), (&loss_c, &grads_c)] {
            assert!(
                (loss_a[0] - loss[0]).abs() < 1e-5 * loss_a[0].abs(),
                "{model_type}: {loss_a:?} vs {loss:?}"
            );
            for ((name, a), (_, b)) in grads_a.iter().zip(grads) {
                Tol::GOLDEN.check(format!("{model_type} {name}"), a, b);
                assert!(a.iter().any(|v| *v != 0.0), "{model_type} {name} is zero");
            }
        }
    }
}

/// A decoder over a training graph's weights shares every one of them: tables split another
/// way (a graph for another binding limit) are an error naming the table, never unwritten
/// weights.
#[test]
fn a_decoder_shares_every_weight_or_says_which() {
    use webqlora::model::transformer_decode::Decoder;
    let dir = golden("tiny-gemma3/base-f32");
    let config = ModelConfig::load(&dir).unwrap();
    let gpu = common::gpu();
    let graph = |max_binding: u64| {
        let mut g = Graph::new();
        g.max_binding_bytes = max_binding;
        let model = Transformer::declare(&mut g, &config, BaseFormat::F32, None, 8).unwrap();
        let input = g.input("input_ids", &[8], DType::U32);
        let logits = model.forward_logits(&mut g, input, 8).unwrap();
        g.mark_output(logits);
        CompiledGraph::new(gpu, g).unwrap()
    };
    let same = graph(gpu.limits.max_storage_buffer_binding_size);
    Decoder::sharing(gpu, &config, BaseFormat::F32, None, 16, &same).unwrap();
    let split = graph(200 * 256);
    let err = Decoder::sharing(gpu, &config, BaseFormat::F32, None, 16, &split)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'model.embed_tokens.weight'"), "{err}");
}
