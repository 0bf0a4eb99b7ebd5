//! The dequant-matmuls on GGUF block codes (`ops::ggml_matmul`, `--base gguf`) against the
//! CPU: every block type decoded on the GPU exactly as gguf-py dequantizes it (real Gemma 3
//! blocks and random ones), and the forward, backward (written and accumulated) and one-token
//! products against an f64 reference on the dequantized weight, at sizes that are not
//! multiples of the tiles, outputs poisoned before the kernels run; the same with a LoRA
//! adapter's term inside each product.

mod common;

use common::{bytes, for_each_seed, random_blocks, random_f32, run_graph, Golden, Tol};
use rand::Rng;
use webqlora::graph::{DType, Graph};
use webqlora::ops::ggml_matmul::{self, upload_bytes, GgmlWeight};
use webqlora::ops::nf4_matmul::LowRank;
use webqlora::quant::ggml::{dequantize, GgmlType};

const TYPES: [GgmlType; 10] = GgmlType::QUANTIZED;

/// W [out, in] as the GPU decodes it: the product of the identity [in, in] with Wᵀ (every
/// output is one weight times one plus zeros, so exactly the decoded weight, up to the sign
/// of zero).
fn gpu_decoded(ty: GgmlType, raw: &[u8], out: usize, inp: usize) -> Vec<f32> {
    let mut g = Graph::new();
    let x = g.input("x", &[inp, inp], DType::F32);
    let w = GgmlWeight::declare(&mut g, "w", [out, inp], ty).unwrap();
    let y = ggml_matmul::forward(&mut g, "y", x, &w).unwrap();
    let mut eye = vec![0.0f32; inp * inp];
    (0..inp).for_each(|i| eye[i * inp + i] = 1.0);
    let got = run_graph(
        g,
        &[(x, bytes(&eye)), (w.codes, upload_bytes(ty, raw))],
        &[y],
    );
    // y is Wᵀ [in, out].
    let yt = &got[0];
    (0..out * inp)
        .map(|i| yt[(i % inp) * out + i / inp])
        .collect()
}

/// Values whose bits differ, but for the sign of zero (a product's sum of +0 and -0 is +0).
fn differing(got: &[f32], want: &[f32]) -> usize {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits() && !(**a == 0.0 && **b == 0.0))
        .count()
}

#[test]
fn real_gemma3_blocks_decode_on_the_gpu_as_gguf_py_dequantizes_them() {
    let vectors = Golden::open("ggml/kquant_vectors.safetensors");
    for ty in [GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4K, GgmlType::Q6K] {
        let (_, shape, raw) = vectors.raw(&format!("{}.raw", ty.name()));
        let want = vectors.f32(&format!("{}.dequantized", ty.name()));
        let (rows, inp) = (shape[0], want.len() / shape[0]);
        let got = gpu_decoded(ty, raw, rows, inp);
        assert_eq!(differing(&got, &want), 0, "{}", ty.name());
    }
}

#[test]
fn every_block_type_decodes_on_the_gpu_as_on_the_cpu() {
    for_each_seed("ggml_decode", &[], |mut rng| {
        for ty in TYPES {
            let (values, _) = ty.block();
            let (out, inp) = (37, 2 * values);
            let raw = random_blocks(ty, out * 2, &mut rng);
            let got = gpu_decoded(ty, &raw, out, inp);
            let want = dequantize(ty, &raw);
            assert_eq!(differing(&got, &want), 0, "{}", ty.name());
        }
    });
}

/// y = x·Wᵀ, dx = dy·W and dx0 + dy·W in f64 over the dequantized weight.
fn reference(
    x: &[f32],
    dy: &[f32],
    dx0: &[f32],
    w: &[f32],
    rows: usize,
    out: usize,
    inp: usize,
) -> [Vec<f32>; 3] {
    let mut y = vec![0.0; rows * out];
    let mut dx = vec![0.0; rows * inp];
    for t in 0..rows {
        for o in 0..out {
            let s: f64 = (0..inp)
                .map(|i| x[t * inp + i] as f64 * w[o * inp + i] as f64)
                .sum();
            y[t * out + o] = s as f32;
        }
        for i in 0..inp {
            let s: f64 = (0..out)
                .map(|o| dy[t * out + o] as f64 * w[o * inp + i] as f64)
                .sum();
            dx[t * inp + i] = s as f32;
        }
    }
    let acc = dx.iter().zip(dx0).map(|(a, b)| a + b).collect();
    [y, dx, acc]
}

/// y, dx and dx0 + dx as the GPU gave them against the reference, within 2e-6 relative.
fn check_products(case: &str, got: &[Vec<f32>], want: &[Vec<f32>; 3]) {
    for (i, what) in ["y", "dx", "dx0 + dx"].into_iter().enumerate() {
        Tol::rel(2e-6).check(format!("{case}: {what}"), &got[i], &want[i]);
    }
}

#[test]
fn products_on_every_block_type_match_the_cpu() {
    for_each_seed("ggml_products", &[], |mut rng| {
        // (rows, out, blocks a row): rows below, at and across the 32-row tile; outputs and
        // inputs below and across the 64-wide tiles.
        for ty in TYPES {
            let values = ty.block().0;
            for (rows, out, blocks) in [(19, 37, 1), (70, 130, 3), (1, 75, 2)] {
                let inp = blocks * values;
                let raw = random_blocks(ty, out * blocks, &mut rng);
                let w_f32 = dequantize(ty, &raw);
                let x = random_f32(&mut rng, rows * inp, 1.0);
                let dy = random_f32(&mut rng, rows * out, 1.0);
                let dx0 = random_f32(&mut rng, rows * inp, 1.0);

                let mut g = Graph::new();
                let xt = g.input("x", &[rows, inp], DType::F32);
                let dyt = g.input("dy", &[rows, out], DType::F32);
                let dx0t = g.input("dx0", &[rows, inp], DType::F32);
                let w = GgmlWeight::declare(&mut g, "w", [out, inp], ty).unwrap();
                let y = ggml_matmul::forward(&mut g, "y", xt, &w).unwrap();
                let dx = ggml_matmul::backward(&mut g, "dx", dyt, &w).unwrap();
                ggml_matmul::backward_into(&mut g, "dx0 += dy W", dx0t, dyt, &w).unwrap();
                let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
                let forward = if rows == 1 {
                    "ggml_matvec"
                } else {
                    "ggml_matmul_forward"
                };
                assert_eq!(
                    kernels,
                    [forward, "ggml_matmul_backward", "ggml_matmul_backward_acc"]
                );
                let got = run_graph(
                    g,
                    &[
                        (xt, bytes(&x)),
                        (dyt, bytes(&dy)),
                        (dx0t, bytes(&dx0)),
                        (w.codes, upload_bytes(ty, &raw)),
                    ],
                    &[y, dx, dx0t],
                );
                let want = reference(&x, &dy, &dx0, &w_f32, rows, out, inp);
                let case = format!("{} rows {rows} out {out} in {inp}", ty.name());
                check_products(&case, &got, &want);
            }
        }
    });
}

/// s·a·bᵀ (a [rows, r], b [n, r]) added to `base` [rows, n], in f64.
fn plus_low_rank(base: &[f32], a: &[f32], b: &[f32], s: f32, rows: usize, r: usize) -> Vec<f32> {
    let n = base.len() / rows;
    (0..rows * n)
        .map(|e| {
            let (t, o) = (e / n, e % n);
            let term: f64 = (0..r)
                .map(|j| a[t * r + j] as f64 * b[o * r + j] as f64)
                .sum();
            (base[e] as f64 + s as f64 * term) as f32
        })
        .collect()
}

/// [r, n] → [n, r].
fn transposed(a: &[f32], r: usize, n: usize) -> Vec<f32> {
    (0..n * r).map(|e| a[(e % r) * n + e / r]).collect()
}

/// A LoRA adapter's term inside the products (`forward_lora`: y = x·Wᵀ + s·x_a·Bᵀ,
/// `backward_lora`: dx (+)= dy·W + s·dy_b·A), one kernel each, for ranks below, at and
/// across the 32-wide k step, against the CPU; one token takes the matvec with the term.
#[test]
fn adapter_terms_ride_in_the_products() {
    for_each_seed("ggml_lora", &[], |mut rng| {
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
            let values = ty.block().0;
            for (rows, out, blocks, r) in [
                (19, 37, 1, 1),
                (70, 130, 2, 16),
                (33, 65, 1, 33),
                (1, 40, 1, 8),
            ] {
                let inp = blocks * values;
                let raw = random_blocks(ty, out * blocks, &mut rng);
                let w_f32 = dequantize(ty, &raw);
                let x = random_f32(&mut rng, rows * inp, 1.0);
                let dy = random_f32(&mut rng, rows * out, 1.0);
                let dx0 = random_f32(&mut rng, rows * inp, 1.0);
                let xa = random_f32(&mut rng, rows * r, 1.0);
                let dyb = random_f32(&mut rng, rows * r, 1.0);
                let b = random_f32(&mut rng, out * r, 1.0);
                let a = random_f32(&mut rng, r * inp, 1.0);
                let scale = 0.5 + rng.random::<f32>();

                let mut g = Graph::new();
                let xt = g.input("x", &[rows, inp], DType::F32);
                let dyt = g.input("dy", &[rows, out], DType::F32);
                let dx0t = g.input("dx0", &[rows, inp], DType::F32);
                let xat = g.input("x_a", &[rows, r], DType::F32);
                let dybt = g.input("dy_b", &[rows, r], DType::F32);
                let bt = g.input("b", &[out, r], DType::F32);
                let at = g.input("a", &[r, inp], DType::F32);
                let w = GgmlWeight::declare(&mut g, "w", [out, inp], ty).unwrap();
                let fwd = LowRank {
                    lhs: xat,
                    factor: bt,
                    scale,
                };
                let bwd = LowRank {
                    lhs: dybt,
                    factor: at,
                    scale,
                };
                let y = ggml_matmul::forward_lora(&mut g, "y", xt, &w, fwd).unwrap();
                let dx = ggml_matmul::backward_lora(&mut g, "dx", dyt, &w, None, bwd).unwrap();
                ggml_matmul::backward_lora(&mut g, "dx0", dyt, &w, Some(dx0t), bwd).unwrap();
                let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
                let forward: &[&str] = match rows {
                    1 => &["ggml_matvec"],
                    _ => &["ggml_matmul_forward"],
                };
                let backward = ["ggml_matmul_backward", "ggml_matmul_backward_acc"];
                assert_eq!(kernels[..forward.len()], *forward);
                assert_eq!(kernels[forward.len()..], backward);
                let got = run_graph(
                    g,
                    &[
                        (xt, bytes(&x)),
                        (dyt, bytes(&dy)),
                        (dx0t, bytes(&dx0)),
                        (xat, bytes(&xa)),
                        (dybt, bytes(&dyb)),
                        (bt, bytes(&b)),
                        (at, bytes(&a)),
                        (w.codes, upload_bytes(ty, &raw)),
                    ],
                    &[y, dx, dx0t],
                );
                let [y_w, dx_w, dx0_w] = reference(&x, &dy, &dx0, &w_f32, rows, out, inp);
                let a_t = transposed(&a, r, inp);
                let want = [
                    plus_low_rank(&y_w, &xa, &b, scale, rows, r),
                    plus_low_rank(&dx_w, &dyb, &a_t, scale, rows, r),
                    plus_low_rank(&dx0_w, &dyb, &a_t, scale, rows, r),
                ];
                let case = format!("{} rows {rows} out {out} in {inp} r {r}", ty.name());
                check_products(&case, &got, &want);
            }
        }
    });
}

#[test]
fn a_row_of_partial_blocks_is_refused_by_name() {
    let mut g = Graph::new();
    let err = GgmlWeight::declare(&mut g, "blk.0.ffn_up.weight", [8, 100], GgmlType::Q4K)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blk.0.ffn_up.weight") && err.contains("Q4_K"),
        "{err}"
    );
    let err = GgmlWeight::declare(&mut g, "w", [8, 64], GgmlType::F16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("F16"), "{err}");
}

#[test]
fn ggml_type_numbers_round_trip() {
    for ty in TYPES
        .into_iter()
        .chain([GgmlType::F32, GgmlType::F16, GgmlType::BF16])
    {
        assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        assert_eq!(ty.is_quantized(), TYPES.contains(&ty));
    }
}
