//! Adapters written for llama.cpp (`webqlora export --format gguf-lora`): read back, the
//! update llama.cpp computes from the file (alpha / rank · B·A on the base GGUF's tensor) must
//! be the PEFT adapter's scale · B·A in the GGUF layout: q and k rows permuted for Llama, as
//! they are in Llama GGUF files, and nothing permuted for Qwen3. llama.cpp itself loads the
//! files in `cargo xtask interop`.

mod common;

use std::process::Command;

use webqlora::lora::gguf_lora::{gguf_lora_bytes, GgufLoraDtype};
use webqlora::lora::peft::Adapter;
use webqlora::model::gguf::{gguf_name_for, permute_rows, read_tensors, MetaValue};
use webqlora::model::{ModelConfig, ModelError};
use webqlora::quant::ggml::GgmlType;

fn tiny(family: &str) -> (ModelConfig, Adapter) {
    let config = ModelConfig::load(&common::golden(&format!("{family}/base-f32"))).unwrap();
    let adapter = Adapter::load(&common::golden(&format!("{family}/adapter"))).unwrap();
    (config, adapter)
}

/// B·A of [out, r] and [r, in].
fn product(b: &[f32], a: &[f32], out: usize, r: usize, inp: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; out * inp];
    for o in 0..out {
        for j in 0..r {
            let bv = b[o * r + j];
            for i in 0..inp {
                w[o * inp + i] += bv * a[j * inp + i];
            }
        }
    }
    w
}

/// Check every pair of the file against the adapter: names, shapes, the metadata llama.cpp
/// reads, and the update it applies.
fn check_file(config: &ModelConfig, adapter: &Adapter, dtype: GgufLoraDtype, tol: f64) {
    let bytes = gguf_lora_bytes(adapter, config, dtype, "adapter").unwrap();
    let (meta, tensors) = read_tensors(&bytes, "adapter.gguf").unwrap();
    let family = config.family();
    let text = |k: &str| meta.get(k).and_then(MetaValue::as_str).map(str::to_string);
    assert_eq!(text("general.type").as_deref(), Some("adapter"));
    assert_eq!(text("adapter.type").as_deref(), Some("lora"));
    assert_eq!(text("general.architecture").as_deref(), Some(family.gguf));
    let alpha = match meta.get("adapter.lora.alpha") {
        Some(MetaValue::Float(a)) => *a,
        other => panic!("adapter.lora.alpha: {other:?}"),
    };
    let pairs = adapter
        .tensors
        .keys()
        .filter(|n| n.ends_with(".lora_A.weight"))
        .count();
    assert!(pairs > 0);
    assert_eq!(tensors.len(), 2 * pairs, "an A and a B for every module");
    let scale = adapter.config.scale() as f32;
    let mut permuted = 0;
    for (name, (shape_a, a)) in &adapter.tensors {
        let Some(module) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let module = module.strip_prefix("base_model.model.").unwrap();
        let (shape_b, b) = &adapter.tensors[&name.replace("lora_A", "lora_B")];
        let gguf = gguf_name_for(family, &format!("{module}.weight")).unwrap();
        let (ty_a, ga_shape, ga) = &tensors[&format!("{gguf}.lora_a")];
        let (ty_b, gb_shape, gb) = &tensors[&format!("{gguf}.lora_b")];
        let want_ty = match dtype {
            GgufLoraDtype::F32 => GgmlType::F32,
            GgufLoraDtype::F16 => GgmlType::F16,
        };
        assert_eq!((*ty_a, *ty_b), (want_ty, want_ty));
        // ggml dims [in, r] and [r, out]: read back in Hugging Face order.
        assert_eq!((ga_shape, gb_shape), (shape_a, shape_b), "{gguf}");
        let (out, r, inp) = (shape_b[0], shape_b[1], shape_a[1]);
        // llama.cpp: scale = alpha / rank, rank = ne[0] of B.
        let theirs = product(gb, ga, out, r, inp)
            .into_iter()
            .map(|v| v * (alpha / r as f64) as f32)
            .collect::<Vec<_>>();
        let mut ours: Vec<f32> = product(b, a, out, r, inp)
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let heads = match module.rsplit('.').next().unwrap() {
            "q_proj" => Some(config.num_heads),
            "k_proj" => Some(config.num_kv_heads),
            _ => None,
        };
        if family.gguf_qk_permuted {
            if let Some(h) = heads {
                ours = permute_rows(&ours, h, inp);
                permuted += 1;
            }
        }
        common::Tol::rel(tol).check(format!("{gguf}: llama.cpp's update"), &theirs, &ours);
    }
    assert_eq!(permuted > 0, family.gguf_qk_permuted, "{}", family.gguf);
}

#[test]
fn gguf_lora_applies_the_adapters_update_in_the_gguf_layout() {
    // Phi-3's adapter is on its fused modules, as llama.cpp's attn_qkv and ffn_up.
    for family in ["tiny-llama", "tiny-qwen3", "tiny-gemma3", "tiny-phi3"] {
        let (config, adapter) = tiny(family);
        check_file(&config, &adapter, GgufLoraDtype::F32, 1e-6);
        check_file(&config, &adapter, GgufLoraDtype::F16, 2e-3);
        // rsLoRA's alpha / √r is written as alpha·√r, which llama.cpp divides by r.
        let mut rs = adapter.clone();
        rs.config.use_rslora = true;
        check_file(&config, &rs, GgufLoraDtype::F32, 1e-6);
    }
}

#[test]
fn an_adapter_for_another_model_is_refused_naming_the_tensor() {
    let (config, adapter) = tiny("tiny-llama");
    let mut wrong = adapter.clone();
    let name = wrong
        .tensors
        .keys()
        .find(|n| n.contains("v_proj.lora_A"))
        .unwrap()
        .clone();
    let (shape, values) = wrong.tensors.get_mut(&name).unwrap();
    shape[1] += 1;
    values.extend(vec![0.0; shape[0]]);
    match gguf_lora_bytes(&wrong, &config, GgufLoraDtype::F32, "my-adapter") {
        Err(e @ ModelError::BadTensor { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&name) && msg.contains("my-adapter"), "{msg}");
        }
        other => panic!("{:?}", other.map(|b| b.len())),
    }
    // A module the base model does not have.
    let mut extra = adapter;
    let (n, t) = extra.tensors.pop_first().unwrap();
    extra
        .tensors
        .insert(n.replace("layers.0.", "layers.99."), t.clone());
    let err = gguf_lora_bytes(&extra, &config, GgufLoraDtype::F32, "a").unwrap_err();
    assert!(err.to_string().contains("layers.99"), "{err}");
}

/// The command: writes the file; an existing file stays unless --force; a missing adapter
/// is named.
#[test]
fn export_command_writes_and_keeps_existing_files() {
    let dir = common::temp_dir("export_command");
    let out = dir.join("adapter.gguf");
    let run = |extra: &[&str], adapter: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_webqlora"))
            .arg("export")
            .arg("--model")
            .arg(common::golden("tiny-llama/base-f32"))
            .arg("--adapter")
            .arg(adapter)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let adapter = common::golden("tiny-llama/adapter");
    let first = run(&[], &adapter);
    assert!(first.status.success(), "{first:?}");
    let written = std::fs::read(&out).unwrap();
    assert!(read_tensors(&written, "x").is_ok());
    std::fs::write(&out, b"mine").unwrap();
    let again = run(&[], &adapter);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
    let forced = run(&["--force", "--dtype", "f16"], &adapter);
    assert!(forced.status.success(), "{forced:?}");
    assert!(std::fs::read(&out).unwrap().len() < written.len());
    let missing = run(&["--force"], &dir.join("nope"));
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nope"), "{err}");
}

/// `export --format ollama`: a folder with the GGUF LoRA (the bytes `--format gguf-lora`
/// writes) and a Modelfile that follows Ollama's documented syntax, FROM the base GGUF's
/// absolute path and ADAPTER the file beside it; kept unless --force; a Hugging Face folder as
/// the base is refused (Ollama's FROM + ADAPTER needs the GGUF). `train --export ollama`
/// writes the same into the run's folder.
#[test]
fn export_for_ollama_writes_a_modelfile_ollama_reads() {
    let dir = common::temp_dir("export_ollama");
    let model = dir.join("base.gguf");
    common::tiny_gguf::tiny_llama_gguf(&model);
    let adapter = common::golden("tiny-llama/adapter");
    let out = dir.join("ollama");
    let run = |model: &std::path::Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_webqlora"))
            .args(["export", "--format", "ollama", "--model"])
            .arg(model)
            .arg("--adapter")
            .arg(&adapter)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let first = run(&model, &[]);
    assert!(first.status.success(), "{first:?}");
    let m = common::modelfile::check(&out.join("Modelfile"));
    assert_eq!(m.from, std::fs::canonicalize(&model).unwrap());
    assert_eq!(m.adapters, [out.join("./adapter.gguf")]);
    // This base has no chat template: none is made up.
    assert!(m.template.is_none() && m.parameters.is_empty());
    let lora = dir.join("lora.gguf");
    let plain = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["export", "--model"])
        .arg(&model)
        .arg("--adapter")
        .arg(&adapter)
        .arg("--output")
        .arg(&lora)
        .output()
        .unwrap();
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(
        std::fs::read(out.join("adapter.gguf")).unwrap(),
        std::fs::read(&lora).unwrap()
    );

    let again = run(&model, &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert!(run(&model, &["--force"]).status.success());
    let folder = run(&common::golden("tiny-llama/base-f32"), &["--force"]);
    let err = String::from_utf8_lossy(&folder.stderr);
    assert!(!folder.status.success() && err.contains("GGUF"), "{err}");

    // Into the adapter's own folder (or a folder in it): nothing of the adapter is touched.
    let run_copy = dir.join("adapter-copy");
    std::fs::create_dir_all(&run_copy).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(f), run_copy.join(f)).unwrap();
    }
    let before = common::cli::listing(&run_copy);
    let into = |out: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_webqlora"))
            .args(["export", "--format", "ollama", "--model"])
            .arg(&model)
            .arg("--adapter")
            .arg(&run_copy)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap()
    };
    let inside = into(&run_copy.join("ollama"));
    assert!(inside.status.success(), "{inside:?}");
    let itself = into(&run_copy);
    let err = String::from_utf8_lossy(&itself.stderr);
    assert!(
        !itself.status.success() && err.contains("--output writes over --adapter"),
        "{err}"
    );
    let mut after = common::cli::listing(&run_copy);
    after.retain(|f| !f.starts_with("ollama"));
    assert_eq!(after, before);
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert_eq!(
            std::fs::read(run_copy.join(f)).unwrap(),
            std::fs::read(adapter.join(f)).unwrap()
        );
    }

    // train --export ollama: the same pair in the run's folder.
    let data = dir.join("data.jsonl");
    std::fs::write(&data, common::cli::pattern_jsonl(2, 8)).unwrap();
    let run_dir = dir.join("run");
    let train = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args([
            "train", "--steps", "1", "--quiet", "--export", "ollama", "--model",
        ])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--output")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(train.status.success(), "{train:?}");
    let m = common::modelfile::check(&run_dir.join("Modelfile"));
    assert_eq!(m.adapters, [run_dir.join("./adapter.gguf")]);
}
