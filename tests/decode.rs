//! Decoding with the KV cache gives, token by token, the logits of the full causal forward
//! on the golden tiny Llama, Qwen3, Gemma 3, SmolLM3 and Phi-3 (f32 and NF4 base, with and without the PEFT
//! adapter; f32 and f16 caches).

mod common;

use common::{golden, Golden, Tol};
use webqlora::graph::DType;
use webqlora::lora::peft::Adapter;
use webqlora::model::load::upload_model;
use webqlora::model::safetensors_files::SafetensorsFiles;
use webqlora::model::transformer::BaseFormat;
use webqlora::model::transformer_decode::Decoder;
use webqlora::model::ModelConfig;

#[test]
fn cached_decoding_equals_the_full_forward() {
    // The decoder runs the training block: Qwen3's q/k norms, Gemma's output norms, sliding
    // windows (8 of the 24 positions) and per-layer RoPE tables hold there too.
    for family in [
        "tiny-llama",
        "tiny-qwen3",
        "tiny-gemma3",
        "tiny-smollm3",
        "tiny-phi3",
    ] {
        cached_decoding_equals_the_full_forward_of(family);
    }
}

fn cached_decoding_equals_the_full_forward_of(family: &str) {
    let expected = Golden::open(&format!("{family}/expected.safetensors"));
    let (_, shape, bytes) = expected.raw("input_ids");
    let ids: Vec<u32> = bytemuck::pod_collect_to_vec::<u8, i64>(bytes)
        .iter()
        .map(|&i| i as u32)
        .collect();
    let seq = shape[1];
    let dir = golden(&format!("{family}/base-f32"));
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let adapter = Adapter::load(&golden(&format!("{family}/adapter"))).unwrap();
    let gpu = common::gpu();
    // An f16 cache rounds K and V to 11 significant bits: the logits move by about 3e-4.
    let mut cases = vec![
        (BaseFormat::F32, false, DType::F32, 1e-4),
        (BaseFormat::F32, true, DType::F32, 1e-4),
        (BaseFormat::Nf4 { blocksize: 64 }, true, DType::F32, 1e-4),
    ];
    if gpu.has(wgpu::Features::SHADER_F16) {
        cases.push((BaseFormat::Nf4 { blocksize: 64 }, true, DType::F16, 2e-3));
    }
    for (base, with_adapter, cache, tolerance) in cases {
        let adapter = with_adapter.then_some(&adapter);
        let full = common::family_logits(family, &dir, base, adapter);
        let decoder = Decoder::with_cache(
            gpu,
            &config,
            base,
            adapter.map(|a| &a.config),
            seq + 3,
            cache,
        )
        .unwrap();
        decoder.compiled.poison(gpu, common::POISON);
        let missing = upload_model(
            gpu,
            &decoder.compiled,
            &decoder.model,
            &files,
            base,
            adapter,
        )
        .unwrap();
        assert!(
            missing.iter().all(|n| n.starts_with("kv_cache.")),
            "{missing:?}"
        );
        let v = config.vocab_size;
        // Two sequences of the batch, one after the other in the same cache: positions restart.
        for row in 0..2 {
            for pos in 0..seq {
                let want = pos % 3 == 2 || pos == seq - 1;
                let got =
                    pollster::block_on(decoder.feed(gpu, ids[row * seq + pos], pos, want)).unwrap();
                if let Some(logits) = got {
                    let at = (row * seq + pos) * v;
                    Tol::rel(tolerance).check(format!("{family} {base:?} adapter {with_adapter} {cache} cache, row {row} pos {pos}"), &logits, &full[at..at + v]);
                }
            }
        }
        let past = pollster::block_on(decoder.feed(gpu, 1, seq + 3, true));
        assert!(past.unwrap_err().to_string().contains("past the KV cache"));
    }
}

/// `webqlora generate` prints the prompt and then exactly the library's greedy continuation.
#[test]
fn generate_cli_streams_the_greedy_continuation() {
    use webqlora::model::generate::{generate, Sampler};
    use webqlora::tokenizer::Tokenizer;
    let dir = common::tiny_llama_with_tokenizer("generate-cli");
    let config = ModelConfig::load(&dir).unwrap();
    let tok = Tokenizer::from_dir(&dir, &config).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let prompt = tok.encode("Hello", true).unwrap();
    let gpu = common::gpu();
    let decoder = Decoder::new(gpu, &config, BaseFormat::F32, None, prompt.len() + 12).unwrap();
    upload_model(
        gpu,
        &decoder.compiled,
        &decoder.model,
        &files,
        BaseFormat::F32,
        None,
    )
    .unwrap();
    let mut sampler = Sampler::new(0.0, 1.0, 0);
    let ids = pollster::block_on(generate(
        &decoder,
        gpu,
        &prompt,
        12,
        &mut sampler,
        &[],
        |_| true,
    ))
    .unwrap();
    assert_eq!(ids.len(), 12);
    let want = format!("Hello{}\n", tok.decode(&ids, true).unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args([
            "generate",
            "--base",
            "f32",
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "12",
        ])
        .arg("--model")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}
