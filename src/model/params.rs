//! What each parameter of a model is, as `Transformer::declare` declares it: loading
//! (`model::load`) matches on these kinds, never on the shape of a name.

use crate::graph::TensorId;
use crate::quant::ggml::GgmlType;

/// A parameter's kind, with the names the files and adapters know it by.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// A weight the model's files hold as `file` (its Hugging Face name), read as f32 (f16
    /// for large tables); `rows`: the graph holds rows (first, count) of it (a table split
    /// across bindings); `plus_one`: a norm weight Gemma computes as x·(1 + w), held as 1 + w.
    Weight {
        file: String,
        rows: Option<(usize, usize)>,
        plus_one: bool,
    },
    /// A linear weight in NF4 codes (bitsandbytes' as stored, else quantized on load), with
    /// the param of its absmax values.
    Nf4 { file: String, absmax: TensorId },
    /// A linear weight as the GGUF file's own block codes.
    Blocks { file: String, ty: GgmlType },
    /// RoPE's (cos, sin) table (`ModelConfig::rope_table`), or the sliding layers' own.
    RopeTable { local: bool },
    /// An adapter tensor under its PEFT name; `rows`: the graph holds rows (first, count) of
    /// it (a fused module's B, shared out to its parts).
    Adapter {
        peft: String,
        rows: Option<(usize, usize)>,
    },
    /// A DoRA magnitude of the linear weight `weight` (a fresh one is its row norms).
    Magnitude { peft: String, weight: String },
    /// ‖W_j‖² of the linear weight `weight` [out, in] as the GPU holds it (DoRA's norm).
    BaseNorms2 { weight: String, shape: [usize; 2] },
}

impl ParamKind {
    /// The adapter tensor this param holds (all or rows of), if it is one.
    pub fn adapter_name(&self) -> Option<&str> {
        match self {
            ParamKind::Adapter { peft, .. } | ParamKind::Magnitude { peft, .. } => Some(peft),
            _ => None,
        }
    }
}
