//! SmolLM3 (no rotary embedding on every fourth layer, `no_rope_layers`) on the golden tiny
//! SmolLM3 against transformers 5 and PEFT: base and adapted logits, and one training step
//! (loss, the 28 LoRA gradients, the AdamW update) on the f32 base and, reproducing
//! bitsandbytes' CPU path as for the tiny Llama, on the NF4 base from the bitsandbytes
//! checkpoint and from quantizing on load. The same model with RoPE on every layer is far
//! from the reference: the no-RoPE layer is what makes it SmolLM3.

mod common;

use common::golden;
use common::golden_step::{check_golden_logits, check_golden_qlora_steps, check_golden_step};
use webqlora::model::{Architecture, ModelConfig};

#[test]
fn the_config_reads_as_smollm3() {
    let c = ModelConfig::load(&golden("tiny-smollm3/base-f32")).unwrap();
    assert_eq!(c.architecture, Architecture::SmolLm3);
    assert_eq!(c.no_rope_layers, [3]);
    assert!((0..3).all(|i| c.layer_rope(i)) && !c.layer_rope(3));
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 1, 32));
    let json = c.to_hf_json("float32");
    assert_eq!(json["model_type"], "smollm3");
    assert_eq!(json["no_rope_layers"], serde_json::json!([1, 1, 1, 0]));
    // Written back and read again: the same model.
    let again = ModelConfig::from_json(&json.to_string(), "written").unwrap();
    assert_eq!(again.no_rope_layers, c.no_rope_layers);
    // Without the list, every no_rope_layer_interval-th layer has none, as transformers.
    let mut j = json.clone();
    j.as_object_mut().unwrap().remove("no_rope_layers");
    j["no_rope_layer_interval"] = 2.into();
    assert_eq!(
        ModelConfig::from_json(&j.to_string(), "x")
            .unwrap()
            .no_rope_layers,
        [1, 3]
    );
    j["no_rope_layers"] = serde_json::json!([1, 0]);
    let err = ModelConfig::from_json(&j.to_string(), "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'no_rope_layers' has 2 entries for 4 layers"),
        "{err}"
    );
}

#[test]
fn logits_match_transformers_and_peft() {
    check_golden_logits("tiny-smollm3");
}

#[test]
fn a_training_step_matches_peft() {
    check_golden_step("tiny-smollm3/base-f32", "lora", &["--base", "f32"]);
}

#[test]
fn a_qlora_step_matches_bitsandbytes_and_peft() {
    check_golden_qlora_steps("tiny-smollm3");
}
