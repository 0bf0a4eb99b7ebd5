//! q/k/v projection biases (qwen2) and attention_bias (llama: o too), on models built from
//! the golden tiny Llama: zero biases give the Llama's logits; a v bias equals an o bias of
//! W_o·b (attention weights sum to one); the KV-cache decoder agrees with the full forward.

mod common;

use std::path::Path;

use common::{golden, rel_err, temp_dir, tiny_llama_logits, Golden, Tol};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use webqlora::model::transformer::BaseFormat;

/// The tiny Llama with `config` changes and extra tensors, as a new folder.
fn variant(
    test: &str,
    config: &[(&str, serde_json::Value)],
    extra: &[(String, Vec<usize>, Vec<f32>)],
) -> common::TempDir {
    let dir = temp_dir(test);
    let src = golden("tiny-llama/base-f32");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    for (k, v) in config {
        json[*k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let model = Golden::open("tiny-llama/base-f32/model.safetensors");
    let tensors = model.tensors();
    let mut views: Vec<(String, TensorView)> = tensors
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                TensorView::new(v.dtype(), v.shape().to_vec(), v.data()).unwrap(),
            )
        })
        .collect();
    let extra_bytes: Vec<Vec<u8>> = extra
        .iter()
        .map(|(_, _, v)| bytemuck::cast_slice(v).to_vec())
        .collect();
    for ((name, shape, _), bytes) in extra.iter().zip(&extra_bytes) {
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir
}

fn biases(
    which: &[&str],
    mut value: impl FnMut(usize) -> Vec<f32>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for layer in 0..2 {
        for m in which {
            let n = match *m {
                "q_proj" | "o_proj" => 64,
                _ => 32,
            };
            out.push((
                format!("model.layers.{layer}.self_attn.{m}.bias"),
                vec![n],
                value(n),
            ));
        }
    }
    out
}

fn logits(dir: &Path) -> Vec<f32> {
    tiny_llama_logits(dir, BaseFormat::F32, None)
}

#[test]
fn zero_biases_give_the_llama_logits() {
    let qwen = variant(
        "qwen2-zero",
        &[("model_type", "qwen2".into())],
        &biases(&["q_proj", "k_proj", "v_proj"], |n| vec![0.0; n]),
    );
    let want = Golden::open("tiny-llama/expected.safetensors").f32("logits_base");
    Tol::F32.check("output", &logits(&qwen), &want);
}

#[test]
fn a_v_bias_equals_an_o_bias_of_wo_b() {
    common::for_each_seed("qwen2-bias", &[], |mut rng| {
        let v_bias: Vec<Vec<f32>> = (0..2)
            .map(|_| common::random_f32(&mut rng, 32, 0.5))
            .collect();
        let mut qkv = biases(&["q_proj", "k_proj"], |n| vec![0.0; n]);
        for (layer, b) in v_bias.iter().enumerate() {
            qkv.push((
                format!("model.layers.{layer}.self_attn.v_proj.bias"),
                vec![32],
                b.clone(),
            ));
        }
        let qwen = variant("qwen2-v", &[("model_type", "qwen2".into())], &qkv);

        // o bias = W_o · (b_v repeated for the query heads of each kv head: 4 heads, 2 kv heads).
        let model = Golden::open("tiny-llama/base-f32/model.safetensors");
        let mut with_o = biases(&["q_proj", "k_proj", "v_proj"], |n| vec![0.0; n]);
        for (layer, b) in v_bias.iter().enumerate() {
            let wo = model.f32(&format!("model.layers.{layer}.self_attn.o_proj.weight"));
            let b_heads: Vec<f32> = (0..4)
                .flat_map(|h| b[(h / 2) * 16..(h / 2 + 1) * 16].to_vec())
                .collect();
            let o: Vec<f32> = (0..64)
                .map(|i| (0..64).map(|j| wo[i * 64 + j] * b_heads[j]).sum())
                .collect();
            with_o.push((
                format!("model.layers.{layer}.self_attn.o_proj.bias"),
                vec![64],
                o,
            ));
        }
        let llama = variant("llama-o", &[("attention_bias", true.into())], &with_o);
        let (a, b) = (logits(&qwen), logits(&llama));
        Tol::F32.check("output", &a, &b);
        let base = Golden::open("tiny-llama/expected.safetensors").f32("logits_base");
        assert!(rel_err(&a, &base) > 1e-3, "the bias changed the logits");
    });
}

#[test]
fn decoding_with_biases_equals_the_full_forward() {
    use webqlora::model::load::upload_model;
    use webqlora::model::safetensors_files::SafetensorsFiles;
    use webqlora::model::transformer_decode::Decoder;
    use webqlora::model::ModelConfig;
    common::for_each_seed("qwen2-decode", &[], |mut rng| {
        let qwen = variant(
            "qwen2-decode",
            &[("model_type", "qwen2".into())],
            &biases(&["q_proj", "k_proj", "v_proj"], |n| {
                common::random_f32(&mut rng, n, 0.5)
            }),
        );
        let expected = Golden::open("tiny-llama/expected.safetensors");
        let (_, shape, bytes) = expected.raw("input_ids");
        let ids: Vec<u32> = bytemuck::pod_collect_to_vec::<u8, i64>(bytes)
            .iter()
            .map(|&i| i as u32)
            .collect();
        let seq = shape[1];
        let config = ModelConfig::load(&qwen).unwrap();
        let files = SafetensorsFiles::open_dir(&qwen).unwrap();
        let gpu = common::gpu();
        let decoder =
            Decoder::new(gpu, &config, BaseFormat::Nf4 { blocksize: 64 }, None, seq).unwrap();
        upload_model(
            gpu,
            &decoder.compiled,
            &decoder.model,
            &files,
            BaseFormat::Nf4 { blocksize: 64 },
            None,
        )
        .unwrap();
        let nf4_full = tiny_llama_logits(&qwen, BaseFormat::Nf4 { blocksize: 64 }, None);
        for pos in 0..seq {
            let got = pollster::block_on(decoder.feed(gpu, ids[pos], pos, true))
                .unwrap()
                .unwrap();
            Tol::GOLDEN.check(
                format!("pos {pos}"),
                &got,
                &nf4_full[pos * 256..(pos + 1) * 256],
            );
        }
    });
}
