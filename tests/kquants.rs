//! GGUF block formats beyond Q4_0/Q4_1/Q8_0: gguf-py's dequantization of real Gemma 3 tensors
//! reproduced bit for bit (Q8_0, Q5_0, Q4_K, Q6_K), every type against a second reference
//! written from ggml's block loops (`dequantize_row_*` in ggml-quants.c) on random blocks, and
//! round trips: codes and scales chosen, packed by the layout, dequantized to what the
//! formula gives.

mod common;

use common::{golden, random_blocks, Golden};
use half::f16;
use rand::{Rng, SeedableRng};
use webqlora::quant::ggml::{dequantize, GgmlType};

#[test]
fn real_gemma3_blocks_dequantize_bit_identically_to_gguf_py() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("ggml/kquant_vectors.json")).unwrap())
            .unwrap();
    let vectors = Golden::open("ggml/kquant_vectors.safetensors");
    let types = json["types"].as_object().unwrap();
    assert_eq!(types.len(), 4);
    for (name, info) in types {
        let ty = GgmlType::from_id(info["ggml_type"].as_u64().unwrap() as u32).unwrap();
        assert_eq!(ty.name(), name);
        let (_, shape, raw) = vectors.raw(&format!("{name}.raw"));
        let want = vectors.f32(&format!("{name}.dequantized"));
        let got = dequantize(ty, raw);
        assert_eq!(shape[0], info["rows"].as_u64().unwrap() as usize);
        assert_eq!(got.len(), want.len(), "{name}");
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{name}: {differ} values differ from gguf-py");
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// ggml-quants.c's `dequantize_row_*` loops, transcribed per block.
fn ggml_reference(ty: GgmlType, x: &[u8]) -> Vec<f32> {
    let mut y = Vec::new();
    match ty {
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let one = ty == GgmlType::Q5_1;
            let d = h(x, 0);
            let m = if one { h(x, 2) } else { 0.0 };
            let o = if one { 4 } else { 2 };
            let qh = u32::from_le_bytes([x[o], x[o + 1], x[o + 2], x[o + 3]]);
            let qs = &x[o + 4..o + 20];
            let mut out = [0.0f32; 32];
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = (qs[j] & 0x0f) | xh0;
                let x1 = (qs[j] >> 4) | xh1;
                if one {
                    out[j] = x0 as f32 * d + m;
                    out[j + 16] = x1 as f32 * d + m;
                } else {
                    out[j] = (x0 as i32 - 16) as f32 * d;
                    out[j + 16] = (x1 as i32 - 16) as f32 * d;
                }
            }
            y.extend(out);
        }
        GgmlType::Q2K => {
            let (scales, mut q) = (&x[0..16], &x[16..80]);
            let (d, min) = (h(x, 80), h(x, 82));
            let mut is = 0;
            for _ in 0..2 {
                let mut shift = 0;
                for _ in 0..4 {
                    for half in [0, 16] {
                        let sc = scales[is];
                        is += 1;
                        let dl = d * (sc & 0xf) as f32;
                        let ml = min * (sc >> 4) as f32;
                        for l in 0..16 {
                            y.push(dl * (((q[l + half] >> shift) & 3) as i8) as f32 - ml);
                        }
                    }
                    shift += 2;
                }
                q = &q[32..];
            }
        }
        GgmlType::Q3K => {
            let (hm, mut q, sc) = (&x[0..32], &x[32..96], &x[96..108]);
            let d_all = h(x, 108);
            let mut aux = [0u32; 4];
            for (i, a) in aux.iter_mut().take(3).enumerate() {
                *a = u32::from_le_bytes([sc[4 * i], sc[4 * i + 1], sc[4 * i + 2], sc[4 * i + 3]]);
            }
            let (kmask1, kmask2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
            let tmp = aux[2];
            aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
            aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
            aux[0] = (aux[0] & kmask2) | ((tmp & kmask1) << 4);
            aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
            let scales: Vec<i8> = aux
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .map(|b| b as i8)
                .collect();
            let (mut is, mut m) = (0, 1u8);
            for _ in 0..2 {
                let mut shift = 0;
                for _ in 0..4 {
                    for half in [0, 16] {
                        let dl = d_all * (scales[is] as i32 - 32) as f32;
                        is += 1;
                        for l in 0..16 {
                            let low = ((q[l + half] >> shift) & 3) as i8;
                            let sub = if hm[l + half] & m != 0 { 0 } else { 4 };
                            y.push(dl * (low - sub) as f32);
                        }
                    }
                    shift += 2;
                    m <<= 1;
                }
                q = &q[32..];
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let five = ty == GgmlType::Q5K;
            let (d, min) = (h(x, 0), h(x, 2));
            let scales = &x[4..16];
            let (qh, mut ql) = if five {
                (&x[16..48], &x[48..176])
            } else {
                (&x[0..0], &x[16..144])
            };
            let get = |j: usize| -> (u8, u8) {
                if j < 4 {
                    (scales[j] & 63, scales[j + 4] & 63)
                } else {
                    (
                        (scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4),
                        (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
                    )
                }
            };
            let (mut is, mut u1, mut u2) = (0, 1u8, 2u8);
            for _ in 0..4 {
                let (sc, m) = get(is);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get(is + 1);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                for l in 0..32 {
                    let hi = if five && qh[l] & u1 != 0 { 16 } else { 0 };
                    y.push(d1 * ((ql[l] & 0xf) + hi) as f32 - m1);
                }
                for l in 0..32 {
                    let hi = if five && qh[l] & u2 != 0 { 16 } else { 0 };
                    y.push(d2 * ((ql[l] >> 4) + hi) as f32 - m2);
                }
                ql = &ql[32..];
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
            }
        }
        GgmlType::Q6K => {
            let d = h(x, 208);
            let (mut ql, mut qh, mut sc) = (&x[0..128], &x[128..192], &x[192..208]);
            for _ in 0..2 {
                let mut out = [0.0f32; 128];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xf) | (qh[l] & 3) << 4) as i8 - 32;
                    let q2 = ((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4) as i8 - 32;
                    let q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) as i8 - 32;
                    let q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) as i8 - 32;
                    out[l] = d * sc[is] as i8 as f32 * q1 as f32;
                    out[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                    out[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                    out[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
                }
                y.extend(out);
                ql = &ql[64..];
                qh = &qh[32..];
                sc = &sc[8..];
            }
        }
        other => panic!("no reference for {other:?}"),
    }
    y
}

const TYPES: [GgmlType; 7] = [
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

#[test]
fn every_type_matches_ggmls_block_loops_on_random_blocks() {
    common::for_each_seed("kquants_random", &[], |mut rng| {
        for ty in TYPES {
            let data = random_blocks(ty, 37, &mut rng);
            let ours = dequantize(ty, &data);
            let theirs: Vec<f32> = data
                .chunks_exact(ty.block().1)
                .flat_map(|b| ggml_reference(ty, b))
                .collect();
            assert_eq!(ours.len(), 37 * ty.block().0);
            let differ = ours
                .iter()
                .zip(&theirs)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "{}: {differ} values differ", ty.name());
        }
    });
}

/// Pack chosen codes and scales by the layouts in `quant::ggml` and check the formula.
#[test]
fn chosen_codes_round_trip_through_the_block_layouts() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let d = f16::from_f32(0.125);
    let dmin = f16::from_f32(0.0625);
    let (df, dminf) = (d.to_f32(), dmin.to_f32());

    // Q4_K / Q5_K: eight 6-bit scales and mins, 4- or 5-bit codes.
    for five in [false, true] {
        let sc: Vec<u8> = (0..8).map(|_| rng.random_range(0..64)).collect();
        let mn: Vec<u8> = (0..8).map(|_| rng.random_range(0..64)).collect();
        let q: Vec<u8> = (0..256)
            .map(|_| rng.random_range(0..if five { 32 } else { 16 }))
            .collect();
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] & 63 | (sc[j + 4] >> 4) << 6;
            packed[j + 4] = mn[j] & 63 | (mn[j + 4] >> 4) << 6;
            packed[j + 8] = (sc[j + 4] & 0xf) | (mn[j + 4] & 0xf) << 4;
        }
        let mut block = [d.to_le_bytes(), dmin.to_le_bytes()].concat();
        block.extend(packed);
        if five {
            let mut qh = [0u8; 32];
            for (i, &v) in q.iter().enumerate() {
                qh[i % 32] |= (v >> 4) << (i / 32);
            }
            block.extend(qh);
        }
        let mut qs = [0u8; 128];
        for (i, &v) in q.iter().enumerate() {
            let (sub, l) = (i / 32, i % 32);
            qs[(sub / 2) * 32 + l] |= (v & 0xf) << (4 * (sub % 2));
        }
        block.extend(qs);
        let ty = if five { GgmlType::Q5K } else { GgmlType::Q4K };
        let want: Vec<f32> = (0..256)
            .map(|i| df * sc[i / 32] as f32 * q[i] as f32 - dminf * mn[i / 32] as f32)
            .collect();
        assert_eq!(dequantize(ty, &block), want, "{}", ty.name());
    }

    // Q6_K: sixteen signed scales, 6-bit codes centred on 32.
    let sc: Vec<i8> = (0..16).map(|_| rng.random_range(-128..128) as i8).collect();
    let q: Vec<u8> = (0..256).map(|_| rng.random_range(0..64)).collect();
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for (i, &v) in q.iter().enumerate() {
        let (half, w) = (i / 128, i % 128);
        ql[half * 64 + w % 64] |= (v & 0xf) << (4 * (w / 64));
        qh[half * 32 + w % 32] |= (v >> 4) << (2 * (w / 32));
    }
    let mut block = [&ql[..], &qh[..]].concat();
    block.extend(sc.iter().map(|&s| s as u8));
    block.extend(d.to_le_bytes());
    let want: Vec<f32> = (0..256)
        .map(|i| df * sc[i / 16] as f32 * (q[i] as i32 - 32) as f32)
        .collect();
    assert_eq!(dequantize(GgmlType::Q6K, &block), want);

    // Q2_K: 4-bit scales and mins in one byte, 2-bit codes.
    let sc: Vec<u8> = (0..16).map(|_| rng.random()).collect();
    let q: Vec<u8> = (0..256).map(|_| rng.random_range(0..4)).collect();
    let mut qs = [0u8; 64];
    for (i, &v) in q.iter().enumerate() {
        let (half, w) = (i / 128, i % 128);
        qs[half * 32 + w % 32] |= v << (2 * (w / 32));
    }
    let mut block = sc.clone();
    block.extend(qs);
    block.extend(d.to_le_bytes());
    block.extend(dmin.to_le_bytes());
    let want: Vec<f32> = (0..256)
        .map(|i| df * (sc[i / 16] & 0xf) as f32 * q[i] as f32 - dminf * (sc[i / 16] >> 4) as f32)
        .collect();
    assert_eq!(dequantize(GgmlType::Q2K, &block), want);

    // Q3_K: 6-bit scales centred on 32, 3-bit codes whose high bit set means no -4.
    let sc: Vec<u8> = (0..16).map(|_| rng.random_range(0..64)).collect();
    let q: Vec<i8> = (0..256).map(|_| rng.random_range(-4..4)).collect();
    let (mut hmask, mut qs, mut packed) = ([0u8; 32], [0u8; 64], [0u8; 12]);
    for (i, &v) in q.iter().enumerate() {
        let (low, high) = if v >= 0 {
            (v as u8, 1)
        } else {
            ((v + 4) as u8, 0)
        };
        hmask[i % 32] |= high << (i / 32);
        let (half, w) = (i / 128, i % 128);
        qs[half * 32 + w % 32] |= low << (2 * (w / 32));
    }
    for (s, &v) in sc.iter().enumerate() {
        packed[s % 8] |= (v & 0xf) << (4 * (s / 8));
        packed[8 + s % 4] |= (v >> 4) << (2 * (s / 4));
    }
    let mut block = [&hmask[..], &qs[..], &packed[..]].concat();
    block.extend(d.to_le_bytes());
    let want: Vec<f32> = (0..256)
        .map(|i| df * (sc[i / 16] as i32 - 32) as f32 * q[i] as f32)
        .collect();
    assert_eq!(dequantize(GgmlType::Q3K, &block), want);

    // Q5_0 / Q5_1: 5-bit codes, the fifth bits in one word.
    let q: Vec<u8> = (0..32).map(|_| rng.random_range(0..32)).collect();
    let high: u32 = q
        .iter()
        .enumerate()
        .map(|(i, &v)| ((v >> 4) as u32) << i)
        .sum();
    let low: Vec<u8> = (0..16)
        .map(|j| (q[j] & 0xf) | (q[j + 16] & 0xf) << 4)
        .collect();
    let mut q5_0 = d.to_le_bytes().to_vec();
    q5_0.extend(high.to_le_bytes());
    q5_0.extend(&low);
    let want: Vec<f32> = q.iter().map(|&v| df * (v as i32 - 16) as f32).collect();
    assert_eq!(dequantize(GgmlType::Q5_0, &q5_0), want);
    let mut q5_1 = [d.to_le_bytes(), dmin.to_le_bytes()].concat();
    q5_1.extend(high.to_le_bytes());
    q5_1.extend(&low);
    let want: Vec<f32> = q.iter().map(|&v| df * v as f32 + dminf).collect();
    assert_eq!(dequantize(GgmlType::Q5_1, &q5_1), want);
}

/// Q8_0 as the merged GGUF writes it (`quantize_q8_0`, ggml's reference rule): each block's
/// scale is its largest magnitude / 127 (in f16), every value within half a step of its
/// original, the largest exactly ±127 steps, and an all-zero block stays zero.
#[test]
fn q8_0_quantization_round_trips_within_half_a_step() {
    use webqlora::quant::ggml::quantize_q8_0;
    common::for_each_seed("q8_0", &[], |mut rng| {
        let mut values = common::random_f32(&mut rng, 32 * 37, 3.0);
        values[32..64].iter_mut().for_each(|v| *v = 0.0);
        let bytes = quantize_q8_0(&values);
        assert_eq!(bytes.len(), 37 * 34);
        let back = dequantize(GgmlType::Q8_0, &bytes);
        for (b, (block, got)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
            let d = f16::from_le_bytes([bytes[b * 34], bytes[b * 34 + 1]]).to_f32();
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(
                (d - amax / 127.0).abs() <= amax / 127.0 * 1e-3,
                "block {b}: d {d}"
            );
            for (x, y) in block.iter().zip(got) {
                assert!(
                    (x - y).abs() <= d * 0.5 + amax * 1e-3,
                    "block {b}: {x} -> {y}"
                );
            }
            let qs = &bytes[b * 34 + 2..b * 34 + 34];
            if amax > 0.0 {
                assert!(
                    qs.iter().any(|&q| q as i8 == 127 || q as i8 == -127),
                    "block {b}"
                );
            } else {
                assert!(got.iter().all(|&y| y == 0.0));
            }
        }
    });
}
