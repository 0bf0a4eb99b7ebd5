//! webqlora: QLoRA fine-tuning of small language models on WebGPU.
//!
//! WGSL compute shaders (`shaders/`) do the numeric work; `graph` plans and runs static graphs
//! of them on a `gpu::Gpu`; `ops` describes each kernel and holds its CPU reference.

pub mod data;
pub mod gpu;
pub mod graph;
#[cfg(not(target_arch = "wasm32"))]
pub mod hub;
#[cfg(not(target_arch = "wasm32"))]
pub mod io;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod ops;
pub mod quant;
pub mod shaders;
pub mod tokenizer;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;
