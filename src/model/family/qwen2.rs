//! Qwen2 and Qwen2.5: the Llama block with frozen biases on q, k and v (never on o), q/k rows
//! not permuted in GGUF files.

use super::{Family, LLAMA};
use crate::model::Architecture;

pub const QWEN2: Family = Family {
    architecture: Architecture::Qwen2,
    model_types: &["qwen2"],
    hf_class: "Qwen2ForCausalLM",
    gguf: "qwen2",
    qkv_bias: true,
    gguf_qk_permuted: false,
    ..LLAMA
};
