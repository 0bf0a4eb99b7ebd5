//! Training: one step on a batch (`dump_step`), later the trainer loop.

#[cfg(not(target_arch = "wasm32"))]
pub mod dump_step;
