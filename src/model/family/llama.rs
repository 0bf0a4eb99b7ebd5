//! Llama (1–3.x): the block every other family varies. Its GGUF q/k rows are permuted by
//! llama.cpp for its rotary layout.

use super::{Family, NO_HOOKS};
use crate::model::Architecture;
use crate::ops::swiglu::Activation;

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
    fused: &[],
    hooks: NO_HOOKS,
};
