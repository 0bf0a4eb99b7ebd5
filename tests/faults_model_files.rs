//! Model files that cannot work are named at load, by file and key or tensor: config values
//! no model has, NaN or infinite weights (which NF4 quantization would otherwise hide),
//! missing weights, tokenizer metadata of the wrong type, chat templates without end.

mod common;

use common::cli::webqlora;
use common::cli::{fails, path, pattern_jsonl, tiny_llama_with_config, tiny_llama_with_tensor};
use common::temp_dir;
use webqlora::model::gguf::MetaValue;
use webqlora::tokenizer::{Message, Tokenizer};

fn train(model: &std::path::Path, dir: &std::path::Path, base: &str) -> std::process::Output {
    std::fs::write(dir.join("d.jsonl"), pattern_jsonl(4, 8)).unwrap();
    webqlora(&[
        "train",
        "--model",
        path(model),
        "--base",
        base,
        "--data",
        path(&dir.join("d.jsonl")),
        "--output",
        path(&dir.join("out")),
        "--steps",
        "1",
        "--quiet",
    ])
}

#[test]
fn config_values_no_model_can_have_name_their_key() {
    let dir = temp_dir("model-config");
    let cases: &[(&str, serde_json::Value)] = &[
        ("hidden_size", 0.into()),
        ("num_hidden_layers", 0.into()),
        ("intermediate_size", 0.into()),
        ("vocab_size", 0.into()),
        ("head_dim", 0.into()),
        ("head_dim", 15.into()),
        ("rms_norm_eps", (-1e-5).into()),
        ("rms_norm_eps", 0.into()),
        ("num_attention_heads", 3.into()),
        ("num_attention_heads", 0.into()),
        ("num_key_value_heads", 0.into()),
        ("max_position_embeddings", 0.into()),
        ("hidden_size", (-64).into()),
        ("bos_token_id", 256.into()),
        ("eos_token_id", serde_json::json!([2, 9999])),
    ];
    for (i, (key, value)) in cases.iter().enumerate() {
        let model = tiny_llama_with_config(&dir.join(format!("m{i}")), |c| {
            c[*key] = value.clone();
        });
        let err = fails(train(&model, &dir, "f32"));
        assert!(err.contains(&format!("'{key}'")), "{key} = {value}: {err}");
        assert!(err.contains("config.json"), "{key} = {value}: {err}");
        assert!(!dir.join("out").exists());
    }
    // rope_theta inside transformers 5's rope_parameters.
    let model = tiny_llama_with_config(&dir.join("rope"), |c| {
        c["rope_parameters"]["rope_theta"] = (-10000.0).into();
    });
    let err = fails(train(&model, &dir, "f32"));
    assert!(err.contains("'rope_theta'"), "{err}");
}

#[test]
fn nan_or_infinite_weights_name_the_tensor() {
    let dir = temp_dir("model-nan");
    let q = "model.layers.1.self_attn.q_proj.weight";
    let cases: [(&str, f32, &str); 3] = [
        (q, f32::NAN, "nf4"),
        (q, f32::INFINITY, "f32"),
        ("model.norm.weight", f32::NAN, "nf4"),
    ];
    for (i, (name, bad, base)) in cases.into_iter().enumerate() {
        let model = tiny_llama_with_tensor(&dir.join(format!("m{i}")), name, |v| v[5] = bad);
        let err = fails(train(&model, &dir, base));
        assert!(err.contains(name), "{name} = {bad} ({base}): {err}");
        assert!(err.contains(&bad.to_string()), "{err}");
        assert!(!dir.join("out").exists());
    }
}

/// A copy of the tiny Llama in `dir` without the tensor `name`.
fn tiny_llama_without(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let src = common::cli::tiny_llama();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(file.tensor(name).is_ok(), "no tensor {name}");
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != name)
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

/// A model without a norm (or any other) weight is refused by the one loader every command
/// uses, naming the tensor and the file: never a zero norm that trains at loss ln V.
#[test]
fn a_missing_weight_is_named_by_every_command() {
    let dir = temp_dir("model-missing");
    std::fs::write(dir.join("d.jsonl"), pattern_jsonl(4, 8)).unwrap();
    for (i, name) in [
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
    ]
    .into_iter()
    .enumerate()
    {
        let model = tiny_llama_without(&dir.join(format!("m{i}")), name);
        for base in ["f32", "nf4"] {
            let err = fails(train(&model, &dir, base));
            assert!(
                err.contains(name) && err.contains("model.safetensors"),
                "train --base {base} without {name}: {err}"
            );
            assert!(!dir.join("out").exists());
            let err = fails(webqlora(&[
                "eval",
                "--model",
                path(&model),
                "--base",
                base,
                "--data",
                path(&dir.join("d.jsonl")),
            ]));
            assert!(
                err.contains(name),
                "eval --base {base} without {name}: {err}"
            );
        }
    }
}

/// A byte-level BPE tokenizer's metadata with `extra` entries, as a GGUF file holds it.
fn tiny_bpe(extra: Vec<(&str, MetaValue)>) -> std::collections::BTreeMap<String, MetaValue> {
    let strs = |items: &[&str]| {
        MetaValue::Array(
            items
                .iter()
                .map(|s| MetaValue::Str(s.to_string()))
                .collect(),
        )
    };
    let mut m = std::collections::BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into()));
    m.insert("tokenizer.ggml.tokens".into(), strs(&["a", "b", "<ctl>"]));
    m.insert("tokenizer.ggml.merges".into(), strs(&[]));
    for (k, v) in extra {
        m.insert(k.into(), v);
    }
    m
}

/// Token types of the wrong item type or count are refused (control tokens would otherwise be
/// split as text), and a chat template that would loop without end or build gigabytes stops
/// on its fuel with an error.
#[test]
fn crafted_tokenizer_metadata_and_templates_are_refused() {
    let ints = |v: &[i64]| MetaValue::Array(v.iter().map(|&i| MetaValue::Int(i)).collect());
    let ok = tiny_bpe(vec![("tokenizer.ggml.token_type", ints(&[1, 1, 3]))]);
    Tokenizer::from_gguf(&ok, "x.gguf").unwrap();
    for (types, want) in [
        (
            MetaValue::Array(vec![MetaValue::Float(1.0); 3]),
            "a token type is an integer",
        ),
        (ints(&[1, 1]), "2 entries for 3 tokens"),
        (ints(&[1, 1, 99]), "a token type is an integer 0 to 6"),
        (MetaValue::Str("1,1,3".into()), "not an array of integers"),
    ] {
        let m = tiny_bpe(vec![("tokenizer.ggml.token_type", types)]);
        let err = Tokenizer::from_gguf(&m, "x.gguf")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("x.gguf")
                && err.contains("tokenizer.ggml.token_type")
                && err.contains(want),
            "{err}"
        );
    }
    let messages = [Message {
        role: "user".into(),
        content: "hi".into(),
    }];
    for template in [
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    ] {
        let mut tok = Tokenizer::from_gguf(&ok, "x.gguf").unwrap();
        tok.chat_template = Some(template.into());
        let err = tok.apply_chat_template(&messages, true).err().unwrap().to_string();
        assert!(err.contains("fuel"), "{err}");
    }
}
