//! Model folders and adapters in: config.json, safetensors (single, sharded, f16/bf16),
//! bitsandbytes 4-bit checkpoints, PEFT adapters in and out; bad input named clearly.

mod common;

use common::{golden, temp_dir, Golden};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webqlora::lora::peft::Adapter;
use webqlora::model::safetensors_files::SafetensorsFiles;
use webqlora::model::{Architecture, ModelConfig, RopeScaling};
use webqlora::quant::nf4::Nf4Tensor;

#[test]
fn tiny_llama_configs_parse() {
    let c = ModelConfig::load(&golden("tiny-llama/base-f32")).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (256, 64, 128)
    );
    assert_eq!(
        (c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim),
        (2, 4, 2, 16)
    );
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 10000.0));
    assert!(c.tie_word_embeddings && !c.qkv_bias && c.quantization.is_none());
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    let q = ModelConfig::load(&golden("tiny-llama/base-bnb-nf4")).unwrap();
    assert!(q.quantization.unwrap().double_quant);
}

#[test]
fn bad_configs_are_named() {
    let cases = [
        (
            r#"{"model_type": "gpt2"}"#,
            "model_type 'gpt2' is not supported (llama, mistral, qwen2, qwen3, gemma3_text, smollm3, phi3)",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3}"#,
            "'num_attention_heads' 4 cannot be grouped over 'num_key_value_heads' 3",
        ),
        (
            r#"{"model_type": "llama", "num_attention_heads": 4}"#,
            "'hidden_size' is missing",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4}}"#,
            "rope scaling 'yarn' is not supported (default, linear, llama3, longrope)",
        ),
        (
            r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "rope_scaling": {"rope_type": "llama3", "factor": 8}}"#,
            "rope scaling 'llama3': 'low_freq_factor' is null",
        ),
        ("{not json", "not valid JSON"),
    ];
    for (text, want) in cases {
        let err = ModelConfig::from_json(text, "m/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("m/config.json: ") && err.contains(want),
            "{err}"
        );
    }
    let qwen = r#"{"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 10,
                   "intermediate_size": 8, "num_hidden_layers": 1}"#;
    assert!(ModelConfig::from_json(qwen, "c").unwrap().qkv_bias);
}

#[test]
fn safetensors_read_by_name_and_checked() {
    let files = SafetensorsFiles::open_dir(&golden("tiny-llama/base-f32")).unwrap();
    let reference = Golden::open("tiny-llama/base-f32/model.safetensors");
    let name = "model.layers.1.mlp.down_proj.weight";
    assert_eq!(files.f32(name, &[64, 128]).unwrap(), reference.f32(name));
    let err = files.f32(name, &[128, 64]).unwrap_err().to_string();
    assert!(
        err.ends_with(&format!(
            "tensor '{name}' is shape [64, 128], expected shape [128, 64]"
        )),
        "{err}"
    );
    let err = files
        .f32("lm_head.weight", &[256, 64])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tensor 'lm_head.weight' not found in "),
        "{err}"
    );
}

#[test]
fn truncated_files_are_refused_with_their_path() {
    let dir = temp_dir("truncated");
    let bytes = std::fs::read(golden("tiny-llama/base-f32/model.safetensors")).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = SafetensorsFiles::open_dir(&dir).err().unwrap().to_string();
    assert!(
        err.starts_with(&path.display().to_string()) && err.contains("truncated or corrupt"),
        "{err}"
    );
}

#[test]
fn sharded_and_half_precision_weights_load() {
    let dir = temp_dir("sharded");
    let reference = Golden::open("tiny-llama/base-f32/model.safetensors");
    let mut names = reference.names();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part, dtype) in [
        ("model-00001-of-00002.safetensors", first, Dtype::F16),
        ("model-00002-of-00002.safetensors", second, Dtype::BF16),
    ] {
        let converted: Vec<(String, Vec<usize>, Vec<u8>)> = part
            .iter()
            .map(|n| {
                let values = reference.f32(n);
                let bytes: Vec<u8> = match dtype {
                    Dtype::F16 => values
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                    _ => values
                        .iter()
                        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                        .collect(),
                };
                weight_map.insert(n.clone(), serde_json::Value::String(file.into()));
                (n.clone(), reference.shape(n), bytes)
            })
            .collect();
        let views: Vec<(String, TensorView)> = converted
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    for n in &names {
        let got = files.f32(n, &reference.shape(n)).unwrap();
        let want = reference.f32(n);
        let tolerance = if first.contains(n) { 1e-3 } else { 1e-2 }; // f16, bf16 rounding
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= tolerance * w.abs().max(1e-3),
                "{n}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn bitsandbytes_checkpoint_weights_load_as_nf4() {
    let files = SafetensorsFiles::open_dir(&golden("tiny-llama/base-bnb-nf4")).unwrap();
    let f32_files = SafetensorsFiles::open_dir(&golden("tiny-llama/base-f32")).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let q = Nf4Tensor::from_bnb(name, |n| files.raw(n).ok()).unwrap();
    assert_eq!(q.shape, vec![128, 64]);
    let original = f32_files.f32(name, &[128, 64]).unwrap();
    let requantized = Nf4Tensor::quantize(&original, &[128, 64], 64, true).unwrap();
    assert_eq!(q.packed, requantized.packed);
}

#[test]
fn peft_adapters_round_trip() {
    let adapter = Adapter::load(&golden("tiny-llama/adapter")).unwrap();
    assert_eq!(adapter.config.r, 8);
    assert_eq!(adapter.config.scale(), 2.0);
    assert_eq!(adapter.config.target_modules.len(), 7);
    assert_eq!(adapter.tensors.len(), 28);
    let (shape, _) =
        &adapter.tensors["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"];
    assert_eq!(shape, &vec![8, 128]);

    let dir = temp_dir("adapter");
    adapter.save(&dir).unwrap();
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["adapter_config.json", "adapter_model.safetensors"],
        "no temporary files left"
    );
    let reloaded = Adapter::load(&dir).unwrap();
    assert_eq!(reloaded.config, adapter.config);
    assert!(
        reloaded.tensors == adapter.tensors,
        "tensors differ after a round trip"
    );
    // The same tensor names PEFT writes.
    let ours = SafetensorsFiles::open_files(&[dir.join("adapter_model.safetensors")]).unwrap();
    let mut their_names = Golden::open("tiny-llama/adapter/adapter_model.safetensors").names();
    let mut our_names: Vec<String> = ours.names().map(str::to_string).collect();
    their_names.sort();
    our_names.sort();
    assert_eq!(our_names, their_names);
}

#[test]
fn unsupported_adapters_are_named() {
    let dir = temp_dir("fan_in_fan_out");
    let config = r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "fan_in_fan_out": true, "target_modules": ["q_proj"]}"#;
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    let err = Adapter::load(&dir).unwrap_err().to_string();
    assert!(
        err.ends_with("adapter_config.json: 'fan_in_fan_out': true is not supported"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let missing = Adapter::load(&dir).unwrap_err().to_string();
    assert!(missing.contains("adapter_config.json"), "{missing}");
}

/// Llama 3.1+'s RoPE scaling, as transformers 4 writes it (`rope_scaling`) and as transformers
/// 5 does (`rope_parameters`), against `_compute_llama3_parameters` written out again here the
/// way transformers computes it (masks over the whole vector).
#[test]
fn llama3_rope_scaling_follows_transformers() {
    let base = r#""model_type": "llama", "vocab_size": 10, "hidden_size": 2048, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8"#;
    let scaling = r#""factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192"#;
    let v4 = format!(
        r#"{{{base}, "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3", {scaling}}}}}"#
    );
    let v5 = format!(
        r#"{{{base}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, {scaling}}}}}"#
    );
    let a = ModelConfig::from_json(&v4, "v4").unwrap();
    let b = ModelConfig::from_json(&v5, "v5").unwrap();
    assert_eq!(a, b);
    assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { .. }));

    let (dim, theta, factor, low, high, old) = (64usize, 500000.0f64, 32.0, 1.0, 4.0, 8192.0);
    let inv: Vec<f64> = (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / dim as f64))
        .collect();
    let wavelen: Vec<f64> = inv.iter().map(|f| 2.0 * std::f64::consts::PI / f).collect();
    let llama: Vec<f64> = inv
        .iter()
        .zip(&wavelen)
        .map(|(f, w)| if *w > old / low { f / factor } else { *f })
        .collect();
    let want: Vec<f64> = (0..dim / 2)
        .map(|i| {
            let smooth = (old / wavelen[i] - low) / (high - low);
            let smoothed = (1.0 - smooth) * llama[i] / factor + smooth * llama[i];
            // transformers: ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
            let medium = wavelen[i] >= old / high && wavelen[i] <= old / low;
            if medium {
                smoothed
            } else {
                llama[i]
            }
        })
        .collect();
    let got = a.rope_inv_freq();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-15 * w.abs(),
            "frequency {i}: {g} vs {w}"
        );
    }
    // The fastest frequencies are kept, the slowest divided by the factor, some in between.
    assert_eq!(got[0], inv[0]);
    assert_eq!(got[31], inv[31] / factor);
    assert!((1..31).any(|i| got[i] != inv[i] && got[i] != inv[i] / factor));
    // The table rotates by those frequencies.
    let table = a.rope_table(3);
    let angle = 2.0 * got[31];
    assert_eq!(table[(2 * 32 + 31) * 2], angle.cos() as f32);
    assert_eq!(table[(2 * 32 + 31) * 2 + 1], angle.sin() as f32);
    // And a merged model's config.json says so.
    assert_eq!(
        a.to_hf_json("float16")["rope_scaling"]["rope_type"],
        "llama3"
    );
}
