//! Qwen3 (q_norm / k_norm: RMSNorm over each head before RoPE; head_dim 48, not hidden /
//! heads) on the golden tiny Qwen3 against transformers 5 and PEFT: base and adapted logits,
//! and one training step (loss, the 28 LoRA gradients, the AdamW update) on the f32 base and,
//! reproducing bitsandbytes' CPU path as for the tiny Llama, on the NF4 base from the
//! bitsandbytes checkpoint and from quantizing on load.

mod common;

use common::golden_step::check_golden_step;
use common::{family_logits, golden, rel_err, Golden};
use webqlora::lora::peft::Adapter;
use webqlora::model::llama::BaseFormat;
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
    let expected = Golden::open("tiny-qwen3/expected.safetensors");
    let dir = golden("tiny-qwen3/base-f32");
    let base = family_logits("tiny-qwen3", &dir, BaseFormat::F32, None);
    let e = rel_err(&base, &expected.f32("logits_base"));
    assert!(e < 1e-4, "base logits: {e}");
    let adapter = Adapter::load(&golden("tiny-qwen3/adapter")).unwrap();
    let lora = family_logits("tiny-qwen3", &dir, BaseFormat::F32, Some(&adapter));
    let e = rel_err(&lora, &expected.f32("logits_lora"));
    assert!(e < 1e-4, "adapted logits: {e}");
    assert!(
        rel_err(&base, &lora) > 1e-3,
        "the adapter changes the logits"
    );
}

#[test]
fn a_training_step_matches_peft() {
    check_golden_step("tiny-qwen3/base-f32", "lora", &["--base", "f32"]);
}

#[test]
fn a_qlora_step_matches_bitsandbytes_and_peft() {
    let bnb_cpu = ["--base", "nf4", "--bnb-cpu-bf16", "--bnb-cpu-repacked"];
    check_golden_step("tiny-qwen3/base-bnb-nf4", "qlora", &bnb_cpu);
    check_golden_step("tiny-qwen3/base-f32", "qlora", &bnb_cpu);
}
