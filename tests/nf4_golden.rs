//! NF4 against bitsandbytes: first-level codes bit-identical, dequantization of the stored
//! bitsandbytes tensors bit-identical, nested codes identical to bitsandbytes' CPU path (which
//! golden/README.md allows to differ; `dynamic_map::CellTable` reproduces it).

mod common;

use common::{golden_json, Golden, Tol};
use webqlora::quant::dynamic_map::signed_dynamic_map;
use webqlora::quant::nf4::{Absmax, DoubleQuant, Nf4Tensor, NF4_MAP};

const CASES: [&str; 5] = [
    "normal_192x576",
    "odd_7x33",
    "outliers_64x128",
    "zero_block_4x64",
    "large_512x576",
];

fn vectors() -> Golden {
    Golden::open("nf4/bnb_nf4_vectors.safetensors")
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn quant_map_and_dynamic_map_are_bitsandbytes_own() {
    let g = vectors();
    for case in CASES {
        assert_eq!(
            bits(&g.f32(&format!("{case}.plain.quant_map"))),
            bits(&NF4_MAP),
            "{case}"
        );
        let nested = g.f32(&format!("{case}.dq.nested_quant_map"));
        assert_eq!(bits(&nested), bits(&signed_dynamic_map()), "{case}");
    }
}

#[test]
fn plain_quantization_is_bit_identical() {
    let g = vectors();
    for case in CASES {
        let p = format!("{case}.plain");
        let input = g.f32(&format!("{p}.input"));
        let shape = g.shape(&format!("{p}.input"));
        let t = Nf4Tensor::quantize(&input, &shape, 64, false).unwrap();
        assert_eq!(
            t.packed,
            g.u8(&format!("{p}.packed")),
            "{case}: packed codes"
        );
        assert_eq!(
            bits(&t.absmax_f32()),
            bits(&g.f32(&format!("{p}.absmax_f32"))),
            "{case}: absmax"
        );
        assert_eq!(
            bits(&t.dequantize()),
            bits(&g.f32(&format!("{p}.dequantized"))),
            "{case}: dequantized"
        );
    }
}

#[test]
fn double_quantization_matches_bitsandbytes_cpu() {
    let g = vectors();
    let meta = golden_json("nf4/bnb_nf4_vectors.json");
    for case in CASES {
        let p = format!("{case}.dq");
        let input = g.f32(&format!("{p}.input"));
        let shape = g.shape(&format!("{p}.input"));
        let t = Nf4Tensor::quantize(&input, &shape, 64, true).unwrap();
        assert_eq!(
            t.packed,
            g.u8(&format!("{p}.packed")),
            "{case}: first-level codes"
        );
        let Absmax::Double(dq) = &t.absmax else {
            panic!("double quant expected")
        };

        let want_offset = meta[&p]["nested_offset"].as_f64().unwrap() as f32;
        let ulps = (dq.offset.to_bits() as i64 - want_offset.to_bits() as i64).abs();
        assert!(ulps <= 2, "{case}: offset {} vs {want_offset}", dq.offset);

        // Coded as bitsandbytes' CPU path codes them (its cell table), so identical.
        let want_codes = g.u8(&format!("{p}.absmax_codes"));
        assert_eq!(dq.codes, want_codes, "{case}: nested codes");
        let want_nested = g.f32(&format!("{p}.nested_absmax"));
        for (a, b) in dq.nested_absmax.iter().zip(&want_nested) {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs(),
                "{case}: nested absmax {a} vs {b}"
            );
        }
    }
}

#[test]
fn dequantizing_stored_bitsandbytes_tensors_is_bit_identical() {
    let g = vectors();
    let meta = golden_json("nf4/bnb_nf4_vectors.json");
    for case in CASES {
        let p = format!("{case}.dq");
        let stored = Nf4Tensor {
            shape: g.shape(&format!("{p}.input")),
            blocksize: 64,
            packed: g.u8(&format!("{p}.packed")),
            absmax: Absmax::Double(DoubleQuant {
                codes: g.u8(&format!("{p}.absmax_codes")),
                nested_absmax: g.f32(&format!("{p}.nested_absmax")),
                nested_map: g.f32(&format!("{p}.nested_quant_map")),
                offset: meta[&p]["nested_offset"].as_f64().unwrap() as f32,
                nested_blocksize: 256,
            }),
            quant_map: NF4_MAP,
        };
        assert_eq!(
            bits(&stored.absmax_f32()),
            bits(&g.f32(&format!("{p}.absmax_f32"))),
            "{case}: absmax"
        );
        assert_eq!(
            bits(&stored.dequantize()),
            bits(&g.f32(&format!("{p}.dequantized"))),
            "{case}: dequantized"
        );
    }
}

/// transformers + bitsandbytes quantized the tiny Llama's f32 weights: quantizing the same
/// weights gives the same checkpoint tensors, and loading theirs round-trips through ours.
#[test]
fn tiny_llama_checkpoint_round_trips() {
    let f32_model = Golden::open("tiny-llama/base-f32/model.safetensors");
    let bnb = Golden::open("tiny-llama/base-bnb-nf4/model.safetensors");
    let quantized: Vec<String> = bnb
        .names()
        .into_iter()
        .filter_map(|n| {
            n.strip_suffix(".quant_state.bitsandbytes__nf4")
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        quantized.len(),
        14,
        "seven linear layers in each of two layers"
    );
    let mut checked_state_text = 0;
    for name in quantized {
        let theirs = Nf4Tensor::from_bnb(&name, |n| {
            bnb.names().contains(&n.to_string()).then(|| bnb.raw(n))
        })
        .unwrap();
        let weight = f32_model.f32(&name);
        let shape = f32_model.shape(&name);
        assert_eq!(theirs.shape, shape, "{name}");
        let ours = Nf4Tensor::quantize(&weight, &shape, 64, true).unwrap();
        assert_eq!(ours.packed, theirs.packed, "{name}: codes");

        // Our bnb tensors load back to the same quantized weight.
        let saved = ours.to_bnb();
        let reloaded = Nf4Tensor::from_bnb(&name, |n| {
            saved
                .iter()
                .find(|(suffix, ..)| format!("{name}{suffix}") == n)
                .map(|(_, dtype, shape, bytes)| (*dtype, shape.clone(), bytes.as_slice()))
        })
        .unwrap();
        assert_eq!(reloaded, ours, "{name}");
        // The same tensors, shapes and dtypes as bitsandbytes saves; the same quant state
        // text whenever the offsets agree.
        let Absmax::Double(dq) = &ours.absmax else {
            panic!("double quant expected")
        };
        let Absmax::Double(their_dq) = &theirs.absmax else {
            panic!("double quant expected")
        };
        // The nested codes too; the offset (a mean, summed in another order) may differ in
        // its last bits, and the nested scales (largest distance from it) with it.
        assert_eq!(dq.codes, their_dq.codes, "{name}: nested codes");
        let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).abs();
        assert!(ulps(dq.offset, their_dq.offset) <= 2, "{name}: offset");
        let offset_step = 2.0 * f32::EPSILON * dq.offset.abs().max(their_dq.offset.abs());
        for (a, b) in dq.nested_absmax.iter().zip(&their_dq.nested_absmax) {
            let close = (a - b).abs() <= offset_step + f32::EPSILON * b.abs();
            assert!(close, "{name}: nested absmax {a} vs {b}");
        }
        for (suffix, dtype, shape, bytes) in &saved {
            let n = format!("{name}{suffix}");
            let (their_dtype, their_shape, their_bytes) = bnb.raw(&n);
            assert_eq!(*dtype, their_dtype, "{n}");
            if !suffix.starts_with(".quant_state") {
                assert_eq!(shape, &their_shape, "{n}");
            } else if dq.offset == their_dq.offset {
                assert_eq!(bytes.as_slice(), their_bytes, "{n}");
                checked_state_text += 1;
            }
        }
        assert_eq!(
            saved.len(),
            bnb.names().iter().filter(|n| n.starts_with(&name)).count()
        );
        // Their dequantized weight is close to the f32 original (NF4 error only).
        let deq = theirs.dequantize();
        Tol::rel(0.12).check(format!("{name}: NF4 vs the f32 weight"), &deq, &weight);
    }
    assert!(
        checked_state_text > 0,
        "no offset agreed, so no quant state text was compared"
    );
}

#[test]
fn bad_checkpoint_tensors_are_named() {
    let bnb = Golden::open("tiny-llama/base-bnb-nf4/model.safetensors");
    let name = "model.layers.0.self_attn.q_proj.weight";
    let names = bnb.names();
    let missing = Nf4Tensor::from_bnb(name, |n| {
        (n != format!("{name}.absmax") && names.contains(&n.to_string())).then(|| bnb.raw(n))
    })
    .unwrap_err();
    assert_eq!(
        missing.to_string(),
        format!("tensor '{name}.absmax' is missing")
    );

    let wrong = Nf4Tensor::from_bnb(name, |n| {
        if n == format!("{name}.nested_absmax") {
            Some((safetensors::Dtype::F16, vec![1], &[0u8, 0][..]))
        } else {
            names.contains(&n.to_string()).then(|| bnb.raw(n))
        }
    })
    .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        format!("tensor '{name}.nested_absmax' is F16, expected F32")
    );

    let state = br#"{"quant_type": "fp4", "blocksize": 64, "shape": [64, 64]}"#;
    let fp4 = Nf4Tensor::from_bnb(name, |n| {
        if n.ends_with("bitsandbytes__nf4") {
            Some((safetensors::Dtype::U8, vec![state.len()], &state[..]))
        } else {
            names.contains(&n.to_string()).then(|| bnb.raw(n))
        }
    })
    .unwrap_err();
    assert!(
        fp4.to_string()
            .contains("quant_type \"fp4\" is not supported"),
        "{fp4}"
    );
}
