//! Causal grouped-query attention (forward with log-sum-exp, flash-style backward) against an
//! f64 reference, and the reference's backward against finite differences of its forward.

mod common;

use common::{bytes, check_gradient, for_each_seed, random_f32, run_graph, to_f32, to_f64, Tol};
use webqlora::graph::{DType, Graph};
use webqlora::ops::attention::{self, cpu_backward, cpu_forward, AttentionShape, Qkv, Scores};

const SHAPES: [(usize, usize, usize, usize, usize); 5] = [
    // (batch, seq_len, heads, kv_heads, head_dim)
    (1, 1, 1, 1, 64),
    (2, 7, 4, 2, 64),
    (1, 33, 3, 1, 128),
    (3, 65, 2, 2, 64),
    (1, 300, 2, 1, 64),
];

/// Seeds that once failed, run first every time: the lse of one token over one key is that
/// key's score, which this seed put near zero (a relative error of the value alone failed).
const REGRESSION_SEEDS: [u64; 1] = [13588022810525197679];

/// Attention's tolerance: `Tol::F32` with floors for the sums that cancel. With inputs in
/// [-1, 1] a log-sum-exp is m + ln Σ e^(s−m), rounded to ~1e-7 absolute whatever its value
/// (over one key it is that key's score, which can be ~0): floor 0.1. The gradients are sums
/// of products of size 0.01–1, exactly zero over one key: floor 0.01.
fn tol(what: &str) -> Tol {
    Tol::F32.floor(if what == "lse" { 0.1 } else { 0.01 })
}

/// Which kernels a graph runs attention with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernels {
    /// The software buffer kernels (software devices, where textures do not fit).
    Buffers,
    /// The portable flash kernels (hardware GPUs).
    Portable,
    /// The texture kernels of software devices.
    Textures,
    /// The subgroup texture kernels (head_dim 64 on eight-lane subgroups), where the device
    /// has them; the texture kernels elsewhere.
    Subgroups,
}

fn graph(kernels: Kernels) -> Graph {
    match kernels {
        Kernels::Buffers => common::software_buffer_graph(),
        Kernels::Portable => common::portable_graph(),
        Kernels::Textures => common::texture_graph_without_subgroups(),
        Kernels::Subgroups => common::texture_graph(),
    }
}

#[test]
fn forward_and_backward_match_cpu() {
    for &shape in &SHAPES {
        check_shape(shape, Scores::standard(shape.4), Kernels::Buffers);
    }
}

/// The portable flash kernels: the same shapes and checks, and larger kv groups.
#[test]
fn flash_kernels_match_cpu() {
    for &shape in SHAPES
        .iter()
        .chain(&[(2, 45, 14, 2, 64), (1, 19, 64, 1, 4), (3, 23, 8, 8, 8)])
    {
        check_shape(shape, Scores::standard(shape.4), Kernels::Portable);
    }
}

/// The texture kernels of software devices (keys, values, queries and output gradients
/// fetched from textures), the same shapes and checks.
#[test]
fn texture_kernels_match_cpu() {
    for &shape in &SHAPES {
        check_shape(shape, Scores::standard(shape.4), Kernels::Textures);
    }
}

/// The subgroup texture kernels, the same shapes and checks.
#[test]
fn subgroup_kernels_match_cpu() {
    for &shape in &SHAPES {
        check_shape(shape, Scores::standard(shape.4), Kernels::Subgroups);
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
        let scores = Scores::standard(shape.4);
        check_shape(shape, scores, Kernels::Buffers);
        check_shape(shape, scores, Kernels::Portable);
        check_shape(shape, scores, Kernels::Textures);
        check_shape(shape, scores, Kernels::Subgroups);
    }
}

/// Sliding-window layers (Gemma 3: keys less than `window` positions back) and another score
/// scale (1/√query_pre_attn_scalar), at Gemma's head sizes (32 in the tiny model, 256 in the
/// released ones) and at the subgroup kernels' 64, which then give way to the texture ones.
#[test]
fn sliding_windows_and_scales_match_cpu() {
    for (shape, window) in [
        ((2, 24, 4, 1, 32), 8),
        ((1, 37, 2, 1, 256), 5),
        ((3, 19, 4, 2, 64), 1),
        ((1, 70, 2, 2, 64), 64),
        ((2, 10, 2, 1, 16), 40),
    ] {
        eprintln!("{shape:?} window {window}");
        let scores = Scores {
            scale: 0.3,
            window: Some(window),
        };
        for kernels in [
            Kernels::Buffers,
            Kernels::Portable,
            Kernels::Textures,
            Kernels::Subgroups,
        ] {
            check_shape(shape, scores, kernels);
        }
    }
}

fn check_shape(
    (batch, seq_len, heads, kv_heads, head_dim): (usize, usize, usize, usize, usize),
    scores: Scores,
    kernels: Kernels,
) {
    let name = format!("attention {batch}x{seq_len}");
    for_each_seed(&name, &REGRESSION_SEEDS, |mut rng| {
        let tokens = batch * seq_len;
        let s = AttentionShape {
            tokens,
            seq_len,
            heads,
            kv_heads,
            head_dim,
            scores,
        };
        let q = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
        let k = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
        let v = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
        let d_out = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
        let mut g = graph(kernels);
        let qt = g.input("q", &[tokens, heads, head_dim], DType::F32);
        let kt = g.input("k", &[tokens, kv_heads, head_dim], DType::F32);
        let vt = g.input("v", &[tokens, kv_heads, head_dim], DType::F32);
        let dt = g.input("d_attn", &[tokens, heads, head_dim], DType::F32);
        let qkv = Qkv {
            q: qt,
            k: kt,
            v: vt,
        };
        let saved = attention::forward(&mut g, "attn", qkv, seq_len, scores).unwrap();
        let grads = attention::backward(&mut g, "d_attn", qkv, saved, dt, seq_len, scores).unwrap();
        let (out, lse, dq, dk, dv) = (saved.out, saved.lse, grads.q, grads.k, grads.v);
        let count = |suffix: &str| {
            g.nodes
                .iter()
                .filter(|n| {
                    n.kernel.name.starts_with("attention") && n.kernel.name.ends_with(suffix)
                })
                .count()
        };
        let flash = g
            .nodes
            .iter()
            .filter(|n| n.kernel.name.starts_with("attention_flash"))
            .count();
        assert_eq!(flash, if kernels == Kernels::Portable { 3 } else { 0 });
        let (want_tex, want_sg) = match kernels {
            Kernels::Buffers | Kernels::Portable => (0, 0),
            Kernels::Subgroups
                if head_dim == 64 && g.kernels.eight_lane_subgroups && scores.window.is_none() =>
            {
                (0, 3)
            }
            _ => (3, 0),
        };
        assert_eq!((count("_tex"), count("_tex_sg")), (want_tex, want_sg));
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
            tol(what).check(format!("{what} at {s:?}"), got, &to_f32(want));
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
    });
}

#[test]
fn shapes_are_checked() {
    let mut g = Graph::new();
    let q = g.input("q", &[8, 3, 64], DType::F32);
    let k = g.input("k", &[8, 2, 64], DType::F32);
    let err = attention::forward(&mut g, "attn", Qkv { q, k, v: k }, 8, Scores::standard(64))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "attn: shape mismatch: q [8, 3, 64], k [8, 2, 64], v [8, 2, 64] (sequences of 8): heads must be a multiple of kv heads"
    );
}

/// Packed rows with a per-token mask: questions whose choices (branches) each see the shared
/// prompt and themselves, next to a plain packed example, on both kernel families; and a mask
/// of plain sequences gives exactly what the causal kernel gives.
#[test]
fn masked_forward_matches_cpu() {
    use webqlora::ops::attention::{cpu_forward_masked, TokenMask};
    for_each_seed("attention masked", &[], |mut rng| {
        // (first token, prompt length, choice lengths) of each group in the row.
        // A long example last: blocks and key tiles of the flash kernel span several groups.
        let groups: [(usize, &[usize]); 4] =
            [(20, &[3, 5, 1, 4]), (15, &[]), (9, &[2, 6]), (70, &[])];
        let mut mask = Vec::new();
        for (prompt, choices) in groups {
            let first = mask.len();
            let token = |position: usize, branch: u32| TokenMask {
                first,
                branch,
                position,
            };
            mask.extend((0..prompt).map(|p| token(p, 0)));
            for (c, &len) in choices.iter().enumerate() {
                // Each choice continues from the prompt's end.
                mask.extend((0..len).map(|p| token(prompt + p, c as u32 + 1)));
            }
        }
        let tokens = mask.len();
        // The windows count positions, not tokens: a choice's token at position 22 with window
        // 4 sees positions 19..=22, the prompt's end and its own first tokens.
        for (heads, kv_heads, head_dim, window) in [
            (4usize, 2usize, 64usize, None),
            (3, 1, 128, None),
            (4, 1, 32, Some(4)),
            (2, 1, 256, Some(7)),
        ] {
            let scores = Scores {
                scale: match window {
                    Some(_) => 0.2,
                    None => 1.0 / (head_dim as f32).sqrt(),
                },
                window,
            };
            let s = AttentionShape {
                tokens,
                seq_len: tokens,
                heads,
                kv_heads,
                head_dim,
                scores,
            };
            let q = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
            let k = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
            let v = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
            let (q64, k64, v64) = (to_f64(&q), to_f64(&k), to_f64(&v));
            let (want_out, want_lse) = cpu_forward_masked(&q64, &k64, &v64, s, &mask);
            let plain = TokenMask::sequences(tokens, 11);
            let plain_shape = AttentionShape { seq_len: 11, ..s };
            let (plain_out, _) = cpu_forward(&q64, &k64, &v64, plain_shape);
            for kernels in [Kernels::Buffers, Kernels::Textures, Kernels::Portable] {
                for (m, want) in [(&mask, &want_out), (&plain, &plain_out)] {
                    let mut g = graph(kernels);
                    let qt = g.input("q", &[tokens, heads, head_dim], DType::F32);
                    let kt = g.input("k", &[tokens, kv_heads, head_dim], DType::F32);
                    let vt = g.input("v", &[tokens, kv_heads, head_dim], DType::F32);
                    let mt = g.input("mask", &[tokens, 4], DType::F32);
                    let qkv = Qkv {
                        q: qt,
                        k: kt,
                        v: vt,
                    };
                    let saved = attention::forward_masked(&mut g, "attn", qkv, mt, scores).unwrap();
                    let kernel = g.nodes.last().unwrap().kernel.name;
                    let textures = kernels == Kernels::Textures;
                    assert_eq!(kernel.ends_with("_tex"), textures, "{kernel}");
                    let flash = kernels == Kernels::Portable;
                    assert_eq!(kernel.starts_with("attention_flash"), flash, "{kernel}");
                    let inputs = [
                        (qt, bytes(&q)),
                        (kt, bytes(&k)),
                        (vt, bytes(&v)),
                        (mt, bytes(&TokenMask::values(m))),
                    ];
                    let got = run_graph(g, &inputs, &[saved.out, saved.lse]);
                    tol("out").check(format!("{kernel} {s:?}: out"), &got[0], &to_f32(want));
                    if std::ptr::eq(m, &mask) {
                        tol("lse").check(
                            format!("{kernel} {s:?}: lse"),
                            &got[1],
                            &to_f32(&want_lse),
                        );
                    }
                }
            }
        }
        // Choices do not see each other: the first token of choice 2 sees the prompt and itself.
        let c2 = 20 + 3;
        let seen: Vec<usize> = (0..tokens)
            .filter(|&j| mask[c2].sees(c2, j, &mask[j], None))
            .collect();
        assert_eq!(seen, (0..20).chain([c2]).collect::<Vec<_>>());
    });
}

/// The masked backward (packed training rows): question groups with branches, a plain packed
/// example and a padded tail whose tokens see only themselves, sliding windows too, against
/// the f64 reference; with a mask of plain sequences it equals the causal backward.
#[test]
fn masked_backward_matches_cpu() {
    use webqlora::ops::attention::{cpu_backward_masked, TokenMask};
    for_each_seed("attention masked backward", &[], |mut rng| {
        // With the long example, the flash kernels' blocks of keys and tiles of queries span
        // several examples, and one example spans several.
        let groups: [(usize, &[usize]); 5] =
            [(13, &[3, 1, 4]), (17, &[]), (6, &[2]), (1, &[]), (70, &[])];
        let mut mask = Vec::new();
        for (prompt, choices) in groups {
            let first = mask.len();
            let token = |position: usize, branch: u32| TokenMask {
                first,
                branch,
                position,
            };
            mask.extend((0..prompt).map(|p| token(p, 0)));
            for (c, &len) in choices.iter().enumerate() {
                mask.extend((0..len).map(|p| token(prompt + p, c as u32 + 1)));
            }
        }
        // Padding: each token its own example.
        for t in mask.len()..mask.len() + 5 {
            mask.push(TokenMask {
                first: t,
                branch: 0,
                position: 0,
            });
        }
        let tokens = mask.len();
        for (heads, kv_heads, head_dim, window) in [
            (4usize, 2usize, 64usize, None),
            (3, 3, 32, None),
            (6, 2, 128, Some(5)),
            // Gemma 3's head_dim: the flash kernels' smallest tiles (7 keys, 7 queries).
            (4, 1, 256, Some(9)),
        ] {
            let scores = Scores {
                scale: 1.0 / (head_dim as f32).sqrt(),
                window,
            };
            let s = AttentionShape {
                tokens,
                seq_len: tokens,
                heads,
                kv_heads,
                head_dim,
                scores,
            };
            let q = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
            let k = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
            let v = random_f32(&mut rng, tokens * kv_heads * head_dim, 1.0);
            let d_out = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
            let (q64, k64, v64, do64) = (to_f64(&q), to_f64(&k), to_f64(&v), to_f64(&d_out));
            let plain = TokenMask::sequences(tokens, 9);
            for (m, seq_len) in [(&mask, tokens), (&plain, 9)] {
                let (dq, dk, dv) = match seq_len == tokens {
                    true => cpu_backward_masked(&q64, &k64, &v64, &do64, s, m),
                    // A plain mask: what the causal reference gives.
                    false => cpu_backward(&q64, &k64, &v64, &do64, AttentionShape { seq_len, ..s }),
                };
                for kernels in [Kernels::Buffers, Kernels::Portable] {
                    let mut g = graph(kernels);
                    let qt = g.input("q", &[tokens, heads, head_dim], DType::F32);
                    let kt = g.input("k", &[tokens, kv_heads, head_dim], DType::F32);
                    let vt = g.input("v", &[tokens, kv_heads, head_dim], DType::F32);
                    let dt = g.input("d_out", &[tokens, heads, head_dim], DType::F32);
                    let mt = g.input("mask", &[tokens, 4], DType::F32);
                    let qkv = Qkv {
                        q: qt,
                        k: kt,
                        v: vt,
                    };
                    let saved = attention::forward_masked(&mut g, "attn", qkv, mt, scores).unwrap();
                    let grads =
                        attention::backward_masked(&mut g, "attn_back", qkv, saved, dt, mt, scores)
                            .unwrap();
                    let flash = g
                        .nodes
                        .iter()
                        .filter(|n| n.kernel.name.starts_with("attention_flash"))
                        .count();
                    // The forward, dq, dk and dv.
                    assert_eq!(flash, if kernels == Kernels::Portable { 4 } else { 0 });
                    let inputs = [
                        (qt, bytes(&q)),
                        (kt, bytes(&k)),
                        (vt, bytes(&v)),
                        (dt, bytes(&d_out)),
                        (mt, bytes(&TokenMask::values(m))),
                    ];
                    let got = run_graph(g, &inputs, &[grads.q, grads.k, grads.v]);
                    for (what, got, want) in [
                        ("dq", &got[0], &dq),
                        ("dk", &got[1], &dk),
                        ("dv", &got[2], &dv),
                    ] {
                        tol(what).check(
                            format!("{kernels:?} {s:?} seq {seq_len}: {what}"),
                            got,
                            &to_f32(want),
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn decode_attention_over_the_cache_matches_cpu() {
    use webqlora::graph::DType;
    check_decode_attention(DType::F32);
}

/// The half-precision cache: kv_store rounds to the nearest f16 (as the `half` crate does) and
/// attention equals the f64 reference over the rounded K and V.
#[test]
fn decode_attention_over_an_f16_cache_matches_cpu() {
    use webqlora::graph::DType;
    if !common::gpu().has(wgpu::Features::SHADER_F16) {
        common::skip("the adapter has no shader-f16");
        return;
    }
    check_decode_attention(DType::F16);
}

fn check_decode_attention(cache: webqlora::graph::DType) {
    use half::f16;
    use webqlora::graph::{CompiledGraph, DType, Graph};
    use webqlora::ops::decode::{attention, cpu_attention, kv_store};
    // The cache's bytes for these values, and the values it then holds.
    let encode = |v: &[f32]| -> (Vec<u8>, Vec<f32>) {
        match cache {
            DType::F16 => {
                let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                let bits: Vec<u16> = h.iter().map(|x| x.to_bits()).collect();
                (
                    bytemuck::cast_slice(&bits).to_vec(),
                    h.iter().map(|x| x.to_f32()).collect(),
                )
            }
            _ => (common::bytes(v).to_vec(), v.to_vec()),
        }
    };
    let decode_bytes = |b: &[u8]| -> Vec<f32> {
        match cache {
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, u16>(b)
                .iter()
                .map(|&x| f16::from_bits(x).to_f32())
                .collect(),
            _ => bytemuck::pod_collect_to_vec::<u8, f32>(b),
        }
    };
    common::for_each_seed(&format!("attention_decode_{cache}"), &[], |mut rng| {
        for (heads, kv_heads, d, ctx, window) in [
            (9usize, 3usize, 64usize, 300usize, None),
            (4, 2, 128, 33, None),
            (2, 2, 4, 1, None),
            (4, 1, 256, 40, Some(9)),
            (3, 3, 32, 17, Some(1)),
        ] {
            let scores = Scores {
                scale: match window {
                    Some(_) => 0.25,
                    None => 1.0 / (d as f32).sqrt(),
                },
                window,
            };
            let mut g = Graph::new();
            let q = g.input("q", &[heads, d], DType::F32);
            let k_new = g.input("k_new", &[kv_heads * d], DType::F32);
            let step = g.input("step", &[1], DType::U32);
            let kc = g.param("k_cache", &[ctx, kv_heads, d], cache);
            let vc = g.param("v_cache", &[ctx, kv_heads, d], cache);
            // Store the new K first, then attend: what a decode step does.
            kv_store(&mut g, "store k", k_new, step, kc).unwrap();
            let out = attention(&mut g, "attn", q, kc, vc, step, scores).unwrap();
            g.mark_output(out);
            let gpu = common::gpu();
            let compiled = CompiledGraph::new(gpu, g).unwrap();
            let (k_bytes, k_all) = encode(&common::random_f32(&mut rng, ctx * kv_heads * d, 1.0));
            let (v_bytes, v_all) = encode(&common::random_f32(&mut rng, ctx * kv_heads * d, 1.0));
            for pos in [0, ctx / 2, ctx - 1] {
                let qv = common::random_f32(&mut rng, heads * d, 1.0);
                let fresh = common::random_f32(&mut rng, kv_heads * d, 1.0);
                compiled.poison(gpu, common::POISON);
                compiled.write(gpu, q, &common::bytes(&qv)).unwrap();
                compiled.write(gpu, k_new, &common::bytes(&fresh)).unwrap();
                compiled
                    .write(gpu, step, bytemuck::bytes_of(&(pos as u32)))
                    .unwrap();
                compiled.write(gpu, kc, &k_bytes).unwrap();
                compiled.write(gpu, vc, &v_bytes).unwrap();
                compiled.run(gpu);
                let mut k_expected = k_all.clone();
                k_expected[pos * kv_heads * d..(pos + 1) * kv_heads * d]
                    .copy_from_slice(&encode(&fresh).1);
                let stored = decode_bytes(&pollster::block_on(compiled.read(gpu, kc)).unwrap());
                assert_eq!(stored, k_expected, "{cache} kv_store wrote row {pos} only");
                let got = pollster::block_on(compiled.read_f32(gpu, out)).unwrap();
                let want = cpu_attention(
                    &common::to_f64(&qv),
                    &common::to_f64(&k_expected),
                    &common::to_f64(&v_all),
                    heads,
                    kv_heads,
                    d,
                    pos,
                    scores,
                );
                tol("out").check(
                    format!("{cache} cache, heads {heads} d {d} pos {pos}"),
                    &got,
                    &common::to_f32(&want),
                );
            }
        }
    });
}
