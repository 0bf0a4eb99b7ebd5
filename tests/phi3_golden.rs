//! Phi-3 (fused q|k|v and gate|up weights, one LoRA module each as PEFT adapts them) on the
//! golden tiny Phi-3 against transformers 5 and PEFT: base and adapted logits, and one
//! training step (loss, the 16 LoRA gradients of qkv_proj, o_proj, gate_up_proj and
//! down_proj, the AdamW update) on the f32 base and, reproducing bitsandbytes' CPU path as
//! for the tiny Llama, on the NF4 base from the bitsandbytes checkpoint and from quantizing
//! on load.

mod common;

use common::golden;
use common::golden_step::{check_golden_logits, check_golden_qlora_steps, check_golden_step};
use webqlora::lora::LoraConfig;
use webqlora::model::family::PHI3;
use webqlora::model::{Architecture, ModelConfig};

#[test]
fn the_config_reads_as_phi3() {
    let c = ModelConfig::load(&golden("tiny-phi3/base-f32")).unwrap();
    assert_eq!(c.architecture, Architecture::Phi3);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 32));
    assert_eq!(c.linear_rows("self_attn.qkv_proj"), 256);
    assert_eq!(c.linear_rows("mlp.gate_up_proj"), 512);
    let json = c.to_hf_json("float32");
    assert_eq!(json["model_type"], "phi3");
    assert_eq!(json["architectures"][0], "Phi3ForCausalLM");
    let again = ModelConfig::from_json(&json.to_string(), "written").unwrap();
    assert_eq!(again, c);
    assert_eq!(c.rotary_dim, 32);
    // Phi-4-mini's partial rotary factor: int(head_dim × factor) channels, as transformers,
    // written back; a factor that rotates an odd count is refused by name.
    let mut j = json.clone();
    j["partial_rotary_factor"] = 0.75.into();
    let partial = ModelConfig::from_json(&j.to_string(), "x").unwrap();
    assert_eq!(partial.rotary_dim, 24);
    assert_eq!(partial.rope_table(3).len(), 3 * 12 * 2);
    let again = ModelConfig::from_json(&partial.to_hf_json("float32").to_string(), "y").unwrap();
    assert_eq!(again.rotary_dim, 24);
    j["partial_rotary_factor"] = 0.1.into();
    let err = ModelConfig::from_json(&j.to_string(), "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'partial_rotary_factor' is 0.1"), "{err}");
}

/// LongRoPE (Phi-3 128k, Phi-3.5): frequency i over short_factor[i] while the table stays
/// within the original context, over long_factor[i] past it, and cos and sin times
/// √(1 + ln(max / original) / ln original), as transformers' `_compute_longrope_parameters`
/// and its dynamic update. The expected values were computed from that formula in Python.
#[test]
fn longrope_scales_the_rope_table_as_transformers() {
    let mut json = ModelConfig::load(&golden("tiny-phi3/base-f32"))
        .unwrap()
        .to_hf_json("float32");
    let short: Vec<f64> = (0..16).map(|i| 1.0 + 0.05 * i as f64).collect();
    let long: Vec<f64> = (0..16).map(|i| 2.0 + 0.5 * i as f64).collect();
    json["max_position_embeddings"] = 131072.into();
    json["original_max_position_embeddings"] = 4096.into();
    json["rope_scaling"] =
        serde_json::json!({"type": "longrope", "short_factor": short, "long_factor": long});
    let c = ModelConfig::from_json(&json.to_string(), "longrope").unwrap();
    let at =
        |table: &[f32], p: usize, i: usize| (table[(p * 16 + i) * 2], table[(p * 16 + i) * 2 + 1]);
    let close = |got: (f32, f32), want: (f64, f64)| {
        assert!(
            (got.0 as f64 - want.0).abs() < 1e-6 && (got.1 as f64 - want.1).abs() < 1e-6,
            "{got:?} vs {want:?}"
        );
    };
    let within = c.rope_table(8);
    close(at(&within, 5, 3), (0.8518579544743972, 0.8312669198671162));
    close(
        at(&within, 7, 10),
        (1.1901084700747477, 0.01756405770343813),
    );
    let past = c.rope_table(4097);
    close(at(&past, 4096, 3), (0.8591244894623955, 0.8237546833084745));
    close(at(&past, 5, 3), (1.1520374120930414, 0.29912617372044575));
    // Written for a merged model and read again: the same scaling.
    let again = ModelConfig::from_json(&c.to_hf_json("float32").to_string(), "again").unwrap();
    assert_eq!(again.rope_scaling, c.rope_scaling);
    // Factors that are not one a frequency are refused by key.
    json["rope_scaling"]["long_factor"] = serde_json::json!([1.0, 2.0]);
    let err = ModelConfig::from_json(&json.to_string(), "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'long_factor' is not 16 numbers above 0"),
        "{err}"
    );
}

#[test]
fn targets_are_the_fused_modules() {
    let all = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        target_modules: webqlora::lora::ALL_LINEAR
            .iter()
            .map(|m| m.to_string())
            .collect(),
        use_rslora: false,
        use_dora: false,
        base_model_name_or_path: String::new(),
    };
    let phi3 = all.for_family(&PHI3).unwrap();
    assert_eq!(
        phi3.target_modules,
        ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    );
    // The seven stay seven for the other families.
    let llama = all.for_family(&webqlora::model::family::LLAMA).unwrap();
    assert_eq!(llama.target_modules, all.target_modules);
    let q_only = LoraConfig {
        target_modules: vec!["q_proj".into()],
        ..all.clone()
    };
    let err = q_only.for_family(&PHI3).unwrap_err();
    assert!(
        err.contains("'q_proj'") && err.contains("adapt 'qkv_proj'"),
        "{err}"
    );
    let fused_on_llama = LoraConfig {
        target_modules: vec!["qkv_proj".into()],
        ..all.clone()
    };
    let err = fused_on_llama
        .for_family(&webqlora::model::family::LLAMA)
        .unwrap_err();
    assert!(err.contains("'qkv_proj' is no module of llama"), "{err}");
    // An adapter of another family's separate modules is refused by what it adapts.
    let dir = common::temp_dir("phi3-foreign-adapter");
    let data = dir.join("data.jsonl");
    std::fs::write(&data, common::cli::pattern_jsonl(2, 8)).unwrap();
    let run = common::cli::webqlora(&[
        "eval",
        "--model",
        common::cli::path(&golden("tiny-phi3/base-f32")),
        "--adapter",
        common::cli::path(&golden("tiny-llama/adapter")),
        "--data",
        common::cli::path(&data),
    ]);
    let err = common::cli::fails(run);
    assert!(
        err.contains("phi3's adapters name the fused 'qkv_proj'"),
        "{err}"
    );
    let dora = LoraConfig {
        use_dora: true,
        ..phi3.clone()
    };
    assert!(dora.for_family(&PHI3).unwrap_err().contains("DoRA"));
}

#[test]
fn logits_match_transformers_and_peft() {
    check_golden_logits("tiny-phi3");
}

#[test]
fn a_training_step_matches_peft() {
    check_golden_step("tiny-phi3/base-f32", "lora", &["--base", "f32"]);
}

#[test]
fn a_qlora_step_matches_bitsandbytes_and_peft() {
    check_golden_qlora_steps("tiny-phi3");
}

/// `webqlora train` on the tiny Phi-3 (all linear modules by default) writes a PEFT adapter
/// of its fused modules, as PEFT names and shapes them, which a resumed run reproduces; the
/// checkpoint holds the fused B's moments whole; `merge` puts it into the fused weights (the
/// merged folder's logits are the adapter's).
#[test]
fn the_cli_trains_resumes_and_merges_the_fused_modules() {
    use common::cli::{ok, path, pattern_jsonl, webqlora};
    use webqlora::lora::peft::Adapter;
    use webqlora::model::transformer::BaseFormat;
    let dir = common::temp_dir("phi3-cli");
    std::fs::write(dir.join("data.jsonl"), pattern_jsonl(8, 20)).unwrap();
    let model = golden("tiny-phi3/base-f32");
    let data = dir.join("data.jsonl");
    let train = |out: &std::path::Path, steps: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--model",
            path(&model),
            "--data",
            path(&data),
            "--output",
            path(out),
            "--rank",
            "4",
            "--lr",
            "5e-3",
            "--schedule",
            "constant",
            "--batch",
            "2",
            "--steps",
            steps,
            "--quiet",
            "--lora-dropout",
            "0.1",
        ];
        if resume {
            args.push("--resume");
        }
        ok(webqlora(&args));
    };
    let straight = dir.join("straight");
    train(&straight, "4", false);
    let adapter = Adapter::load(&straight).unwrap();
    assert_eq!(
        adapter.config.target_modules,
        ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    );
    assert_eq!(adapter.tensors.len(), 2 * 4 * 2);
    let qkv_b = "base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight";
    let up_a = "base_model.model.model.layers.0.mlp.gate_up_proj.lora_A.weight";
    assert_eq!(adapter.tensors[qkv_b].0, [256, 4]);
    assert_eq!(adapter.tensors[up_a].0, [4, 128]);
    // Every row of the fused B trained: q's, k's and v's alike.
    let (_, b) = &adapter.tensors[qkv_b];
    for (part, rows) in [("q", 0..128), ("k", 128..192), ("v", 192..256)] {
        assert!(
            b[rows.start * 4..rows.end * 4].iter().any(|v| *v != 0.0),
            "{part}"
        );
    }
    let resumed = dir.join("resumed");
    train(&resumed, "2", false);
    train(&resumed, "4", true);
    let again = Adapter::load(&resumed).unwrap();
    for (name, (_, values)) in &adapter.tensors {
        let d = common::rel_err(&again.tensors[name].1, values);
        assert!(d < 1e-5, "{name}: {d}");
    }

    let merged = dir.join("merged");
    ok(webqlora(&[
        "merge",
        "--model",
        path(&model),
        "--adapter",
        path(&straight),
        "--output",
        path(&merged),
        "--dtype",
        "f32",
        "--quiet",
    ]));
    let files = webqlora::model::safetensors_files::SafetensorsFiles::open_dir(&merged).unwrap();
    assert!(files.contains("model.layers.0.self_attn.qkv_proj.weight"));
    assert!(!files.contains("model.layers.0.self_attn.q_proj.weight"));
    let want = common::family_logits("tiny-phi3", &model, BaseFormat::F32, Some(&adapter));
    let got = common::family_logits("tiny-phi3", &merged, BaseFormat::F32, None);
    common::Tol::GOLDEN.check("merged Phi-3 logits", &got, &want);
}
