//! Mistral: the Llama block (its `sliding_window` is read; layers attend fully unless layer
//! types name sliding ones). llama.cpp writes its GGUF files as llama.

use super::{Family, LLAMA};
use crate::model::Architecture;

pub const MISTRAL: Family = Family {
    architecture: Architecture::Mistral,
    model_types: &["mistral"],
    hf_class: "MistralForCausalLM",
    gguf: "llama",
    ..LLAMA
};
