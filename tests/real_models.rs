//! Released models from their GGUF files against transformers' reference
//! (../shared/golden/smollm2, gemma3-270m): top-10 next-token logits within 1e-2 absolute and
//! the same 12 greedy tokens (through the KV-cache decoder), from the reference token ids.
//! SmolLM2-135M-Instruct (Q4_1) dequantized to f32, and Gemma 3 270M (Q4_K_M: Q8_0, Q5_0,
//! Q4_K, Q6_K tensors; a 262,144-token vocabulary in row parts; head_dim 256; sliding-window
//! layers) on the file's own block codes (`--base gguf`; transformers dequantizes the same
//! codes). The models
//! come from `cargo xtask fetch-model`, which `cargo xtask test` runs first.

mod common;

use common::golden_json;
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::model::generate::{generate, Sampler};
use webqlora::model::gguf::GgufFile;
use webqlora::model::load::upload_model;
use webqlora::model::transformer::{BaseFormat, Transformer};
use webqlora::model::transformer_decode::Decoder;

const POSITIONS: usize = 32;

#[test]
fn smollm2_forward_matches_the_reference() {
    let file = GgufFile::open(&common::smollm2_path()).unwrap();
    let c = file.config();
    assert_eq!(
        (c.num_layers, c.hidden_size, c.vocab_size),
        (30, 576, 49152)
    );
    matches_the_reference(&file, "smollm2/smollm2_reference.json", BaseFormat::F32);
}

#[test]
fn gemma3_270m_forward_matches_the_reference() {
    let file = GgufFile::open(&common::gemma3_path()).unwrap();
    let c = file.config();
    assert_eq!(
        (c.num_layers, c.hidden_size, c.vocab_size),
        (18, 640, 262_144)
    );
    assert_eq!((c.head_dim, c.sliding_window), (256, Some(512)));
    matches_the_reference(&file, "gemma3-270m/reference.json", BaseFormat::Gguf);
}

fn matches_the_reference(file: &GgufFile, reference: &str, base: BaseFormat) {
    let config = file.config().clone();
    let mut g = Graph::new();
    let model = Transformer::declare(&mut g, &config, base, None, POSITIONS).unwrap();
    let input = g.input("input_ids", &[POSITIONS], DType::U32);
    let logits = model.forward_logits(&mut g, input, POSITIONS).unwrap();
    g.mark_output(logits);
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    upload_model(gpu, &compiled, &model, file, base, None).unwrap();

    // Logits after the last of `ids` (the positions after it are padding, unseen by it).
    let next_logits = |ids: &[u32]| -> Vec<f32> {
        let mut padded = ids.to_vec();
        padded.resize(POSITIONS, 0);
        compiled
            .write(gpu, input, bytemuck::cast_slice(&padded))
            .unwrap();
        compiled.run(gpu);
        let all = pollster::block_on(compiled.read_f32(gpu, logits)).unwrap();
        all[(ids.len() - 1) * config.vocab_size..ids.len() * config.vocab_size].to_vec()
    };
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32
    };

    let decoder = Decoder::sharing(gpu, &config, base, None, POSITIONS, &compiled).unwrap();
    let reference = golden_json(reference);
    let cases = reference["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let to_ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        let ids = to_ids(&case["ids"]);
        let greedy = to_ids(&case["greedy_next12"]);
        assert!(
            ids.len() + greedy.len() <= POSITIONS,
            "{text}: too long for the test graph"
        );

        let first = next_logits(&ids);
        for (id, want) in to_ids(&case["top10_ids"])
            .iter()
            .zip(case["top10_logits"].as_array().unwrap())
        {
            let want = want.as_f64().unwrap() as f32;
            let got = first[*id as usize];
            assert!(
                (got - want).abs() <= 1e-2,
                "{text:?}: logit of {id} is {got}, reference {want}"
            );
        }
        assert_eq!(argmax(&first), greedy[0], "{text:?}: first greedy token");
        // The greedy continuation through the KV-cache decoder (sharing the weights).
        let mut sampler = Sampler::new(0.0, 1.0, 0);
        let produced = pollster::block_on(generate(
            &decoder,
            gpu,
            &ids,
            greedy.len(),
            &mut sampler,
            &[],
            |_| true,
        ))
        .unwrap();
        assert_eq!(produced, greedy, "{text:?}: greedy tokens");
    }
}
