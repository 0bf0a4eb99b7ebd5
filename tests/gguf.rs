//! GGUF files: block formats dequantized exactly, llama.cpp's q/k permutation undone, the
//! tiny Llama written as GGUF giving transformers' logits, bad files named.

mod common;

use common::tiny_gguf::*;
use common::{golden, rel_err, temp_dir, Golden, Tol};
use half::f16;
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::model::gguf::{permute_rows, unpermute_rows, GgufFile};
use webqlora::model::load::upload_model;
use webqlora::model::transformer::{BaseFormat, Transformer};
use webqlora::model::{ModelConfig, RopeScaling, WeightSource};
use webqlora::quant::ggml::{dequantize, GgmlType};

#[test]
fn blocks_dequantize_as_the_formats_define() {
    // Q4_0, d = 0.5: byte j = low nibble element j, high nibble element j + 16; x = (q - 8) d.
    let mut q4_0 = f16::from_f32(0.5).to_le_bytes().to_vec();
    q4_0.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let want: Vec<f32> = (0..16)
        .map(|j| (j as f32 - 8.0) * 0.5)
        .chain((0..16).map(|j| (7 - j) as f32 * 0.5))
        .collect();
    assert_eq!(dequantize(GgmlType::Q4_0, &q4_0), want);

    // Q4_1, d = 0.25, m = -1: x = q d + m.
    let mut q4_1 = f16::from_f32(0.25).to_le_bytes().to_vec();
    q4_1.extend(f16::from_f32(-1.0).to_le_bytes());
    q4_1.extend((0..16u8).map(|j| j | (15 - j) << 4));
    let want: Vec<f32> = (0..16)
        .map(|j| j as f32 * 0.25 - 1.0)
        .chain((0..16).map(|j| (15 - j) as f32 * 0.25 - 1.0))
        .collect();
    assert_eq!(dequantize(GgmlType::Q4_1, &q4_1), want);

    // Q8_0, d = 2: x = q d with q signed.
    let mut q8 = f16::from_f32(2.0).to_le_bytes().to_vec();
    q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
    let want: Vec<f32> = (0..32).map(|j| (j - 16) as f32 * 2.0).collect();
    assert_eq!(dequantize(GgmlType::Q8_0, &q8), want);

    let halfs: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(dequantize(GgmlType::F16, &halfs), vec![1.5, -2.0]);
    let bhalfs: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(dequantize(GgmlType::BF16, &bhalfs), vec![1.5, -2.0]);
    assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    let values: Vec<f32> = (0..4 * 16 * 3).map(|i| i as f32).collect();
    assert_eq!(unpermute_rows(&permute_rows(&values, 4, 3), 4, 3), values);
    assert_ne!(permute_rows(&values, 4, 3), values);
}

#[test]
fn a_gguf_tiny_llama_gives_transformers_logits() {
    let dir = temp_dir("gguf");
    let path = dir.join("tiny.gguf");
    tiny_llama_gguf(&path);
    let file = GgufFile::open(&path).unwrap();
    let mut want_config = ModelConfig::load(&golden("tiny-llama/base-f32")).unwrap();
    want_config.rms_norm_eps = 1e-5f32 as f64; // stored as f32 in GGUF
    assert_eq!(file.config(), &want_config);
    assert!(file.contains("model.layers.1.self_attn.k_proj.weight"));

    let got = gguf_logits("tiny-llama", &file);
    let expected = Golden::open("tiny-llama/expected.safetensors");
    Tol::GOLDEN.check("logits through GGUF", &got, &expected.f32("logits_base"));
}

/// The golden batch's logits of `family` through the GGUF `file` (f32 base, no adapter).
fn gguf_logits(family: &str, file: &GgufFile) -> Vec<f32> {
    let expected = Golden::open(&format!("{family}/expected.safetensors"));
    let (_, id_shape, id_bytes) = expected.raw("input_ids");
    let ids: Vec<u32> = bytemuck::pod_collect_to_vec::<u8, i64>(id_bytes)
        .iter()
        .map(|&i| i as u32)
        .collect();
    let (batch, seq) = (id_shape[0], id_shape[1]);
    let config = file.config().clone();
    let mut g = Graph::new();
    let model = Transformer::declare(&mut g, &config, BaseFormat::F32, None, seq).unwrap();
    let input = g.input("input_ids", &[batch * seq], DType::U32);
    let logits = model.forward_logits(&mut g, input, seq).unwrap();
    g.mark_output(logits);
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, file, BaseFormat::F32, None).unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    compiled.run(gpu);
    pollster::block_on(compiled.read_f32(gpu, logits)).unwrap()
}

/// Logits of 2 × 9 fixed token ids through `file` on a `base` graph, with the number of
/// ggml block-code kernels the graph runs.
fn base_logits(file: &GgufFile, base: BaseFormat) -> (usize, Vec<f32>) {
    let config = file.config().clone();
    let (batch, seq) = (2, 9);
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| (i * 37 % config.vocab_size) as u32)
        .collect();
    let mut g = Graph::new();
    let model = Transformer::declare(&mut g, &config, base, None, seq).unwrap();
    let input = g.input("input_ids", &[batch * seq], DType::U32);
    let logits = model.forward_logits(&mut g, input, seq).unwrap();
    g.mark_output(logits);
    let kernels = g
        .nodes
        .iter()
        .filter(|n| n.kernel.name.starts_with("ggml_"))
        .count();
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, file, base, None).unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    compiled.run(gpu);
    (
        kernels,
        pollster::block_on(compiled.read_f32(gpu, logits)).unwrap(),
    )
}

/// The golden tiny `family` as llama.cpp writes such a model: architecture `arch`, its
/// metadata keys, f32 tensors under GGUF names, q/k rows permuted where llama.cpp permutes
/// them for the family; returns the config it was made from.
fn tiny_family_gguf(family: &str, arch: &'static str, path: &std::path::Path) -> ModelConfig {
    tiny_family_gguf_with(family, arch, path, &mut |_, _| None, &mut |_, _| {})
}

/// A GGUF's metadata and tensors before they are written (`tiny_family_gguf_with`).
type Edit<'e> =
    &'e mut dyn FnMut(&mut Vec<(String, Meta)>, &mut Vec<(String, Vec<usize>, u32, Vec<u8>)>);

/// `tiny_family_gguf` with the tensors `encode` gives block codes for stored as those codes.
#[allow(clippy::type_complexity)]
fn tiny_family_gguf_with(
    family: &str,
    arch: &'static str,
    path: &std::path::Path,
    encode: &mut dyn FnMut(&str, &[f32]) -> Option<(GgmlType, Vec<u8>)>,
    edit: Edit,
) -> ModelConfig {
    let c = ModelConfig::load(&golden(&format!("{family}/base-f32"))).unwrap();
    let weights = Golden::open(&format!("{family}/base-f32/model.safetensors"));
    let permuted = c.family().gguf_qk_permuted;
    let mut tensors: Vec<(String, Vec<usize>, u32, Vec<u8>)> = weights
        .names()
        .into_iter()
        .map(|name| {
            let gguf = webqlora::model::gguf::gguf_name(&name)
                .unwrap_or_else(|| panic!("no GGUF name for {name}"));
            let shape = weights.shape(&name);
            let mut values = weights.f32(&name);
            if permuted && name.ends_with("q_proj.weight") {
                values = permute_rows(&values, c.num_heads, shape[1]);
            } else if permuted && name.ends_with("k_proj.weight") {
                values = permute_rows(&values, c.num_kv_heads, shape[1]);
            }
            match encode(&name, &values) {
                Some((ty, codes)) => (gguf, shape, ty.id(), codes),
                None => (gguf, shape, 0, bytemuck::cast_slice(&values).to_vec()),
            }
        })
        .collect();
    let u = |v: usize| Meta::U32(v as u32);
    let keyed = [
        ("embedding_length", u(c.hidden_size)),
        ("feed_forward_length", u(c.intermediate_size)),
        ("block_count", u(c.num_layers)),
        ("attention.head_count", u(c.num_heads)),
        ("attention.head_count_kv", u(c.num_kv_heads)),
        ("attention.key_length", u(c.head_dim)),
        ("context_length", u(c.max_position_embeddings)),
        ("rope.freq_base", Meta::F32(c.rope_theta as f32)),
        (
            "attention.layer_norm_rms_epsilon",
            Meta::F32(c.rms_norm_eps as f32),
        ),
    ];
    let mut meta = vec![("general.architecture".to_string(), Meta::Str(arch))];
    meta.extend(keyed.into_iter().map(|(k, v)| (format!("{arch}.{k}"), v)));
    edit(&mut meta, &mut tensors);
    let meta: Vec<(&str, Meta)> = meta.into_iter().map(|(k, v)| (&*k.leak(), v)).collect();
    write_gguf(path, &meta, &tensors);
    c
}

/// A Qwen3 GGUF as llama.cpp writes one (architecture qwen3, the head size as
/// `attention.key_length`, q/k rows not permuted, `attn_q_norm` / `attn_k_norm`): the same
/// config and transformers' logits.
#[test]
fn a_gguf_tiny_qwen3_gives_transformers_logits() {
    let dir = temp_dir("gguf_qwen3");
    let path = dir.join("qwen3.gguf");
    let c = tiny_family_gguf("tiny-qwen3", "qwen3", &path);
    let file = GgufFile::open(&path).unwrap();
    let mut want = c.clone();
    want.rms_norm_eps = c.rms_norm_eps as f32 as f64;
    assert_eq!(file.config(), &want);
    let got = gguf_logits("tiny-qwen3", &file);
    let expected = Golden::open("tiny-qwen3/expected.safetensors");
    Tol::GOLDEN.check("logits through GGUF", &got, &expected.f32("logits_base"));
}

/// A SmolLM3 GGUF as llama.cpp writes one (architecture smollm3, q/k rows permuted as for
/// Llama, no metadata for the no-RoPE layers: llama.cpp fixes every fourth): the same config
/// (no RoPE on layer 3 of 4) and transformers' logits.
#[test]
fn a_gguf_tiny_smollm3_gives_transformers_logits() {
    let dir = temp_dir("gguf_smollm3");
    let path = dir.join("smollm3.gguf");
    tiny_family_gguf("tiny-smollm3", "smollm3", &path);
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(
        file.config().architecture,
        webqlora::model::Architecture::SmolLm3
    );
    assert_eq!(file.config().no_rope_layers, [3]);
    let got = gguf_logits("tiny-smollm3", &file);
    let expected = Golden::open("tiny-smollm3/expected.safetensors");
    Tol::GOLDEN.check("logits through GGUF", &got, &expected.f32("logits_base"));
}

/// A Phi-3 GGUF as llama.cpp writes one (architecture phi3, the fused `attn_qkv` and a
/// `ffn_up` of gate rows then up rows, q/k rows not permuted): the same config and
/// transformers' logits; its fused weights as Q8_0 codes, split by rows for the parts, give
/// the logits of their dequantized values; merged with the fused PEFT adapter, PEFT's logits.
#[test]
fn a_gguf_tiny_phi3_gives_transformers_logits_on_f32_codes_and_merged() {
    use webqlora::lora::gguf_merge::{merged_gguf_bytes, GgufDtype};
    let dir = temp_dir("gguf_phi3");
    let path = dir.join("phi3.gguf");
    let c = tiny_family_gguf("tiny-phi3", "phi3", &path);
    let file = GgufFile::open(&path).unwrap();
    let mut want = c.clone();
    want.rms_norm_eps = c.rms_norm_eps as f32 as f64;
    // Special tokens come with a tokenizer, which this file has not.
    (want.bos_token_id, want.eos_token_ids) = (None, vec![]);
    assert_eq!(file.config(), &want);
    assert!(file.contains("model.layers.1.self_attn.qkv_proj.weight"));
    let expected = Golden::open("tiny-phi3/expected.safetensors");
    let got = gguf_logits("tiny-phi3", &file);
    Tol::GOLDEN.check("logits through GGUF", &got, &expected.f32("logits_base"));

    let adapter = webqlora::lora::peft::Adapter::load(&golden("tiny-phi3/adapter")).unwrap();
    let bytes = merged_gguf_bytes(&file, &adapter, GgufDtype::F32, |_, _| {}).unwrap();
    let merged = dir.join("merged.gguf");
    std::fs::write(&merged, &bytes).unwrap();
    Tol::GOLDEN.check(
        "merged GGUF logits",
        &gguf_logits("tiny-phi3", &GgufFile::open(&merged).unwrap()),
        &expected.f32("logits_lora"),
    );

    // Fused weights as Q8_0 codes: each part reads its rows of them.
    let quantized = dir.join("phi3-q8.gguf");
    let mut fused_q8 = |name: &str, values: &[f32]| {
        let fused = name.ends_with("qkv_proj.weight") || name.ends_with("gate_up_proj.weight");
        fused.then(|| (GgmlType::Q8_0, webqlora::quant::ggml::quantize_q8_0(values)))
    };
    tiny_family_gguf_with(
        "tiny-phi3",
        "phi3",
        &quantized,
        &mut fused_q8,
        &mut |_, _| {},
    );
    let file = GgufFile::open(&quantized).unwrap();
    let types = &file.config().gguf_types;
    assert_eq!(
        types.len(),
        2 * 5,
        "q, k, v, gate and up of 2 layers: {types:?}"
    );
    assert_eq!(
        types.get("model.layers.0.self_attn.v_proj.weight"),
        Some(&GgmlType::Q8_0)
    );
    let logits = |base: BaseFormat| base_logits(&file, base).1;
    Tol::F32.check(
        "logits on fused Q8_0 codes vs their f32 values",
        &logits(BaseFormat::Gguf),
        &logits(BaseFormat::F32),
    );
}

/// Phi-4-mini's GGUF files rotate part of each head (`rope.dimension_count` under the head
/// size): read as its rotary width, an odd one refused by key. Their `sliding_window` 0 (how
/// llama.cpp's converter marks Phi-4's "none") is no window.
#[test]
fn phi3_gguf_partial_rotary_reads() {
    let dir = temp_dir("gguf_phi3_rotary");
    let path = dir.join("phi3.gguf");
    let open = |edit: Edit| {
        tiny_family_gguf_with("tiny-phi3", "phi3", &path, &mut |_, _| None, edit);
        GgufFile::open(&path)
    };
    let dims = |d: u32| {
        move |meta: &mut Vec<(String, Meta)>, _: &mut Vec<_>| {
            meta.push(("phi3.rope.dimension_count".into(), Meta::U32(d)));
            meta.push(("phi3.attention.sliding_window".into(), Meta::U32(0)));
        }
    };
    let file = open(&mut dims(24)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((file.config().head_dim, file.config().rotary_dim), (32, 24));
    assert_eq!(file.config().sliding_window, None);
    let err = match open(&mut dims(23)) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("'phi3.rope.dimension_count'"), "{err}");
}

/// LongRoPE in a GGUF as llama.cpp's converter writes Phi-3 128k, Phi-3.5 and Phi-4-mini:
/// `rope_factors_short.weight` / `rope_factors_long.weight`, the original context and the
/// attention factor in the metadata. Read as the same scaling, and the same RoPE tables, as
/// config.json's `longrope` gives (tested against transformers' formula in phi3_golden.rs),
/// with the attention factor computed as the converter does where the file has none; the
/// logits change with it. A factor tensor alone, factors of the wrong count or a missing
/// original context are refused by name.
#[test]
fn phi3_gguf_longrope_reads_as_config_json_does() {
    let dir = temp_dir("gguf_phi3_longrope");
    let path = dir.join("phi3.gguf");
    let short: Vec<f32> = (0..16).map(|i| 1.0 + 0.25 * i as f32).collect();
    let long: Vec<f32> = (0..16).map(|i| 2.0 + 0.5 * i as f32).collect();
    let f32_tensor = |name: &str, v: &[f32]| {
        let bytes = bytemuck::cast_slice(v).to_vec();
        (name.to_string(), vec![v.len()], 0u32, bytes)
    };
    let open = |tensors: &[(&str, &[f32])], meta: &[(&str, Meta)]| {
        let mut edit = |m: &mut Vec<(String, Meta)>, t: &mut Vec<_>| {
            for (name, values) in tensors {
                t.push(f32_tensor(name, values));
            }
            for (key, value) in meta {
                m.push((key.to_string(), value.clone()));
            }
        };
        tiny_family_gguf_with("tiny-phi3", "phi3", &path, &mut |_, _| None, &mut edit);
        GgufFile::open(&path)
    };
    let both: [(&str, &[f32]); 2] = [
        ("rope_factors_short.weight", &short),
        ("rope_factors_long.weight", &long),
    ];
    // The golden model's context is 256: an original of 64 makes a factor of 4.
    let original = ("phi3.rope.scaling.original_context_length", Meta::U32(64));
    let file = open(&both, std::slice::from_ref(&original)).unwrap_or_else(|e| panic!("{e}"));

    let mut json = ModelConfig::load(&golden("tiny-phi3/base-f32"))
        .unwrap()
        .to_hf_json("float32");
    json["original_max_position_embeddings"] = 64.into();
    json["rope_scaling"] = serde_json::json!({"type": "longrope", "short_factor": short,
        "long_factor": long});
    let hf = ModelConfig::from_json(&json.to_string(), "longrope").unwrap();
    let RopeScaling::LongRope {
        attention_factor, ..
    } = file.config().rope_scaling
    else {
        panic!("{:?}", file.config().rope_scaling)
    };
    let want = (1.0f64 + 4.0f64.ln() / 64.0f64.ln()).sqrt();
    assert!(
        (attention_factor - want).abs() < 1e-12,
        "{attention_factor}"
    );
    assert_eq!(file.config().rope_scaling, hf.rope_scaling);
    for positions in [9, 64, 65, 256] {
        assert_eq!(
            file.config().rope_table(positions),
            hf.rope_table(positions)
        );
    }
    // The file's own attention factor wins.
    let given = ("phi3.rope.scaling.attn_factor", Meta::F32(1.5));
    let file2 = open(&both, &[original.clone(), given]).unwrap();
    assert!(matches!(
        file2.config().rope_scaling,
        RopeScaling::LongRope { attention_factor, .. } if attention_factor == 1.5
    ));
    // The scaling reaches the graph: not the unscaled model's logits.
    let scaled = gguf_logits("tiny-phi3", &file);
    let plain_path = dir.join("plain.gguf");
    tiny_family_gguf("tiny-phi3", "phi3", &plain_path);
    let plain = gguf_logits("tiny-phi3", &GgufFile::open(&plain_path).unwrap());
    assert!(rel_err(&scaled, &plain) > 1e-3, "LongRoPE changed nothing");

    let refusal = |result: Result<GgufFile, webqlora::model::ModelError>| match result {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    let err = refusal(open(&both[1..], std::slice::from_ref(&original)));
    assert!(
        err.contains("'rope_factors_long.weight' without 'rope_factors_short.weight'"),
        "{err}"
    );
    let err = refusal(open(&both, &[]));
    assert!(
        err.contains("'phi3.rope.scaling.original_context_length'"),
        "{err}"
    );
    let few: [(&str, &[f32]); 2] = [
        ("rope_factors_short.weight", &short[..8]),
        ("rope_factors_long.weight", &long[..8]),
    ];
    let err = refusal(open(&few, std::slice::from_ref(&original)));
    assert!(
        err.contains("'rope_factors_short.weight'") && err.contains("16 positive"),
        "{err}"
    );
}

#[test]
fn bad_gguf_files_are_named() {
    let dir = temp_dir("gguf_bad");
    let path = dir.join("tiny.gguf");
    tiny_llama_gguf(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(
        err.starts_with(&path.display().to_string()) && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(&path, b"GGML and some bytes").unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.ends_with("not a GGUF file (no GGUF magic)"), "{err}");
    let mut wrong_type = Vec::from(&bytes[..]);
    let at = bytes
        .windows(17)
        .position(|w| w == b"token_embd.weight")
        .unwrap()
        + 17
        + 4
        + 16;
    wrong_type[at..at + 4].copy_from_slice(&20u32.to_le_bytes()); // IQ4_NL
    std::fs::write(&path, wrong_type).unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(
        err.contains("tensor 'token_embd.weight' has ggml type 20, not supported"),
        "{err}"
    );
}

#[test]
fn gguf_metadata_no_model_can_have_names_its_key() {
    let dir = temp_dir("gguf_bad_meta");
    let path = dir.join("tiny.gguf");
    for (key, value) in [
        ("llama.block_count", 0.0),
        ("llama.attention.head_count_kv", 3.0),
        ("llama.embedding_length", 0.0),
        ("llama.attention.layer_norm_rms_epsilon", -1e-5),
        ("llama.rope.freq_base", 0.0),
    ] {
        tiny_llama_gguf_with(&path, &[(key, value)]);
        let err = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            err.starts_with(&path.display().to_string())
                && err.contains(&format!("metadata '{key}'")),
            "{key} = {value}: {err}"
        );
    }
}

/// llama.cpp converts Llama 3's RoPE scaling into `rope_freqs.weight`, a divisor per
/// frequency: the table rotates by theta^(-2i/d) / divisor_i. Another scaling type in the
/// metadata is refused.
#[test]
fn gguf_rope_freqs_scale_the_rope_table() {
    let dir = temp_dir("gguf_rope_freqs");
    let path = dir.join("tiny.gguf");
    let config = ModelConfig::load(&golden("tiny-llama/base-f32")).unwrap();
    let half = config.head_dim / 2;
    let divisors: Vec<f32> = (0..half).map(|i| 1.0 + i as f32).collect();
    tiny_llama_gguf_extra(&path, &divisors, None);
    let file = GgufFile::open(&path).unwrap();
    let c = file.config();
    assert_eq!(c.rope_scaling, RopeScaling::Divisors(divisors.clone()));
    let table = c.rope_table(5);
    for i in 0..half {
        let f = 1.0
            / config
                .rope_theta
                .powf((2 * i) as f64 / config.head_dim as f64)
            / divisors[i] as f64;
        assert_eq!(
            table[(4 * half + i) * 2],
            (4.0 * f).cos() as f32,
            "frequency {i}"
        );
    }
    // A wrong count of divisors, and other scaling types, are named.
    tiny_llama_gguf_extra(&path, &divisors[1..], None);
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(
        err.contains("rope_freqs.weight") && err.contains("divisors"),
        "{err}"
    );
    tiny_llama_gguf_extra(&path, &[], Some("yarn"));
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("'llama.rope.scaling.type' is 'yarn'"), "{err}");
}

/// A GGUF whose linear weights are blocks of the 32-value types (the tiny Llama's rows are
/// 64 and 128 long): `--base gguf` declares each in its type, reads q and k blocks in Hugging
/// Face row order (llama.cpp's permutation undone row by row), and gives the logits of an f32
/// base holding what the blocks dequantize to.
#[test]
fn gguf_block_codes_load_in_hugging_face_rows_and_give_the_f32_logits() {
    let dir = temp_dir("gguf-blocks");
    let path = dir.join("tiny-q.gguf");
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ];
    common::for_each_seed("gguf_blocks", &[], |mut rng| {
        let mut chosen = std::collections::BTreeMap::new();
        tiny_llama_gguf_blocks(&path, &[], &[], None, &mut |name, values| {
            if !name.ends_with("proj.weight") {
                return None;
            }
            let ty = types[chosen.len() % types.len()];
            chosen.insert(name.to_string(), ty);
            Some((
                ty,
                common::random_blocks_scaled(ty, values.len() / 32, &mut rng, 0.005),
            ))
        });
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(chosen.len(), 14);
        assert_eq!(file.config().gguf_types, chosen);
        for (name, &ty) in &chosen {
            let shape = match name {
                n if n.contains("q_proj") || n.contains("o_proj") => vec![64, 64],
                n if n.contains("k_proj") || n.contains("v_proj") => vec![32, 64],
                n if n.contains("down_proj") => vec![64, 128],
                _ => vec![128, 64],
            };
            let (got_ty, bytes) = file.stored_blocks(name, &shape).unwrap();
            assert_eq!(got_ty, ty);
            let values = file.f32(name, &shape).unwrap();
            assert_eq!(dequantize(ty, &bytes), values, "{name}");
        }
        // Rows of another length are refused by name.
        let err = file
            .stored_blocks("model.layers.0.mlp.up_proj.weight", &[64, 128])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ffn_up") && err.contains("shape"), "{err}");

        let logits = |base: BaseFormat| base_logits(&file, base);
        let (codes_kernels, on_codes) = logits(BaseFormat::Gguf);
        let (f32_kernels, on_f32) = logits(BaseFormat::F32);
        assert_eq!((codes_kernels, f32_kernels), (14, 0));
        Tol::F32.check("logits on block codes vs f32", &on_codes, &on_f32);
    });
}

/// `merge --format gguf`: the tiny Llama's GGUF (q/k rows permuted) with the golden adapter
/// merged in gives PEFT's logits with the adapter, in f32 and within the rounding of f16 and
/// Q8_0; every metadata entry of the base is carried over as stored, `general.file_type` says
/// the new precision, norms stay f32.
#[test]
fn a_merged_gguf_gives_peft_logits() {
    use webqlora::lora::gguf_merge::{merged_gguf_bytes, GgufDtype};
    use webqlora::model::gguf::{read_raw_metadata, read_tensors};
    let dir = temp_dir("gguf-merge");
    let path = dir.join("tiny.gguf");
    tiny_llama_gguf(&path);
    let base = GgufFile::open(&path).unwrap();
    let adapter = webqlora::lora::peft::Adapter::load(&golden("tiny-llama/adapter")).unwrap();
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let want = expected.f32("logits_lora");
    let base_meta = read_raw_metadata(base.bytes(), "base").unwrap();
    for (dtype, ty, file_type, tol) in [
        (GgufDtype::F32, GgmlType::F32, 0, 1e-4),
        (GgufDtype::F16, GgmlType::F16, 1, 2e-3),
        (GgufDtype::Q8_0, GgmlType::Q8_0, 7, 2e-2),
    ] {
        let mut calls = 0;
        let bytes = merged_gguf_bytes(&base, &adapter, dtype, |_, _| calls += 1).unwrap();
        let out = dir.join(format!("merged-{dtype:?}.gguf"));
        std::fs::write(&out, &bytes).unwrap();
        let merged = GgufFile::open(&out).unwrap();
        Tol::rel(tol).check(
            format!("{dtype:?}: logits"),
            &gguf_logits("tiny-llama", &merged),
            &want,
        );
        // Against the base alone: the adapter is there.
        assert!(rel_err(&expected.f32("logits_base"), &want) > 10.0 * tol);
        let meta = read_raw_metadata(&bytes, "merged").unwrap();
        for entry in &base_meta {
            assert!(meta.contains(entry), "{} carried over", entry.0);
        }
        let ft = meta.iter().find(|m| m.0 == "general.file_type").unwrap();
        assert_eq!(
            (ft.1, &ft.2[..]),
            (4, &(file_type as u32).to_le_bytes()[..])
        );
        let (_, tensors) = read_tensors(&bytes, "merged").unwrap();
        assert_eq!(calls, tensors.len());
        for (name, (t, shape, _)) in &tensors {
            let want_ty = if shape.len() == 1 { GgmlType::F32 } else { ty };
            assert_eq!(*t, want_ty, "{name}");
        }
    }
    // An adapter of another shape is refused, naming the tensor.
    let mut wrong = adapter.clone();
    let name = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight";
    let (shape, values) = wrong.tensors.get_mut(name).unwrap();
    shape[1] -= 1;
    values.truncate(shape[0] * shape[1]);
    let err = merged_gguf_bytes(&base, &wrong, GgufDtype::F16, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains(name), "{err}");
}

/// A DoRA adapter merged into the GGUF (its magnitudes permuted with the q and k rows) gives
/// PEFT's DoRA logits (tests/data/dora).
#[test]
fn a_merged_dora_gguf_gives_peft_logits() {
    use webqlora::lora::gguf_merge::{merged_gguf_bytes, GgufDtype};
    let dir = temp_dir("gguf-merge-dora");
    let path = dir.join("tiny.gguf");
    tiny_llama_gguf(&path);
    let base = GgufFile::open(&path).unwrap();
    let adapter = webqlora::lora::peft::Adapter::load(&common::test_data("dora/adapter")).unwrap();
    let bytes = merged_gguf_bytes(&base, &adapter, GgufDtype::F32, |_, _| {}).unwrap();
    let out = dir.join("merged.gguf");
    std::fs::write(&out, &bytes).unwrap();
    let want = Golden::open_test_data("dora/expected.safetensors").f32("logits");
    Tol::GOLDEN.check(
        "merged DoRA GGUF logits",
        &gguf_logits("tiny-llama", &GgufFile::open(&out).unwrap()),
        &want,
    );
    // Without its magnitudes, the adapter is refused.
    let mut partial = adapter.clone();
    partial
        .tensors
        .retain(|n, _| !n.ends_with("layers.0.self_attn.k_proj.lora_magnitude_vector"));
    let err = merged_gguf_bytes(&base, &partial, GgufDtype::F32, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("no magnitude"), "{err}");
}

/// The command: `merge --format gguf` writes the file; a folder base, `--base nf4`, an
/// existing output (without --force) and q8_0 folders are refused, naming why.
#[test]
fn merge_format_gguf_command() {
    let dir = temp_dir("gguf-merge-cli");
    let path = dir.join("tiny.gguf");
    tiny_llama_gguf(&path);
    let out = dir.join("merged.gguf");
    let adapter = golden("tiny-llama/adapter");
    let run = |model: &std::path::Path, extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
            .arg("merge")
            .arg("--model")
            .arg(model)
            .arg("--adapter")
            .arg(&adapter)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (ok, err) = run(&path, &["--format", "gguf", "--dtype", "q8_0"]);
    assert!(ok, "{err}");
    assert!(GgufFile::open(&out).is_ok());
    let (ok, err) = run(&path, &["--format", "gguf"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, err) = run(&path, &["--format", "gguf", "--force", "--base", "nf4"]);
    assert!(!ok && err.contains("--base nf4"), "{err}");
    let folder = golden("tiny-llama/base-f32");
    let (ok, err) = run(&folder, &["--format", "gguf", "--force"]);
    assert!(!ok && err.contains("GGUF file"), "{err}");
    let (ok, err) = run(&path, &["--dtype", "q8_0", "--force"]);
    assert!(!ok && err.contains("q8_0"), "{err}");
    let (ok, err) = run(&path, &["--format", "gguf", "--force", "--dtype", "f16"]);
    assert!(ok, "{err}");
}
