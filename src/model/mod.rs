//! Models: the Hugging Face config, weight files (safetensors, GGUF), the transformer graph for
//! training, evaluation and decoding, and loading weights into a compiled graph.

pub mod config;
pub mod family;
pub mod file_bytes;
pub mod fused;
pub mod generate;
pub mod gguf;
pub mod gguf_write;
pub mod load;
pub mod params;
pub mod random;
pub mod safetensors_files;
pub mod transformer;
pub mod transformer_decode;
pub mod transformer_train;

pub use config::{Architecture, BnbQuantization, LayerType, ModelConfig, RopeScaling};

/// Where base weights come from (a safetensors folder, a GGUF file), by Hugging Face name and
/// in Hugging Face layout.
pub trait WeightSource {
    fn contains(&self, name: &str) -> bool;
    /// The tensor as f32 values, checked against `shape`.
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError>;
    /// The weight as a bitsandbytes 4-bit checkpoint stores it, if this source holds one.
    fn stored_nf4(&self, _name: &str) -> Result<Option<crate::quant::nf4::Nf4Tensor>, ModelError> {
        Ok(None)
    }
    /// The weight of Hugging Face `shape` as a GGUF file stores it, whole ggml blocks in
    /// Hugging Face row order (for `BaseFormat::Gguf`); sources without block codes say so.
    fn stored_blocks(
        &self,
        name: &str,
        _shape: &[usize],
    ) -> Result<(crate::quant::ggml::GgmlType, Vec<u8>), ModelError> {
        Err(ModelError::Invalid {
            path: format!("tensor '{name}'"),
            msg: "this model holds no GGUF block codes (--base gguf needs a GGUF file)".into(),
        })
    }
    /// The GGUF file this source is, if it is one (a merged GGUF copies its metadata).
    fn as_gguf(&self) -> Option<&gguf::GgufFile> {
        None
    }
}

/// Every way a model folder can be unusable, each naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
    #[error("tensor '{tensor}' not found in {path}")]
    MissingTensor { path: String, tensor: String },
    #[error("{path}: tensor '{tensor}' is {found}, expected {expected}")]
    BadTensor {
        path: String,
        tensor: String,
        expected: String,
        found: String,
    },
}

/// `values` unchanged, or an error naming the tensor and its first NaN or infinity: a corrupt
/// or overflowed checkpoint must not be quantized (NF4 would hide a NaN behind its block's
/// absmax) or trained on.
pub fn finite(name: &str, values: Vec<f32>) -> Result<Vec<f32>, ModelError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(values),
        Some(i) => Err(ModelError::Invalid {
            path: format!("tensor '{name}'"),
            msg: format!(
                "value {i} of {} is {} (the weights are corrupt or overflowed)",
                values.len(),
                values[i]
            ),
        }),
    }
}
