//! The golden tiny Llama written as GGUF files (f32, block codes, other metadata), for the
//! GGUF tests and the crafted-file faults.

use super::{golden, Golden};
use webqlora::model::gguf::permute_rows;
use webqlora::model::gguf_write::{GgufValue, GgufWriter};
use webqlora::model::ModelConfig;
use webqlora::quant::ggml::GgmlType;

#[derive(Clone)]
pub enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
}

/// A GGUF v3 file: metadata, then tensors given in Hugging Face shape order.
pub fn write_gguf(
    path: &std::path::Path,
    meta: &[(&str, Meta)],
    tensors: &[(String, Vec<usize>, u32, Vec<u8>)],
) {
    let mut w = GgufWriter::new();
    for (key, value) in meta {
        let v = match value {
            Meta::U32(v) => GgufValue::U32(*v),
            Meta::F32(v) => GgufValue::F32(*v),
            Meta::Str(s) => GgufValue::Str(s.to_string()),
        };
        w.meta(key, v);
    }
    for (name, shape, ty, bytes) in tensors {
        let ty = GgmlType::from_id(*ty).unwrap();
        w.tensor_encoded(name, shape, ty, bytes.clone());
    }
    std::fs::write(path, w.to_bytes()).unwrap();
}

/// The golden tiny Llama as a GGUF file of f32 tensors, q/k permuted as llama.cpp stores them.
pub fn tiny_llama_gguf(path: &std::path::Path) {
    tiny_llama_gguf_with(path, &[]);
}

/// The tiny Llama as a GGUF file, with the metadata in `overrides` replaced.
pub fn tiny_llama_gguf_with(path: &std::path::Path, overrides: &[(&str, f32)]) {
    tiny_llama_gguf_full(path, overrides, &[], None);
}

/// The tiny Llama with RoPE frequency divisors (`rope_freqs.weight`, when not empty) and a
/// `llama.rope.scaling.type`.
pub fn tiny_llama_gguf_extra(
    path: &std::path::Path,
    divisors: &[f32],
    scaling: Option<&'static str>,
) {
    tiny_llama_gguf_full(path, &[], divisors, scaling);
}

pub fn tiny_llama_gguf_full(
    path: &std::path::Path,
    overrides: &[(&str, f32)],
    divisors: &[f32],
    scaling: Option<&'static str>,
) {
    tiny_llama_gguf_blocks(path, overrides, divisors, scaling, &mut |_, _| None);
}

/// The tiny Llama as GGUF, with the weights for which `blocks(name, values)` gives
/// (type, bytes) stored as those blocks (`values` in the file's row order).
#[allow(clippy::type_complexity)]
pub fn tiny_llama_gguf_blocks(
    path: &std::path::Path,
    overrides: &[(&str, f32)],
    divisors: &[f32],
    scaling: Option<&'static str>,
    blocks: &mut dyn FnMut(&str, &[f32]) -> Option<(GgmlType, Vec<u8>)>,
) {
    let config = ModelConfig::load(&golden("tiny-llama/base-f32")).unwrap();
    let weights = Golden::open("tiny-llama/base-f32/model.safetensors");
    let mut tensors = Vec::new();
    for name in weights.names() {
        let shape = weights.shape(&name);
        let mut values = weights.f32(&name);
        if name.ends_with("q_proj.weight") {
            values = permute_rows(&values, config.num_heads, shape[1]);
        } else if name.ends_with("k_proj.weight") {
            values = permute_rows(&values, config.num_kv_heads, shape[1]);
        }
        let gguf = webqlora::model::gguf::gguf_name(&name).unwrap();
        match blocks(&name, &values) {
            Some((ty, bytes)) => tensors.push((gguf, shape, ty.id(), bytes)),
            None => tensors.push((gguf, shape, 0, bytemuck::cast_slice(&values).to_vec())),
        }
    }
    let meta = [
        ("general.architecture", Meta::Str("llama")),
        (
            "llama.embedding_length",
            Meta::U32(config.hidden_size as u32),
        ),
        (
            "llama.feed_forward_length",
            Meta::U32(config.intermediate_size as u32),
        ),
        ("llama.block_count", Meta::U32(config.num_layers as u32)),
        (
            "llama.attention.head_count",
            Meta::U32(config.num_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            Meta::U32(config.num_kv_heads as u32),
        ),
        (
            "llama.context_length",
            Meta::U32(config.max_position_embeddings as u32),
        ),
        ("llama.rope.freq_base", Meta::F32(config.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Meta::F32(config.rms_norm_eps as f32),
        ),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
    ];
    let mut meta: Vec<(&str, Meta)> = meta
        .map(
            |(key, value)| match overrides.iter().find(|(k, _)| *k == key) {
                Some(&(_, v)) if matches!(value, Meta::F32(_)) => (key, Meta::F32(v)),
                Some(&(_, v)) => (key, Meta::U32(v as u32)),
                None => (key, value),
            },
        )
        .into();
    if let Some(kind) = scaling {
        meta.push(("llama.rope.scaling.type", Meta::Str(kind)));
    }
    if !divisors.is_empty() {
        let bytes = bytemuck::cast_slice(divisors).to_vec();
        tensors.push(("rope_freqs.weight".into(), vec![divisors.len()], 0, bytes));
    }
    write_gguf(path, &meta, &tensors);
}
