//! RMSNorm, SiLU-gate, RoPE and embedding kernels against their CPU references on fresh
//! random data (outputs poisoned first), and each backward against finite differences of its
//! CPU forward in f64.

mod common;

use common::{bytes, check_gradient, for_each_seed, random_f32, run_graph, to_f32, to_f64, Tol};
use rand::Rng;
use webqlora::graph::{DType, Graph};
use webqlora::ops::embedding::{self, check_ids};
use webqlora::ops::rope::{self, cos_sin_table, cpu_rope, cpu_rope_partial, Positions};
use webqlora::ops::{residual, rmsnorm, swiglu};

const ROWS: [usize; 6] = [1, 7, 33, 65, 300, 40];
// One column is degenerate for RMSNorm (dx = r·w·dy·(1 − x²r²) cancels to ~eps/x²).
const COLS: [usize; 6] = [7, 63, 65, 129, 576, 132];

/// The subgroup kernel hardware GPUs with subgroups get (the portable path), rows past a
/// multiple of the workgroup and columns past a multiple of the subgroup included.
#[test]
fn rmsnorm_subgroup_kernel_matches_cpu() {
    use webqlora::graph::CompiledGraph;
    let gpu = common::gpu();
    if !gpu.has(wgpu::Features::SUBGROUP) {
        common::skip(&format!("{} has no subgroups", gpu.info.name));
        return;
    }
    for_each_seed("rmsnorm_subgroup", &[], |mut rng| {
        for (&rows, &cols) in ROWS.iter().zip(&COLS) {
            let x = random_f32(&mut rng, rows * cols, 2.0);
            let w = random_f32(&mut rng, cols, 1.5);
            let mut g = common::portable_graph();
            let xt = g.input("x", &[rows, cols], DType::F32);
            let wt = g.param("weight", &[cols], DType::F32);
            let (y, rstd) = rmsnorm::forward(&mut g, "y", xt, wt, 1e-5).unwrap();
            g.mark_output(y);
            g.mark_output(rstd);
            assert_eq!(g.nodes[0].kernel.name, "rmsnorm_forward_subgroup");
            let compiled = CompiledGraph::new(gpu, g).unwrap();
            compiled.poison(gpu, common::POISON);
            compiled.write(gpu, xt, &bytes(&x)).unwrap();
            compiled.write(gpu, wt, &bytes(&w)).unwrap();
            compiled.run(gpu);
            let got_y = pollster::block_on(compiled.read_f32(gpu, y)).unwrap();
            let got_rstd = pollster::block_on(compiled.read_f32(gpu, rstd)).unwrap();
            let (want_y, want_rstd) = rmsnorm::cpu_forward(&to_f64(&x), &to_f64(&w), cols, 1e-5);
            Tol::F32.check(format!("y at {rows}x{cols}"), &got_y, &to_f32(&want_y));
            Tol::F32.check(
                format!("rstd at {rows}x{cols}"),
                &got_rstd,
                &to_f32(&want_rstd),
            );
        }
    });
}

#[test]
fn rmsnorm_forward_and_backward_match_cpu() {
    for_each_seed("rmsnorm", &[], |mut rng| {
        for (&rows, &cols) in ROWS.iter().zip(&COLS) {
            let x = random_f32(&mut rng, rows * cols, 2.0);
            let w = random_f32(&mut rng, cols, 1.5);
            let dy = random_f32(&mut rng, rows * cols, 1.0);
            let mut g = Graph::new();
            let xt = g.input("x", &[rows, cols], DType::F32);
            let wt = g.param("weight", &[cols], DType::F32);
            let dyt = g.input("dy", &[rows, cols], DType::F32);
            let (y, rstd) = rmsnorm::forward(&mut g, "y", xt, wt, 1e-5).unwrap();
            let dx = rmsnorm::backward(&mut g, "dx", dyt, xt, wt, rstd).unwrap();
            assert_vec4_iff_multiple_of_4(&g, cols);
            let inputs = [(xt, bytes(&x)), (wt, bytes(&w)), (dyt, bytes(&dy))];
            let got = run_graph(g, &inputs, &[y, rstd, dx]);

            let (x64, w64, dy64) = (to_f64(&x), to_f64(&w), to_f64(&dy));
            let (want_y, want_rstd) = rmsnorm::cpu_forward(&x64, &w64, cols, 1e-5);
            let want_dx = rmsnorm::cpu_backward(&dy64, &x64, &w64, &want_rstd, cols);
            for (what, got, want) in [
                ("y", &got[0], &want_y),
                ("rstd", &got[1], &want_rstd),
                ("dx", &got[2], &want_dx),
            ] {
                Tol::F32.check(format!("{what} at {rows}x{cols}"), got, &to_f32(want));
            }
            let f = |x: &[f64]| rmsnorm::cpu_forward(x, &w64, cols, 1e-5).0;
            check_gradient("rmsnorm", f, &x64, &dy64, &want_dx, &mut rng, 40);
        }
    });
}

/// A residual add with the norm after it (one dispatch on the portable path, an add and a
/// norm elsewhere), and the norm's backward added into a running gradient (one dispatch:
/// the `ACCUMULATE` constant; a workgroup a row on the portable path).
#[test]
fn residual_norm_and_accumulated_backward_match_cpu() {
    for_each_seed("rmsnorm_residual", &[], |mut rng| {
        for portable in [true, false] {
            for (&rows, &cols) in ROWS.iter().zip(&COLS) {
                let a = random_f32(&mut rng, rows * cols, 2.0);
                let b = random_f32(&mut rng, rows * cols, 1.0);
                let w = random_f32(&mut rng, cols, 1.5);
                let dy = random_f32(&mut rng, rows * cols, 1.0);
                let running = random_f32(&mut rng, rows * cols, 1.0);
                let mut g = match portable {
                    true => common::portable_graph(),
                    false => common::software_buffer_graph(),
                };
                let at = g.input("a", &[rows, cols], DType::F32);
                let bt = g.input("b", &[rows, cols], DType::F32);
                let wt = g.param("weight", &[cols], DType::F32);
                let dyt = g.input("dy", &[rows, cols], DType::F32);
                let dx = g.input("dx", &[rows, cols], DType::F32);
                let names = ("sum", "y");
                let (sum, y, rstd) =
                    rmsnorm::forward_residual(&mut g, names, (at, bt), wt, 1e-5).unwrap();
                let forward_nodes = g.nodes.len();
                assert_eq!(forward_nodes, if portable { 1 } else { 2 });
                rmsnorm::backward_into(&mut g, "dx", dx, dyt, sum, wt, rstd).unwrap();
                assert_eq!(g.nodes.len(), forward_nodes + 1);
                assert!(g.nodes[forward_nodes].accumulates());
                // The portable backward a workgroup a row, the software one a row a lane.
                let backward = g.nodes[forward_nodes].kernel.name;
                assert_eq!(backward.starts_with("rmsnorm_backward_rows"), portable);
                let inputs = [
                    (at, bytes(&a)),
                    (bt, bytes(&b)),
                    (wt, bytes(&w)),
                    (dyt, bytes(&dy)),
                    (dx, bytes(&running)),
                ];
                let got = run_graph(g, &inputs, &[sum, y, rstd, dx]);

                let want_sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x + y) as f64).collect();
                let (w64, dy64) = (to_f64(&w), to_f64(&dy));
                let (want_y, want_rstd) = rmsnorm::cpu_forward(&want_sum, &w64, cols, 1e-5);
                let grad = rmsnorm::cpu_backward(&dy64, &want_sum, &w64, &want_rstd, cols);
                let want_dx: Vec<f64> = grad
                    .iter()
                    .zip(&running)
                    .map(|(g, r)| g + *r as f64)
                    .collect();
                for (what, got, want) in [
                    ("sum", &got[0], &want_sum),
                    ("y", &got[1], &want_y),
                    ("rstd", &got[2], &want_rstd),
                    ("dx", &got[3], &want_dx),
                ] {
                    Tol::F32.check(
                        format!("{what} at {rows}x{cols} (portable {portable})"),
                        got,
                        &to_f32(want),
                    );
                }
            }
        }
    });
}

/// Elementwise ops over n values (rows of n for RMSNorm) run their vec4 kernels exactly when
/// n is a multiple of 4.
fn assert_vec4_iff_multiple_of_4(g: &Graph, n: usize) {
    for node in &g.nodes {
        let vec4 = node.kernel.name.ends_with("_vec4");
        assert_eq!(vec4, n.is_multiple_of(4), "{} at n {n}", node.kernel.name);
    }
}

#[test]
fn residual_add_matches_cpu() {
    for_each_seed("residual", &[], |mut rng| {
        for n in [1usize, 7, 1000, 4099, 70_000] {
            let a = random_f32(&mut rng, n, 3.0);
            let b = random_f32(&mut rng, n, 1.0);
            let mut g = Graph::new();
            let at = g.input("a", &[n], DType::F32);
            let bt = g.input("b", &[n], DType::F32);
            let out = residual::add(&mut g, "out", at, bt).unwrap();
            assert_vec4_iff_multiple_of_4(&g, n);
            let got = run_graph(g, &[(at, bytes(&a)), (bt, bytes(&b))], &[out]);
            assert_eq!(got[0], residual::cpu_add(&a, &b), "exact f32 sums at n {n}");
        }
    });
}

#[test]
fn gated_activations_forward_and_backward_match_cpu() {
    use swiglu::Activation;
    for act in [Activation::Silu, Activation::GeluTanh] {
        check_gated_activation(act);
    }
}

/// act(gate) * up and its backward against the f64 reference and finite differences, at
/// sizes on both sides of the vec4 kernels; gates up to ±6·√3 reach GELU-tanh's saturation.
fn check_gated_activation(act: swiglu::Activation) {
    for_each_seed(&format!("swiglu {act:?}"), &[], |mut rng| {
        for n in [1usize, 7, 65, 1000, 4099, 70_000] {
            let gate = random_f32(&mut rng, n, 6.0);
            let up = random_f32(&mut rng, n, 2.0);
            let d_out = random_f32(&mut rng, n, 1.0);
            let mut g = Graph::new();
            let gt = g.input("gate", &[n], DType::F32);
            let ut = g.input("up", &[n], DType::F32);
            let dt = g.input("d_out", &[n], DType::F32);
            let out = swiglu::forward(&mut g, "out", gt, ut, act).unwrap();
            let (d_gate, d_up) = swiglu::backward(&mut g, "d", dt, gt, ut, act).unwrap();
            assert_vec4_iff_multiple_of_4(&g, n);
            let inputs = [(gt, bytes(&gate)), (ut, bytes(&up)), (dt, bytes(&d_out))];
            let got = run_graph(g, &inputs, &[out, d_gate, d_up]);
            let (g64, u64_, d64) = (to_f64(&gate), to_f64(&up), to_f64(&d_out));
            let want_out = swiglu::cpu_forward(&g64, &u64_, act);
            let (want_dg, want_du) = swiglu::cpu_backward(&d64, &g64, &u64_, act);
            for (what, got, want) in [
                ("out", &got[0], &want_out),
                ("d_gate", &got[1], &want_dg),
                ("d_up", &got[2], &want_du),
            ] {
                Tol::F32.check(format!("{act:?} {what} at n {n}"), got, &to_f32(want));
            }
            check_gradient(
                "swiglu d_gate",
                |g| swiglu::cpu_forward(g, &u64_, act),
                &g64,
                &d64,
                &want_dg,
                &mut rng,
                40,
            );
            check_gradient(
                "swiglu d_up",
                |u| swiglu::cpu_forward(&g64, u, act),
                &u64_,
                &d64,
                &want_du,
                &mut rng,
                40,
            );
        }
    });
}

#[test]
fn rope_forward_and_inverse_match_cpu() {
    for_each_seed("rope", &[], |mut rng| {
        let theta = 10000.0;
        // The last three rotate part of each head (partial_rotary_factor): scalar, four
        // pairs an invocation (Phi-4-mini's 96 of 128), and a part off a multiple of 8.
        for &(batch, seq, heads, head_dim, offset, rotary) in &[
            (1usize, 1usize, 1usize, 2usize, 0usize, 2usize),
            (2, 5, 3, 12, 1, 12),
            (2, 7, 3, 64, 5, 64),
            (1, 300, 2, 128, 0, 128),
            (3, 33, 9, 64, 100, 64),
            (2, 5, 3, 12, 1, 4),
            (2, 7, 3, 128, 3, 96),
            (1, 4, 2, 64, 0, 36),
        ] {
            let tokens = batch * seq;
            let at = Positions {
                seq_len: seq,
                pos_offset: offset,
            };
            let positions = offset + seq + rng.random_range(0..4);
            let x = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
            let dy = random_f32(&mut rng, tokens * heads * head_dim, 1.0);
            let mut g = Graph::new();
            let xt = g.input("q", &[tokens, heads, head_dim], DType::F32);
            let dyt = g.input("dq_rot", &[tokens, heads, head_dim], DType::F32);
            let table = g.param("cos_sin", &[positions, rotary / 2, 2], DType::F32);
            let y = rope::rope(&mut g, "q_rot", xt, table, at, false).unwrap();
            let dx = rope::rope(&mut g, "dq", dyt, table, at, true).unwrap();
            // Four pairs an invocation exactly when half the head dim and half the rotary
            // part are multiples of 4.
            let vec4 = head_dim.is_multiple_of(8) && rotary.is_multiple_of(8);
            for node in &g.nodes {
                assert_eq!(
                    node.kernel.name.ends_with("_vec4"),
                    vec4,
                    "{head_dim}, {rotary}"
                );
            }
            let cs = cos_sin_table(positions, rotary, theta);
            let got = run_graph(
                g,
                &[(xt, bytes(&x)), (dyt, bytes(&dy)), (table, bytes(&cs))],
                &[y, dx],
            );

            let (x64, dy64) = (to_f64(&x), to_f64(&dy));
            let rope = |x: &[f64], inverse| {
                cpu_rope_partial(x, heads, head_dim, rotary, at, theta, inverse)
            };
            let (want_y, want_dx) = (rope(&x64, false), rope(&dy64, true));
            if rotary == head_dim {
                assert_eq!(want_y, cpu_rope(&x64, heads, head_dim, at, theta, false));
            }
            Tol::ELEMENTWISE.check(
                format!("rope at {tokens}x{heads}x{head_dim}, rotary {rotary}"),
                &got[0],
                &to_f32(&want_y),
            );
            Tol::ELEMENTWISE.check(
                format!("rope backward at {tokens}x{heads}x{head_dim}"),
                &got[1],
                &to_f32(&want_dx),
            );
            let f = |x: &[f64]| rope(x, false);
            check_gradient("rope", f, &x64, &dy64, &want_dx, &mut rng, 40);
        }
    });
}

/// q and k rotated by one dispatch (`rope_qk`, grouped-query shapes: fewer k heads) equal the
/// CPU reference, forward and inverse; a head dim off a multiple of 8 takes two `rope` nodes.
#[test]
fn rope_of_q_and_k_in_one_dispatch_matches_cpu() {
    for_each_seed("rope_qk", &[], |mut rng| {
        let theta = 10000.0;
        // The last two rotate part of each head: 96 of 128 in one dispatch, 20 of 64 in two.
        for &(batch, seq, q_heads, k_heads, head_dim, offset, nodes, rotary) in &[
            (
                2usize, 7usize, 9usize, 3usize, 64usize, 5usize, 1usize, 64usize,
            ),
            (1, 33, 4, 4, 8, 0, 1, 8),
            (3, 5, 6, 2, 12, 2, 2, 12),
            (2, 5, 3, 1, 128, 1, 1, 96),
            (1, 6, 4, 2, 64, 0, 2, 20),
        ] {
            let tokens = batch * seq;
            let at = Positions {
                seq_len: seq,
                pos_offset: offset,
            };
            let positions = offset + seq;
            for inverse in [false, true] {
                let q = random_f32(&mut rng, tokens * q_heads * head_dim, 1.0);
                let k = random_f32(&mut rng, tokens * k_heads * head_dim, 1.0);
                let mut g = Graph::new();
                let qt = g.input("q", &[tokens, q_heads, head_dim], DType::F32);
                let kt = g.input("k", &[tokens, k_heads, head_dim], DType::F32);
                let table = g.param("cos_sin", &[positions, rotary / 2, 2], DType::F32);
                let [q_rot, k_rot] =
                    rope::rope_qk(&mut g, ["q_rot", "k_rot"], [qt, kt], table, at, inverse)
                        .unwrap();
                assert_eq!(g.nodes.len(), nodes, "{head_dim}");
                let cs = cos_sin_table(positions, rotary, theta);
                let got = run_graph(
                    g,
                    &[(qt, bytes(&q)), (kt, bytes(&k)), (table, bytes(&cs))],
                    &[q_rot, k_rot],
                );
                for (got, x, heads) in [(&got[0], &q, q_heads), (&got[1], &k, k_heads)] {
                    let want =
                        cpu_rope_partial(&to_f64(x), heads, head_dim, rotary, at, theta, inverse);
                    Tol::ELEMENTWISE.check(
                        format!("rope_qk {tokens}x{heads}x{head_dim} inverse {inverse}"),
                        got,
                        &to_f32(&want),
                    );
                }
            }
        }
    });
}

#[test]
fn rope_positions_must_fit_the_table() {
    let mut g = Graph::new();
    let x = g.input("q", &[8, 2, 64], DType::F32);
    let table = g.param("cos_sin", &[6, 32, 2], DType::F32);
    let at = Positions {
        seq_len: 4,
        pos_offset: 3,
    };
    let err = rope::rope(&mut g, "q_rot", x, table, at, false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "q_rot: shape mismatch: 8 tokens in sequences of 4 from position 3 do not fit a table of 6 positions"
    );
}

/// Tables in f16 parts (large vocabularies): the gather (scaled, ZERO_ROW, ids in every part)
/// and the widened rows give exactly the f16 values, subnormals, signed zeros and infinities
/// included, for tables of any row count split anywhere.
#[test]
fn f16_tables_gather_and_widen_exactly() {
    use half::f16;
    for_each_seed("embedding f16", &[], |mut rng| {
        for &(tokens, parts, dim) in &[(5usize, &[3usize][..], 2usize), (37, &[64, 64, 21], 64)] {
            let vocab: usize = parts.iter().sum();
            let mut values: Vec<f16> = random_f32(&mut rng, vocab * dim, 4.0)
                .iter()
                .map(|&v| f16::from_f32(v))
                .collect();
            let special = [
                f16::from_bits(0x0001),
                f16::from_bits(0x83ff),
                f16::NEG_ZERO,
                f16::INFINITY,
                f16::NEG_INFINITY,
                f16::MAX,
            ];
            for (v, s) in values.iter_mut().zip(special.iter().cycle()).step_by(3) {
                *v = *s;
            }
            let table: Vec<f32> = values.iter().map(|v| v.to_f32()).collect();
            let ids: Vec<u32> = (0..tokens)
                .map(|t| match t % 4 {
                    3 => embedding::ZERO_ROW,
                    _ => rng.random_range(0..vocab as u32),
                })
                .collect();
            let mut g = Graph::new();
            let it = g.input("ids", &[tokens], DType::U32);
            let mut first = 0;
            let mut inputs = vec![(it, bytemuck::cast_slice(&ids).to_vec())];
            let mut part_ids = Vec::new();
            for (p, &rows) in parts.iter().enumerate() {
                let t = g.param(&format!("table{p}"), &[rows, dim], DType::F16);
                let words: Vec<u8> = values[first * dim..(first + rows) * dim]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                inputs.push((t, words));
                part_ids.push(t);
                first += rows;
            }
            let out = embedding::gather_parts(&mut g, "h0", it, &part_ids, -0.5).unwrap();
            let last = *part_ids.last().unwrap();
            let rows = parts[parts.len() - 1];
            let widened =
                embedding::widen_rows(&mut g, "rows", last, rows / 2, rows - rows / 2).unwrap();
            let got = run_graph(g, &inputs, &[out, widened]);
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&i| match i {
                    embedding::ZERO_ROW => vec![0.0; dim],
                    i => table[i as usize * dim..][..dim]
                        .iter()
                        .map(|v| v * -0.5)
                        .collect(),
                })
                .collect();
            let same = |a: &[f32], b: &[f32]| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            };
            assert!(same(&got[0], &want), "gather, parts {parts:?}");
            let start = (vocab - rows + rows / 2) * dim;
            assert!(same(&got[1], &table[start..]), "widen, parts {parts:?}");
        }
    });
}

#[test]
fn embedding_gathers_rows() {
    for_each_seed("embedding", &[], |mut rng| {
        for &(tokens, vocab, dim) in &[(1usize, 1usize, 1usize), (7, 256, 64), (300, 1000, 65)] {
            let table = random_f32(&mut rng, vocab * dim, 1.0);
            let ids: Vec<u32> = (0..tokens)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            check_ids(&ids, vocab).unwrap();
            // Some rows of zeros (how training spreads scored rows' gradients back).
            let ids: Vec<u32> = ids
                .iter()
                .enumerate()
                .map(|(t, &i)| if t % 3 == 1 { embedding::ZERO_ROW } else { i })
                .collect();
            let mut g = Graph::new();
            let it = g.input("input_ids", &[tokens], DType::U32);
            let tt = g.param("embed_tokens", &[vocab, dim], DType::F32);
            let out = embedding::gather(&mut g, "h0", it, tt).unwrap();
            let got = run_graph(
                g,
                &[
                    (it, bytemuck::cast_slice(&ids).to_vec()),
                    (tt, bytes(&table)),
                ],
                &[out],
            );
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&i| match i {
                    embedding::ZERO_ROW => vec![0.0; dim],
                    i => table[i as usize * dim..(i as usize + 1) * dim].to_vec(),
                })
                .collect();
            assert_eq!(got[0], want, "{tokens} tokens, vocab {vocab}, dim {dim}");
        }
        assert_eq!(
            check_ids(&[3, 9, 256], 256).unwrap_err(),
            "token id 256 at position 2 is outside the vocabulary of 256"
        );
    });
}

#[test]
fn dropout_matches_cpu_mask_and_rate() {
    use webqlora::ops::dropout::{cpu_dropout, dropout, dropout_into, DropoutSite};
    for_each_seed("dropout", &[], |mut rng| {
        for (n, p) in [(1usize, 0.5f32), (300, 0.1), (70_001, 0.3), (65, 0.0)] {
            let x = random_f32(&mut rng, n, 2.0);
            let acc0 = random_f32(&mut rng, n, 1.0);
            let seed_value: u32 = rand::Rng::random(&mut rng);
            let mut g = Graph::new();
            let xt = g.input("x", &[n], DType::F32);
            let seed = g.input("seed", &[1], DType::U32);
            let acc = g.input("acc", &[n], DType::F32);
            let site = DropoutSite { p, seed, salt: 7 };
            let y = dropout(&mut g, "y", xt, site).unwrap();
            dropout_into(&mut g, "acc += y", acc, xt, site).unwrap();
            let got = run_graph(
                g,
                &[
                    (xt, bytes(&x)),
                    (seed, bytemuck::bytes_of(&seed_value).to_vec()),
                    (acc, bytes(&acc0)),
                ],
                &[y, acc],
            );
            let want = cpu_dropout(&x, p, seed_value, 7);
            assert_eq!(
                got[0], want,
                "n {n} p {p}: the mask is the CPU's, bit for bit"
            );
            let want_acc: Vec<f32> = acc0.iter().zip(&want).map(|(a, w)| a + w).collect();
            assert_eq!(got[1], want_acc);
            if n > 10_000 {
                let kept = want.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
                assert!((kept - (1.0 - p as f64)).abs() < 0.01, "kept {kept}");
                let other = cpu_dropout(&x, p, seed_value ^ 1, 7);
                assert_ne!(want, other, "another seed, another mask");
            }
        }
    });
}

#[test]
fn bias_add_matches_cpu() {
    use webqlora::ops::residual::{bias_add, cpu_bias_add};
    for_each_seed("bias_add", &[], |mut rng| {
        for (rows, n) in [(1usize, 1usize), (7, 65), (300, 192)] {
            let y0 = random_f32(&mut rng, rows * n, 1.0);
            let b = random_f32(&mut rng, n, 1.0);
            let mut g = Graph::new();
            let y = g.input("y", &[rows, n], DType::F32);
            let bias = g.input("bias", &[n], DType::F32);
            bias_add(&mut g, "y += bias", y, bias).unwrap();
            let got = run_graph(g, &[(y, bytes(&y0)), (bias, bytes(&b))], &[y]).remove(0);
            assert_eq!(got, cpu_bias_add(&y0, &b), "{rows}x{n}");
        }
    });
}

/// DoRA's row norms from the expansion (‖W_j‖², A·Wᵀ, B·A·Aᵀ) against ‖W + s·B·A‖ of the
/// dense sum, and the scale and the magnitude's gradient against their CPU twins.
#[test]
fn dora_kernels_match_cpu() {
    /// A 1x1 weight that s·BA cancelled to a norm of ~0 (before the rows were drawn clear of
    /// cancellation; found by `cargo xtask stress`).
    const DORA_REGRESSION_SEEDS: [u64; 1] = [14558220031900360392];
    use webqlora::ops::dora::{self, cpu_magnitude_grad, cpu_norm, cpu_scale, row_norms2};
    use webqlora::ops::matmul::{matmul, Operand};
    for_each_seed("dora", &DORA_REGRESSION_SEEDS, |mut rng| {
        for (rows, out, inp, r) in [
            (1usize, 1usize, 1usize, 1usize),
            (7, 65, 33, 3),
            (130, 70, 129, 16),
        ] {
            let mut w0 = random_f32(&mut rng, out * inp, 1.0);
            let a0 = random_f32(&mut rng, r * inp, 0.3);
            let b0 = random_f32(&mut rng, out * r, 0.3);
            let m0: Vec<f32> = (0..out).map(|_| rng.random_range(0.5..2.0)).collect();
            let y0 = random_f32(&mut rng, rows * out, 1.0);
            let dy0 = random_f32(&mut rng, rows * out, 1.0);
            let s = 1.75;
            // DoRA's update is small beside its base weight (B starts at zero). A row whose W
            // the update cancels has a norm near zero that f32 cannot give to any relative
            // precision, by the kernel's ‖W‖² + 2s⟨W, BA⟩ + s²‖BA‖² or PEFT's ‖W + sBA‖ alike
            // (and the scale and magnitude gradient divide by it). Rows are redrawn until
            // ‖W_j‖ ≥ 2·s·‖B_j A‖, so the norm is at least half of ‖W_j‖.
            let update = cpu_norm(&vec![0.0; out * inp], &a0, &b0, inp, r, s);
            for (j, row) in w0.chunks_exact_mut(inp).enumerate() {
                while row.iter().map(|v| v * v).sum::<f32>().sqrt() < 2.0 * update[j] {
                    row.copy_from_slice(&random_f32(&mut rng, inp, 1.0));
                }
            }
            let mut g = Graph::new();
            let w = g.input("w", &[out, inp], DType::F32);
            let a = g.input("a", &[r, inp], DType::F32);
            let b = g.input("b", &[out, r], DType::F32);
            let norms2 = g.input("norms2", &[out], DType::F32);
            let m = g.input("m", &[out], DType::F32);
            let y = g.input("y", &[rows, out], DType::F32);
            let dy = g.input("dy", &[rows, out], DType::F32);
            let aw = matmul(&mut g, "aw", Operand::plain(a), Operand::transposed(w), 1.0).unwrap();
            let aa = matmul(&mut g, "aa", Operand::plain(a), Operand::transposed(a), 1.0).unwrap();
            let bg = matmul(&mut g, "bg", Operand::plain(b), Operand::plain(aa), 1.0).unwrap();
            let n = dora::norm(&mut g, "norm", norms2, b, aw, bg, s).unwrap();
            let scaled = dora::scale(&mut g, "scaled", y, m, n).unwrap();
            let dm = dora::magnitude_grad(&mut g, "dm", dy, y, n).unwrap();
            let inputs = [
                (w, bytes(&w0)),
                (a, bytes(&a0)),
                (b, bytes(&b0)),
                (norms2, bytes(&row_norms2(&w0, inp))),
                (m, bytes(&m0)),
                (y, bytes(&y0)),
                (dy, bytes(&dy0)),
            ];
            let got = run_graph(g, &inputs, &[n, scaled, dm]);
            let norm = cpu_norm(&w0, &a0, &b0, inp, r, s);
            let case = format!("{rows} rows, {out}x{inp}, r {r}");
            // Sums of at most a few hundred terms, then one division: 1e-6.
            Tol::rel(1e-6).check(format!("{case}: norm"), &got[0], &norm);
            Tol::rel(1e-6).check(
                format!("{case}: scale"),
                &got[1],
                &cpu_scale(&y0, &m0, &norm),
            );
            let want = cpu_magnitude_grad(&dy0, &y0, &norm);
            Tol::F32.check(format!("{case}: magnitude gradient"), &got[2], &want);
        }
        // A shape that does not fit is named.
        let mut g = Graph::new();
        let y = g.input("y", &[4, 8], DType::F32);
        let m = g.input("m", &[8], DType::F32);
        let n = g.input("n", &[7], DType::F32);
        let err = dora::scale(&mut g, "scaled", y, m, n)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'n' of shape [7] for rows of 8"), "{err}");
    });
}
