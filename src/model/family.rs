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
    /// Linears its files (and PEFT adapters) hold fused, each stacking the rows of modules
    /// the block runs apart (Phi-3's qkv_proj and gate_up_proj).
    pub fused: &'static [FusedLinear],
}

/// A weight stored as the rows of `parts` stacked in order, with one LoRA A and B over all of
/// them where an adapter targets it (PEFT's view of the fused module). The block declares the
/// parts (`model/fused.rs` splits the file's rows; the parts share the adapter's A and hold
/// B's rows), so one kernel path serves fused and separate files alike.
#[derive(Debug)]
pub struct FusedLinear {
    /// The module's path within a layer, in the files and the adapter (`self_attn.qkv_proj`).
    pub module: &'static str,
    /// The modules it stacks, in row order (`self_attn.q_proj`, …).
    pub parts: &'static [&'static str],
}

impl FusedLinear {
    /// The last name of the module path (`qkv_proj`): what `target_modules` lists.
    pub fn short(&self) -> &'static str {
        short(self.module)
    }
}

/// The last name of a module path.
fn short(path: &'static str) -> &'static str {
    path.rsplit('.').next().unwrap_or(path)
}

impl Family {
    /// The fused linear that holds the module at `path` within a layer (`self_attn.q_proj`).
    pub fn fused_holding(&self, path: &str) -> Option<&'static FusedLinear> {
        self.fused.iter().find(|f| f.parts.contains(&path))
    }

    /// The linear modules an adapter can target, in `target_modules` names: the seven of the
    /// block, with the parts of a fused module named by it.
    pub fn lora_modules(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for path in crate::lora::LINEAR_PATHS {
            let name = match self.fused_holding(path) {
                Some(f) => f.short(),
                None => short(path),
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
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
    fused: &[],
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
    fused: &[],
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

/// Phi-3, Phi-3.5 and Phi-4-mini: the Llama block, its q|k|v and gate|up projections each
/// one weight in the files (transformers' `Phi3ForCausalLM`, GGUF `attn_qkv` and a `ffn_up`
/// of gate rows then up rows) and one LoRA module in PEFT adapters.
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

/// Every family, in the order error messages list them.
pub const FAMILIES: &[&Family] = &[&LLAMA, &MISTRAL, &QWEN2, &QWEN3, &GEMMA3, &SMOLLM3, &PHI3];

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
