//! Qwen3 (q_norm / k_norm: RMSNorm over each head before RoPE; head_dim 48, not hidden /
//! heads) on the golden tiny Qwen3 against transformers 5 and PEFT: base and adapted logits,
//! and one training step (loss, the 28 LoRA gradients, the AdamW update) on the f32 base and,
//! reproducing bitsandbytes' CPU path as for the tiny Llama, on the NF4 base from the
//! bitsandbytes checkpoint and from quantizing on load.

mod common;

use common::golden;
use common::golden_step::{check_golden_logits, check_golden_qlora_steps, check_golden_step};
use webqlora::model::{Architecture, ModelConfig};

#[test]
fn the_config_reads_as_qwen3() {
    let c = ModelConfig::load(&golden("tiny-qwen3/base-f32")).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen3);
    assert!(c.qk_norm && !c.qkv_bias && c.tie_word_embeddings);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 48));
    assert_eq!(c.to_hf_json("float32")["model_type"], "qwen3");
}

#[test]
fn logits_match_transformers_and_peft() {
    check_golden_logits("tiny-qwen3");
}

#[test]
fn a_training_step_matches_peft() {
    check_golden_step("tiny-qwen3/base-f32", "lora", &["--base", "f32"]);
}

#[test]
fn a_qlora_step_matches_bitsandbytes_and_peft() {
    check_golden_qlora_steps("tiny-qwen3");
}
