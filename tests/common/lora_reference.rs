//! The f64 reference of a linear module with a LoRA adapter (PEFT's algebra), forward and
//! backward, shared by the module tests.
#![allow(dead_code)]

use webqlora::ops::dropout::cpu_dropout;

/// Row-major [m, n] = a [m, k] · b [k, n] (transposes by index functions).
pub fn mm(
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

/// PEFT's lora_dropout on the adapter's input: rate, seed, salt (`ops::dropout`).
#[derive(Clone, Copy)]
pub struct Dropout {
    pub p: f32,
    pub seed: u32,
    pub salt: u32,
}

/// A module's data: x [t, in], W [out, in], A [r, in], B [out, r], dy [t, out].
pub struct LoraCase<'a> {
    pub t: usize,
    pub n_in: usize,
    pub out: usize,
    pub r: usize,
    pub scale: f32,
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub dy: &'a [f32],
    pub dropout: Option<Dropout>,
}

/// What the module's forward and backward give: y, dx, dA, dB.
pub struct LoraReference {
    pub y: Vec<f64>,
    pub dx: Vec<f64>,
    pub d_a: Vec<f64>,
    pub d_b: Vec<f64>,
}

/// y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ; dx = dy·W + drop(s·(dy·B)·A) (the same mask, rounded to
/// f32 before it as the kernels mask f32 values); dA = s·(dy·B)ᵀ·drop(x); dB = s·dyᵀ·(drop(x)·Aᵀ).
pub fn lora_reference(c: &LoraCase) -> LoraReference {
    let (t, inp, out, r) = (c.t, c.n_in, c.out, c.r);
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (x, w, a, b, dy) = (f(c.x), f(c.w), f(c.a), f(c.b), f(c.dy));
    let drop = |v: &[f32]| match c.dropout {
        Some(d) => cpu_dropout(v, d.p, d.seed, d.salt),
        None => v.to_vec(),
    };
    let xd = f(&drop(c.x));
    let s = c.scale as f64;
    let xa = mm(t, inp, r, |i, k| xd[i * inp + k], |k, j| a[j * inp + k]);
    let base = mm(t, inp, out, |i, k| x[i * inp + k], |k, j| w[j * inp + k]);
    let lora = mm(t, r, out, |i, k| xa[i * r + k], |k, j| b[j * r + k]);
    let y = base.iter().zip(&lora).map(|(u, v)| u + s * v).collect();
    let dyb = mm(t, out, r, |i, k| dy[i * out + k], |k, j| b[k * r + j]);
    let scaled = |v: Vec<f64>| v.iter().map(|u| s * u).collect::<Vec<_>>();
    let d_b = scaled(mm(out, t, r, |i, k| dy[k * out + i], |k, j| xa[k * r + j]));
    let d_a = scaled(mm(r, t, inp, |i, k| dyb[k * r + i], |k, j| xd[k * inp + j]));
    let dx_lora: Vec<f32> = mm(t, r, inp, |i, k| dyb[i * r + k], |k, j| a[k * inp + j])
        .iter()
        .map(|v| (s * v) as f32)
        .collect();
    let dx_lora = f(&drop(&dx_lora));
    let dx_base = mm(t, out, inp, |i, k| dy[i * out + k], |k, j| w[k * inp + j]);
    let dx = dx_base.iter().zip(&dx_lora).map(|(u, v)| u + v).collect();
    LoraReference { y, dx, d_a, d_b }
}
