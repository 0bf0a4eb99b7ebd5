//! Adapters that do not fit the model are refused, as PEFT refuses them: target modules the
//! model does not have, tensors for layers or modules it lacks, missing or non-finite
//! tensors. Never an adapter silently ignored or a run on nothing trainable.

mod common;

use common::cli::{fails, ok, path, pattern_jsonl, tiny_llama, webqlora};
use common::{golden, temp_dir};
use webqlora::lora::peft::Adapter;

fn golden_adapter() -> Adapter {
    Adapter::load(&golden("tiny-llama/adapter")).unwrap()
}

/// `eval` and `train --adapter` with `adapter` (saved under `dir/name`) must both fail with
/// `expected` in the error.
fn refused(dir: &std::path::Path, name: &str, expected: &str) {
    std::fs::write(dir.join("d.jsonl"), pattern_jsonl(4, 8)).unwrap();
    let model = tiny_llama();
    let adapter = dir.join(name);
    let err = fails(webqlora(&[
        "eval",
        "--model",
        path(&model),
        "--base",
        "f32",
        "--adapter",
        path(&adapter),
        "--data",
        path(&dir.join("d.jsonl")),
    ]));
    assert!(err.contains(expected), "eval with {name}: {err}");
    let out = dir.join(format!("out-{name}"));
    let err = fails(webqlora(&[
        "train",
        "--model",
        path(&model),
        "--base",
        "f32",
        "--adapter",
        path(&adapter),
        "--data",
        path(&dir.join("d.jsonl")),
        "--output",
        path(&out),
        "--steps",
        "1",
        "--quiet",
    ]));
    assert!(err.contains(expected), "train with {name}: {err}");
    assert!(!out.exists());
}

#[test]
fn target_modules_the_model_lacks_are_refused() {
    let dir = temp_dir("adapter-targets");
    let mut a = golden_adapter();
    a.config.target_modules = vec!["query_key_value".into()];
    a.save(&dir.join("foreign")).unwrap();
    refused(&dir, "foreign", "'query_key_value' matches no module");

    // An empty list trains nothing.
    let text = std::fs::read_to_string(dir.join("foreign/adapter_config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["target_modules"] = serde_json::json!([]);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty/adapter_config.json"), config.to_string()).unwrap();
    std::fs::copy(
        dir.join("foreign/adapter_model.safetensors"),
        dir.join("empty/adapter_model.safetensors"),
    )
    .unwrap();
    refused(&dir, "empty", "'target_modules' is empty");
}

#[test]
fn tensors_for_layers_or_modules_the_model_lacks_are_refused() {
    let dir = temp_dir("adapter-tensors");
    // A layer the two-layer model does not have (an adapter of a deeper model).
    let mut a = golden_adapter();
    let (name, t) = a
        .tensors
        .iter()
        .find(|(n, _)| n.contains("layers.1.") && n.contains("q_proj.lora_A"))
        .map(|(n, t)| (n.clone(), t.clone()))
        .unwrap();
    a.tensors.insert(name.replace("layers.1.", "layers.7."), t);
    a.save(&dir.join("deeper")).unwrap();
    refused(&dir, "deeper", "layers.7.self_attn.q_proj.lora_A");

    // A module the adapter's targets do not name.
    let mut a = golden_adapter();
    a.config.target_modules.retain(|m| m != "v_proj");
    a.save(&dir.join("untargeted")).unwrap();
    refused(&dir, "untargeted", "v_proj.lora_A");

    // A targeted module without its tensors.
    let mut a = golden_adapter();
    a.tensors
        .retain(|n, _| !n.contains("layers.0.mlp.up_proj.lora_B"));
    a.save(&dir.join("incomplete")).unwrap();
    refused(&dir, "incomplete", "layers.0.mlp.up_proj.lora_B");
}

#[test]
fn non_finite_adapter_values_and_bad_alpha_are_refused() {
    let dir = temp_dir("adapter-nan");
    let mut a = golden_adapter();
    let name = a.tensors.keys().next().unwrap().clone();
    a.tensors.get_mut(&name).unwrap().1[3] = f32::NAN;
    a.save(&dir.join("nan")).unwrap();
    refused(&dir, "nan", &name);

    let mut a = golden_adapter();
    a.config.alpha = -16.0;
    a.save(&dir.join("alpha")).unwrap();
    refused(&dir, "alpha", "lora_alpha");
}

#[test]
fn the_golden_adapter_still_loads() {
    // The checks above refuse nothing PEFT writes.
    let dir = temp_dir("adapter-ok");
    std::fs::write(dir.join("d.jsonl"), pattern_jsonl(4, 8)).unwrap();
    ok(webqlora(&[
        "eval",
        "--model",
        path(&tiny_llama()),
        "--base",
        "f32",
        "--adapter",
        path(&golden("tiny-llama/adapter")),
        "--data",
        path(&dir.join("d.jsonl")),
    ]));
}

#[test]
fn eval_whose_loss_is_not_finite_fails() {
    // Finite values too large for f32 products: the logits overflow.
    let dir = temp_dir("adapter-overflow");
    let mut a = golden_adapter();
    for (_, values) in a.tensors.values_mut() {
        values.iter_mut().for_each(|v| *v = 1e30);
    }
    a.save(&dir.join("huge")).unwrap();
    std::fs::write(dir.join("d.jsonl"), pattern_jsonl(4, 8)).unwrap();
    let err = fails(webqlora(&[
        "eval",
        "--model",
        path(&tiny_llama()),
        "--base",
        "f32",
        "--adapter",
        path(&dir.join("huge")),
        "--data",
        path(&dir.join("d.jsonl")),
        "--json",
    ]));
    assert!(err.contains("non-finite logits"), "{err}");
}

/// A known key of the wrong type or range, and PEFT options we do not implement, are refused
/// naming the key and the file: never defaulted, ignored or half-applied.
#[test]
fn wrong_types_and_unimplemented_peft_options_are_refused_by_name() {
    let dir = temp_dir("adapter-json");
    golden_adapter().save(&dir.join("base")).unwrap();
    let text = std::fs::read_to_string(dir.join("base/adapter_config.json")).unwrap();
    let cases: [(&str, serde_json::Value); 10] = [
        ("lora_alpha", "16".into()),
        ("use_rslora", "yes".into()),
        ("r", 8.5.into()),
        ("target_modules", serde_json::json!([1, 2])),
        ("layers_to_transform", serde_json::json!([0])),
        ("exclude_modules", serde_json::json!(["q_proj"])),
        ("rank_pattern", serde_json::json!({"q_proj": 4})),
        ("alpha_pattern", serde_json::json!({"q_proj": 4})),
        ("lora_dropout", 1.0.into()),
        ("lora_dropout", (-0.1).into()),
    ];
    for (i, (key, value)) in cases.into_iter().enumerate() {
        let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
        config[key] = value;
        let name = format!("{key}-{i}");
        std::fs::create_dir_all(dir.join(&name)).unwrap();
        std::fs::write(
            dir.join(&name).join("adapter_config.json"),
            config.to_string(),
        )
        .unwrap();
        std::fs::copy(
            dir.join("base/adapter_model.safetensors"),
            dir.join(&name).join("adapter_model.safetensors"),
        )
        .unwrap();
        refused(&dir, &name, &format!("'{key}"));
        let err = Adapter::load(&dir.join(&name)).unwrap_err().to_string();
        assert!(err.contains("adapter_config.json"), "{err}");
    }
    // PEFT's empty defaults and keys of its own we do not read load as before.
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["rank_pattern"] = serde_json::json!({});
    config["layers_to_transform"] = serde_json::Value::Null;
    config["task_type"] = "CAUSAL_LM".into();
    config["megatron_config"] = serde_json::Value::Null;
    let path = dir.join("base/adapter_config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    Adapter::load(&dir.join("base")).unwrap();
}
