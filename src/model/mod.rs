//! Models: the Hugging Face config, weight files, and (later) the Llama graph.

pub mod config;
pub mod llama;
pub mod llama_train;
#[cfg(not(target_arch = "wasm32"))]
pub mod load;
#[cfg(not(target_arch = "wasm32"))]
pub mod safetensors_files;

pub use config::{Architecture, BnbQuantization, ModelConfig};

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
