//! What differs between the model families the one transformer block runs (`transformer.rs`,
//! `transformer_train.rs`): one file an architecture, each a `Family` of data (flags for the block,
//! the weights its files fuse) and hooks for its own config.json keys and GGUF defaults; and
//! the registry that finds a family by Hugging Face `model_type` or GGUF
//! `general.architecture`. Adding a family is a file here and its line in `FAMILIES` (and
//! kernels only if it needs a new op).

mod gemma3;
mod llama;
mod mistral;
mod phi3;
mod qwen2;
mod qwen3;
mod smollm3;

pub use gemma3::GEMMA3;
pub use llama::LLAMA;
pub use mistral::MISTRAL;
pub use phi3::PHI3;
pub use qwen2::QWEN2;
pub use qwen3::QWEN3;
pub use smollm3::SMOLLM3;

use super::{Architecture, ModelConfig};
use crate::ops::swiglu::Activation;

/// The seven linear modules' paths within a layer, in the block's order.
pub const LINEAR_PATHS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// Every family, in the order error messages list them.
pub const FAMILIES: &[&Family] = &[&LLAMA, &MISTRAL, &QWEN2, &QWEN3, &GEMMA3, &SMOLLM3, &PHI3];

/// A family's own steps in reading and writing a config, beyond the keys every family shares.
#[derive(Debug)]
pub struct Hooks {
    /// Its own config.json keys, read after the shared ones (an error names the key).
    pub read_config: fn(&serde_json::Value, &mut ModelConfig) -> Result<(), String>,
    /// What llama.cpp fixes for the family rather than writing in GGUF metadata.
    pub gguf_defaults: fn(&mut ModelConfig),
    /// Its own keys in a config.json we write (a merged model's).
    pub write_config: fn(&ModelConfig, &mut serde_json::Value),
}

/// A family with no keys of its own.
pub const NO_HOOKS: Hooks = Hooks {
    read_config: |_, _| Ok(()),
    gguf_defaults: |_| {},
    write_config: |_, _| {},
};

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
    pub hooks: Hooks,
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
        for path in LINEAR_PATHS {
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
