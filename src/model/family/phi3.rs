//! Phi-3, Phi-3.5 and Phi-4-mini: the Llama block, its q|k|v and gate|up projections each one
//! weight in the files (transformers' `Phi3ForCausalLM`: `qkv_proj`, and `gate_up_proj` of
//! gate rows then up rows; GGUF `attn_qkv` and `ffn_up`) and one LoRA module in PEFT
//! adapters (`model/fused.rs`). LongRoPE is read with the other RoPE scalings (config.json in config.rs, a GGUF's
//! `rope_factors_*` tensors in gguf.rs).

use super::{Family, FusedLinear, LLAMA};
use crate::model::Architecture;

pub const PHI3: Family = Family {
    architecture: Architecture::Phi3,
    model_types: &["phi3"],
    hf_class: "Phi3ForCausalLM",
    gguf: "phi3",
    gguf_qk_permuted: false,
    fused: &[
        FusedLinear {
            module: "self_attn.qkv_proj",
            parts: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        },
        FusedLinear {
            module: "mlp.gate_up_proj",
            parts: &["mlp.gate_proj", "mlp.up_proj"],
        },
    ],
    ..LLAMA
};
