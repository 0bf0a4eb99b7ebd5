//! Quantized weight formats on the CPU: bitsandbytes NF4 (the training format of every base
//! linear layer) and the GGUF block formats models arrive in.

pub mod bnb_cpu;
pub mod dynamic_map;
pub mod ggml;
pub mod nf4;
