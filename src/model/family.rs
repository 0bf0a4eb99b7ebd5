//! What differs between the model families the one transformer block runs (`llama.rs`,
//! `llama_train.rs`): one `Family` of data each, and the registry that finds a family by
//! Hugging Face `model_type` or GGUF `general.architecture`. Adding a family is a constant
//! here and its line in `FAMILIES` (and kernels only if it needs a new op); its config keys
//! are read in `config.rs` / `gguf.rs` where they are not the Llama ones.

use super::Architecture;
use crate::ops::swiglu::Activation;

/// One model family's block, as data.
#[derive(Debug)]
pub struct Family {
    pub architecture: Architecture,
    /// `model_type` values of config.json; the first is written when we write one.
    pub model_types: &'static [&'static str],
    /// The transformers class written into a config.json we write.
    pub hf_class: &'static str,
    /// `general.architecture` of its GGUF files.
    pub gguf: &'static str,
    /// Frozen biases on q, k and v always (qwen2); other families follow `attention_bias`.
    pub qkv_bias: bool,
    /// RMSNorm over each query and key head before RoPE (`self_attn.q_norm` / `k_norm`).
    pub qk_norm: bool,
    /// RMSNorm weights are offsets from one, x·(1 + w) (Gemma). The graph holds 1 + w, as
    /// Gemma's GGUF files store it, so one RMSNorm kernel serves every family.
    pub norm_plus_one: bool,
    /// Norms on the attention and MLP outputs too, before each residual add (Gemma's
    /// post_attention_layernorm and post_feedforward_layernorm); the MLP's input norm is then
    /// `pre_feedforward_layernorm`.
    pub sandwich_norms: bool,
    pub activation: Activation,
    /// Embeddings multiplied by √hidden_size (in f32, as transformers does) before layer 0.
    pub embed_scale: bool,
    /// llama.cpp permutes q and k rows for this family's rotary layout in GGUF files.
    pub gguf_qk_permuted: bool,
}

pub const LLAMA: Family = Family {
    architecture: Architecture::Llama,
    model_types: &["llama"],
    hf_class: "LlamaForCausalLM",
    gguf: "llama",
    qkv_bias: false,
    qk_norm: false,
    norm_plus_one: false,
    sandwich_norms: false,
    activation: Activation::Silu,
    embed_scale: false,
    gguf_qk_permuted: true,
};

pub const MISTRAL: Family = Family {
    architecture: Architecture::Mistral,
    model_types: &["mistral"],
    hf_class: "MistralForCausalLM",
    // llama.cpp writes Mistral as llama.
    gguf: "llama",
    ..LLAMA
};

pub const QWEN2: Family = Family {
    architecture: Architecture::Qwen2,
    model_types: &["qwen2"],
    hf_class: "Qwen2ForCausalLM",
    gguf: "qwen2",
    qkv_bias: true,
    gguf_qk_permuted: false,
    ..LLAMA
};

pub const QWEN3: Family = Family {
    architecture: Architecture::Qwen3,
    model_types: &["qwen3"],
    hf_class: "Qwen3ForCausalLM",
    gguf: "qwen3",
    qk_norm: true,
    gguf_qk_permuted: false,
    ..LLAMA
};

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
};

/// SmolLM3: the Llama block, with no rotary embedding on the layers `no_rope_layers` names
/// (config.rs; in GGUF files every fourth, as llama.cpp fixes it).
pub const SMOLLM3: Family = Family {
    architecture: Architecture::SmolLm3,
    model_types: &["smollm3"],
    hf_class: "SmolLM3ForCausalLM",
    gguf: "smollm3",
    ..LLAMA
};

/// Every family, in the order error messages list them.
pub const FAMILIES: &[&Family] = &[&LLAMA, &MISTRAL, &QWEN2, &QWEN3, &GEMMA3, &SMOLLM3];

/// The family of a config.json's `model_type`.
pub fn by_model_type(model_type: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.model_types.contains(&model_type))
}

/// The family of a GGUF's `general.architecture` (llama for Mistral's files too).
pub fn by_gguf(architecture: &str) -> Option<&'static Family> {
    FAMILIES.iter().copied().find(|f| f.gguf == architecture)
}

/// "llama, mistral, …" for error messages.
pub fn model_types() -> String {
    let all: Vec<&str> = FAMILIES
        .iter()
        .flat_map(|f| f.model_types)
        .copied()
        .collect();
    all.join(", ")
}

/// The GGUF architectures, without repeats, for error messages.
pub fn gguf_architectures() -> String {
    let mut all: Vec<&str> = FAMILIES.iter().map(|f| f.gguf).collect();
    all.dedup();
    all.join(", ")
}

impl Architecture {
    pub fn family(self) -> &'static Family {
        FAMILIES
            .iter()
            .copied()
            .find(|f| f.architecture == self)
            .expect("every architecture has a family")
    }
}
