//! Qwen3: the Llama block with q_norm / k_norm (RMSNorm over each head before RoPE), no
//! biases, head_dim given apart from hidden / heads (GGUF `attention.key_length`).

use super::{Family, LLAMA};
use crate::model::Architecture;

pub const QWEN3: Family = Family {
    architecture: Architecture::Qwen3,
    model_types: &["qwen3"],
    hf_class: "Qwen3ForCausalLM",
    gguf: "qwen3",
    qk_norm: true,
    gguf_qk_permuted: false,
    ..LLAMA
};
