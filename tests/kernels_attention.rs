//! Causal grouped-query attention (forward with log-sum-exp, flash-style backward) against an
//! f64 reference, and the reference's backward against finite differences of its forward.

mod common;

use common::{bytes, check_gradient, random_f32, rel_err, rng, run_graph, to_f32, to_f64};
use webqlora::graph::{DType, Graph};
use webqlora::ops::attention::{self, cpu_backward, cpu_forward, AttentionShape, Qkv};

const SHAPES: [(usize, usize, usize, usize, usize); 5] = [
    // (batch, seq_len, heads, kv_heads, head_dim)
    (1, 1, 1, 1, 64),
    (2, 7, 4, 2, 64),
    (1, 33, 3, 1, 128),
    (3, 65, 2, 2, 64),
    (1, 300, 2, 1, 64),
];

#[test]
fn forward_and_backward_match_cpu() {
    for &shape in &SHAPES {
        check_shape(shape);
    }
}

#[test]
fn a_2048_token_sequence_matches_cpu() {
    for shape in [
        (2, 1024, 2, 1, 64),
        (1, 1900, 1, 1, 64),
        (1, 2048, 1, 1, 4),
        (1, 2048, 2, 1, 64),
    ] {
        eprintln!("{shape:?}");
        check_shape(shape);
    }
}

fn check_shape((batch, seq_len, heads, kv_heads, head_dim): (usize, usize, usize, usize, usize)) {
    let mut rng = rng(&format!("attention {batch}x{seq_len}"));
    {
        let tokens = batch * seq_len;
        let s = AttentionShape {
            tokens,
            seq_len,
            heads,
            kv_heads,
            head_dim,
        };
        let q = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
        let k = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
        let v = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
        let d_out = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
        let mut g = Graph::new();
        let qt = g.input("q", &[tokens, heads, head_dim], DType::F32);
        let kt = g.input("k", &[tokens, kv_heads, head_dim], DType::F32);
        let vt = g.input("v", &[tokens, kv_heads, head_dim], DType::F32);
        let dt = g.input("d_attn", &[tokens, heads, head_dim], DType::F32);
        let qkv = Qkv {
            q: qt,
            k: kt,
            v: vt,
        };
        let saved = attention::forward(&mut g, "attn", qkv, seq_len).unwrap();
        let grads = attention::backward(&mut g, "d_attn", qkv, saved, dt, seq_len).unwrap();
        let (out, lse, dq, dk, dv) = (saved.out, saved.lse, grads.q, grads.k, grads.v);
        let inputs = [
            (qt, bytes(&q)),
            (kt, bytes(&k)),
            (vt, bytes(&v)),
            (dt, bytes(&d_out)),
        ];
        let got = run_graph(g, &inputs, &[out, lse, dq, dk, dv]);

        let (q64, k64, v64, d64) = (to_f64(&q), to_f64(&k), to_f64(&v), to_f64(&d_out));
        let (want_out, want_lse) = cpu_forward(&q64, &k64, &v64, s);
        let (want_dq, want_dk, want_dv) = cpu_backward(&q64, &k64, &v64, &d64, s);
        let checks = [
            ("out", &got[0], &want_out),
            ("lse", &got[1], &want_lse),
            ("dq", &got[2], &want_dq),
            ("dk", &got[3], &want_dk),
            ("dv", &got[4], &want_dv),
        ];
        for (what, got, want) in checks {
            let e = rel_err(got, &to_f32(want));
            assert!(e < 1e-5, "{what} at {s:?}: rel err {e}");
        }
        if tokens <= 70 {
            let out_of = |q: &[f64], k: &[f64], v: &[f64]| cpu_forward(q, k, v, s).0;
            check_gradient(
                "attention dq",
                |x| out_of(x, &k64, &v64),
                &q64,
                &d64,
                &want_dq,
                &mut rng,
                20,
            );
            check_gradient(
                "attention dk",
                |x| out_of(&q64, x, &v64),
                &k64,
                &d64,
                &want_dk,
                &mut rng,
                20,
            );
            check_gradient(
                "attention dv",
                |x| out_of(&q64, &k64, x),
                &v64,
                &d64,
                &want_dv,
                &mut rng,
                20,
            );
        }
    }
}

#[test]
fn shapes_are_checked() {
    let mut g = Graph::new();
    let q = g.input("q", &[8, 3, 64], DType::F32);
    let k = g.input("k", &[8, 2, 64], DType::F32);
    let err = attention::forward(&mut g, "attn", Qkv { q, k, v: k }, 8).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attn: shape mismatch: q [8, 3, 64], k [8, 2, 64], v [8, 2, 64] (sequences of 8): heads must be a multiple of kv heads"
    );
}
