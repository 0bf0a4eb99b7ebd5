//! A linear module whose adapter has dropout (PEFT's lora_dropout): the forward is
//! x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ and the backward's dA, dB and dx use the same mask, against an
//! f64 CPU reference on fresh random data.

mod common;

use common::{bytes, random_f32, rel_err, rng, run_graph};
use webqlora::graph::{DType, Graph};
use webqlora::model::llama::{Linear, LoraFactors, Module};
use webqlora::ops::dropout::{cpu_dropout, DropoutSite};

/// Row-major [m, n] = a [m, k] · b [k, n] (transposes by index functions).
fn mm(
    m: usize,
    k: usize,
    n: usize,
    a: impl Fn(usize, usize) -> f64,
    b: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|t| a(i, t) * b(t, j)).sum();
        }
    }
    c
}

#[test]
fn adapter_dropout_forward_and_backward_match_cpu() {
    let mut rng = rng("lora_dropout");
    let (t, inp, out, r, p, scale) = (7usize, 33usize, 65usize, 4usize, 0.25f32, 2.0f32);
    let x = random_f32(&mut rng, t * inp, 1.0);
    let w = random_f32(&mut rng, out * inp, 0.3);
    let a = random_f32(&mut rng, r * inp, 0.3);
    let b = random_f32(&mut rng, out * r, 0.3);
    let dy = random_f32(&mut rng, t * out, 1.0);
    let seed_value = 12345u32;

    let mut g = Graph::new();
    let xt = g.input("x", &[t, inp], DType::F32);
    let dyt = g.input("dy", &[t, out], DType::F32);
    let seed = g.input("seed", &[1], DType::U32);
    let wt = g.param("w", &[out, inp], DType::F32);
    let at = g.param("a", &[r, inp], DType::F32);
    let bt = g.param("b", &[out, r], DType::F32);
    let module = Module {
        weight: Linear::F32(wt),
        bias: None,
        lora: Some(LoraFactors {
            a: at,
            b: bt,
            scale,
            dropout: Some(DropoutSite { p, seed, salt: 3 }),
        }),
    };
    let (y, saved) = module.forward_saving(&mut g, "y", xt).unwrap();
    let (dx, grads) = module.backward(&mut g, "dx", dyt, saved, None).unwrap();
    let grads = grads.unwrap();
    let got = run_graph(
        g,
        &[
            (xt, bytes(&x)),
            (dyt, bytes(&dy)),
            (seed, bytemuck::bytes_of(&seed_value).to_vec()),
            (wt, bytes(&w)),
            (at, bytes(&a)),
            (bt, bytes(&b)),
        ],
        &[y, dx, grads.a, grads.b],
    );

    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (x64, w64, a64, b64, dy64) = (f(&x), f(&w), f(&a), f(&b), f(&dy));
    let xd = f(&cpu_dropout(&x, p, seed_value, 3));
    let s = scale as f64;
    let xa = mm(t, inp, r, |i, k| xd[i * inp + k], |k, j| a64[j * inp + k]);
    let base = mm(
        t,
        inp,
        out,
        |i, k| x64[i * inp + k],
        |k, j| w64[j * inp + k],
    );
    let lora = mm(t, r, out, |i, k| xa[i * r + k], |k, j| b64[j * r + k]);
    let y_want: Vec<f64> = base.iter().zip(&lora).map(|(u, v)| u + s * v).collect();
    let dyb = mm(t, out, r, |i, k| dy64[i * out + k], |k, j| b64[k * r + j]);
    let d_b: Vec<f64> = mm(out, t, r, |i, k| dy64[k * out + i], |k, j| xa[k * r + j])
        .iter()
        .map(|v| s * v)
        .collect();
    let d_a: Vec<f64> = mm(r, t, inp, |i, k| dyb[k * r + i], |k, j| xd[k * inp + j])
        .iter()
        .map(|v| s * v)
        .collect();
    // dx = dy·W + mask ⊙ (s·(dy·B)·A) / (1 - p)
    let dx_lora: Vec<f32> = mm(t, r, inp, |i, k| dyb[i * r + k], |k, j| a64[k * inp + j])
        .iter()
        .map(|v| (s * v) as f32)
        .collect();
    let dx_lora = f(&cpu_dropout(&dx_lora, p, seed_value, 3));
    let dx_want: Vec<f64> = mm(
        t,
        out,
        inp,
        |i, k| dy64[i * out + k],
        |k, j| w64[k * inp + j],
    )
    .iter()
    .zip(&dx_lora)
    .map(|(u, v)| u + v)
    .collect();
    for (name, got, want) in [
        ("y", &got[0], y_want),
        ("dx", &got[1], dx_want),
        ("dA", &got[2], d_a),
        ("dB", &got[3], d_b),
    ] {
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let e = rel_err(got, &want);
        assert!(e < 1e-5, "{name}: {e}");
    }
    // Dropout did drop: without it dA differs.
    let d_a_plain = mm(r, t, inp, |i, k| dyb[k * r + i], |k, j| x64[k * inp + j]);
    let plain: Vec<f32> = d_a_plain.iter().map(|v| (s * v) as f32).collect();
    assert!(rel_err(&got[2], &plain) > 0.05);
}
