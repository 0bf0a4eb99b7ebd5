//! Gemma 3 (text) on the golden tiny Gemma 3 against transformers 5 and PEFT: x·(1 + w) norms,
//! four a layer, q/k norms, GELU-tanh, √hidden embeddings, query_pre_attn_scalar, two
//! sliding-window layers (window 8 < 24 tokens) with their own RoPE base and a global one.
//! Base and adapted logits, and one training step (loss, the 42 LoRA gradients, the AdamW
//! update) on the f32 base and, reproducing bitsandbytes' CPU path as for the tiny Llama, on
//! the NF4 base from the bitsandbytes checkpoint and from quantizing on load.

mod common;

use common::golden;
use common::golden_step::{check_golden_logits, check_golden_qlora_steps, check_golden_step};
use webqlora::model::{Architecture, LayerType, ModelConfig};

#[test]
fn the_config_reads_as_gemma3() {
    let c = ModelConfig::load(&golden("tiny-gemma3/base-f32")).unwrap();
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert!(c.qk_norm && !c.qkv_bias && c.tie_word_embeddings);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 1, 32));
    use LayerType::{Full, Sliding};
    assert_eq!(c.layer_types, [Sliding, Sliding, Full]);
    assert_eq!((c.sliding_window, c.rope_local_theta), (Some(8), Some(1e4)));
    assert_eq!((c.rope_theta, c.query_pre_attn_scalar), (1e6, Some(32.0)));
    assert_eq!(c.layer_window(0), Some(8));
    assert_eq!(c.layer_window(2), None);
    assert_eq!(c.embed_scale(), 8.0);
    // Written back (a merged model) it reads the same.
    let json = c.to_hf_json("float32");
    assert_eq!(json["model_type"], "gemma3_text");
    let again = ModelConfig::from_json(&json.to_string(), "written").unwrap();
    assert_eq!(
        again,
        ModelConfig {
            quantization: None,
            ..c
        }
    );
}

#[test]
fn googles_own_config_keys_read_the_same() {
    // Google's Gemma 3 configs: rope_theta (global), rope_local_base_freq, rope_scaling and the
    // sliding-window pattern instead of layer types.
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden("tiny-gemma3/base-f32/config.json")).unwrap(),
    )
    .unwrap();
    let want = ModelConfig::from_json(&json.to_string(), "config.json").unwrap();
    let o = json.as_object_mut().unwrap();
    o.remove("rope_parameters");
    o.remove("layer_types");
    o.insert("rope_theta".into(), 1e6.into());
    o.insert("rope_local_base_freq".into(), 1e4.into());
    o.insert("rope_scaling".into(), serde_json::Value::Null);
    o.insert("sliding_window_pattern".into(), 3.into());
    let got = ModelConfig::from_json(&json.to_string(), "config.json").unwrap();
    assert_eq!(got, want);
    // A linear scaling applies to the global layers only.
    json["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 8.0});
    let scaled = ModelConfig::from_json(&json.to_string(), "config.json").unwrap();
    let (plain, linear) = (want.rope_inv_freq(), scaled.rope_inv_freq());
    assert!(plain
        .iter()
        .zip(&linear)
        .all(|(p, l)| (p / 8.0 - l).abs() < 1e-15));
    assert_eq!(scaled.rope_local_table(4), want.rope_local_table(4));
}

#[test]
fn gemma_options_that_change_the_arithmetic_are_named() {
    let text = std::fs::read_to_string(golden("tiny-gemma3/base-f32/config.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        f(&mut json);
        ModelConfig::from_json(&json.to_string(), "config.json")
            .unwrap_err()
            .to_string()
    };
    let e = edit(&|j| j["final_logit_softcapping"] = 30.0.into());
    assert!(e.contains("'final_logit_softcapping'"), "{e}");
    let e = edit(&|j| j["hidden_activation"] = "silu".into());
    assert!(e.contains("'hidden_activation' is 'silu'"), "{e}");
    let e = edit(&|j| {
        j.as_object_mut().unwrap().remove("sliding_window");
    });
    assert!(e.contains("'sliding_window' is missing"), "{e}");
    let e = edit(&|j| j["head_dim"] = 512.into());
    assert!(e.contains("'head_dim' is 512"), "{e}");
    let e = edit(&|j| j["sliding_window"] = 0.into());
    assert!(e.contains("'sliding_window' is 0"), "{e}");
    let e = edit(&|j| j["layer_types"] = serde_json::json!(["sliding_attention"]));
    assert!(e.contains("'layer_types' lists 1 layers"), "{e}");
    let e = edit(&|j| j["model_type"] = "gemma3".into());
    assert!(e.contains("model_type 'gemma3' is not supported"), "{e}");
}

#[test]
fn logits_match_transformers_and_peft() {
    check_golden_logits("tiny-gemma3");
}

#[test]
fn a_training_step_matches_peft() {
    check_golden_step("tiny-gemma3/base-f32", "lora", &["--base", "f32"]);
}

#[test]
fn a_qlora_step_matches_bitsandbytes_and_peft() {
    check_golden_qlora_steps("tiny-gemma3");
}
