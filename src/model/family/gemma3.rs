//! Gemma 3 (text): q/k norms, x·(1 + w) norms, four a layer (sandwich), GELU-tanh, embeddings
//! scaled by √hidden, sliding-window layers with their own RoPE base. Older config.json files
//! give the layer pattern (`sliding_window_pattern`) instead of `layer_types`; GGUF files give
//! neither, and llama.cpp fixes every sixth layer global and the local base at 10,000.

use serde_json::Value;

use super::{Family, Hooks, NO_HOOKS};
use crate::model::{Architecture, LayerType, ModelConfig};
use crate::ops::swiglu::Activation;

pub const GEMMA3: Family = Family {
    architecture: Architecture::Gemma3,
    model_types: &["gemma3_text"],
    hf_class: "Gemma3ForCausalLM",
    gguf: "gemma3",
    qkv_bias: false,
    qk_norm: true,
    norm_plus_one: true,
    sandwich_norms: true,
    activation: Activation::GeluTanh,
    embed_scale: true,
    gguf_qk_permuted: false,
    fused: &[],
    hooks: Hooks {
        read_config,
        gguf_defaults,
        ..NO_HOOKS
    },
};

/// Every `pattern`-th layer full, the others sliding.
fn every(pattern: usize, layers: usize) -> Vec<LayerType> {
    (0..layers)
        .map(|i| match (i + 1) % pattern {
            0 => LayerType::Full,
            _ => LayerType::Sliding,
        })
        .collect()
}

fn read_config(json: &Value, c: &mut ModelConfig) -> Result<(), String> {
    if !json["layer_types"].is_null() {
        return Ok(());
    }
    let mut pattern = 6;
    for key in ["_sliding_window_pattern", "sliding_window_pattern"] {
        match &json[key] {
            Value::Null => {}
            v => pattern = v.as_u64().ok_or(format!("'{key}' is {v}, not a count"))? as usize,
        }
    }
    c.layer_types = every(pattern.max(1), c.num_layers);
    Ok(())
}

fn gguf_defaults(c: &mut ModelConfig) {
    c.layer_types = every(6, c.num_layers);
    c.rope_local_theta = Some(10000.0);
    // Scores by 1/√key_length (query_pre_attn_scalar equals the head size in every released
    // size; llama.cpp writes no key for it), except 27B (62 layers): hidden / heads.
    if c.num_layers == 62 {
        c.query_pre_attn_scalar = Some((c.hidden_size / c.num_heads.max(1)) as f64);
    }
}
