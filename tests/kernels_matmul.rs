//! f32 and NF4 matmul kernels against their CPU references on fresh random data, at sizes
//! that are not multiples of any tile, with outputs poisoned before the kernels run.

mod common;

use common::{bytes, for_each_seed, random_f32, run_graph, Tol};
use rand::seq::IndexedRandom;
use rand::Rng;
use webqlora::graph::{DType, Graph};
use webqlora::kernels::gemm_depth;
use webqlora::ops::matmul::{cpu_matmul, matmul, matmul_into, split_k, GemmTiles, Operand};
use webqlora::ops::nf4_matmul::{self, upload_bytes, Nf4Weight};
use webqlora::quant::nf4::Nf4Tensor;

/// Products of inputs drawn in [-1, 1] (RMS 1/√3) summed over `k`: an output element's RMS
/// is √k/3, and its f32 rounding follows the size of its partial sums, that RMS, even where
/// the sum cancels to ~0 (a 1x1 output, or an accumulated c + a·b, can): `Tol::F32` with that
/// floor, which outputs of typical size never reach.
fn products(k: usize) -> Tol {
    Tol::F32.floor((k as f64).sqrt() / 3.0)
}

const ROWS: [usize; 5] = [1, 7, 33, 65, 300];
const SIDES: [usize; 8] = [1, 7, 33, 63, 64, 65, 127, 129];

#[test]
fn matmul_all_transposes_match_cpu() {
    for_each_seed("matmul", &[], |mut rng| {
        for &m in &ROWS {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let k = *SIDES.choose(&mut rng).unwrap();
                let n = *SIDES.choose(&mut rng).unwrap();
                let alpha = rng.random_range(0.25..2.0);
                let a = random_f32(&mut rng, m * k, 1.0);
                let b = random_f32(&mut rng, k * n, 1.0);
                let mut g = Graph::new();
                let at = g.input("a", &if ta { [k, m] } else { [m, k] }, DType::F32);
                let bt = g.input("b", &if tb { [n, k] } else { [k, n] }, DType::F32);
                let op = |t, transposed| Operand {
                    tensor: t,
                    transposed,
                    rows: None,
                };
                let c = matmul(&mut g, "c", op(at, ta), op(bt, tb), alpha).unwrap();
                let got = run_graph(g, &[(at, bytes(&a)), (bt, bytes(&b))], &[c]).remove(0);
                let want = cpu_matmul(&a, ta, &b, tb, m, k, n, alpha, None);
                products(k).check(format!("m {m} k {k} n {n} ta {ta} tb {tb}"), &got, &want);
            }
        }
    });
}

/// The portable tile kernel (what hardware GPUs run) against the CPU, written and
/// accumulated, at every transpose (each operand staged along its own unit stride), sides
/// off both tile sizes (64 and 32), k over several steps at both k depths (16 and 32: a
/// barrier missing between staging and reading, or between reading and the next staging,
/// mixes steps and changes the result), and skinny products with a long k split into
/// partial sums (the LoRA gradients' shapes).
#[test]
fn portable_products_match_cpu() {
    for_each_seed("gemm", &[], |mut rng| {
        let mut seen = std::collections::BTreeSet::new();
        for depth in [16, 32] {
            for &(m, k, n, ta, tb) in &[
                (1usize, 1usize, 1usize, false, true),
                (33, 17, 65, false, false),
                (300, 129, 127, true, true),
                (65, 576, 192, false, true),
                (130, 47, 70, true, false),
                // 64 x 64 tiles (128 of them and more).
                (1000, 77, 513, false, true),
                (515, 100, 1030, true, false),
                // dA = (dY B)ᵀ X: [r, in] over the tokens; dB = dYᵀ (X Aᵀ): [out, r].
                (16, 1024, 576, true, false),
                (16, 4096, 576, true, false),
                (200, 2500, 8, true, false),
                (7, 2100, 65, false, true),
            ] {
                let tiles = GemmTiles::choose(m, n, depth);
                seen.insert((tiles.side, depth));
                let split = split_k(tiles.count(m, n), k) > 1;
                assert_eq!(
                    split,
                    k >= 2048,
                    "{m}x{k}x{n}: cases with and without a split"
                );
                let a = random_f32(&mut rng, m * k, 1.0);
                let b = random_f32(&mut rng, k * n, 1.0);
                let c0 = random_f32(&mut rng, m * n, 1.0);
                let mut g = common::portable_graph();
                g.kernels.gemm_depth = depth;
                let at = g.input("a", &if ta { [k, m] } else { [m, k] }, DType::F32);
                let bt = g.input("b", &if tb { [n, k] } else { [k, n] }, DType::F32);
                let ct = g.input("c", &[m, n], DType::F32);
                let op = |t, transposed| Operand {
                    tensor: t,
                    transposed,
                    rows: None,
                };
                let c = matmul(&mut g, "c_new", op(at, ta), op(bt, tb), 0.75).unwrap();
                matmul_into(&mut g, "c += a b", ct, op(at, ta), op(bt, tb), 1.0).unwrap();
                let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
                // One row takes the matrix-vector kernel on every path.
                let want_kernels: &[&str] = match (m, split) {
                    (1, _) => &["matmul_vec", "matmul_vec_acc"],
                    (_, true) => &["gemm", "split_sum", "gemm", "split_sum_acc"],
                    _ => &["gemm", "gemm_acc"],
                };
                assert_eq!(kernels, want_kernels, "{m}x{k}x{n}");
                let got = run_graph(
                    g,
                    &[(at, bytes(&a)), (bt, bytes(&b)), (ct, bytes(&c0))],
                    &[c, ct],
                );
                let want = cpu_matmul(&a, ta, &b, tb, m, k, n, 0.75, None);
                let want_acc = cpu_matmul(&a, ta, &b, tb, m, k, n, 1.0, Some(&c0));
                let what = format!("{m}x{k}x{n} ta {ta} tb {tb}, {tiles:?}");
                products(k).check(&what, &got[0], &want);
                products(k).check(format!("{what} accumulating"), &got[1], &want_acc);
            }
        }
        assert_eq!(seen.len(), 4, "every tile size at every depth: {seen:?}");
    });
}

/// The k depth follows the device's workgroup memory, and every tile fits what it is chosen
/// for: 16 within WebGPU's guaranteed 16 KiB, 32 from 17 KiB.
#[test]
fn gemm_tiles_fit_the_device() {
    let deepest = GemmTiles {
        side: 16,
        depth: 32,
    };
    assert_eq!(
        deepest.workgroup_bytes(),
        webqlora::kernels::DEEP_GEMM_WORKGROUP_BYTES
    );
    assert_eq!(gemm_depth(16384), 16);
    assert_eq!(gemm_depth(32768), 32);
    for bytes in [16384, 17408, 32768, 49152] {
        let depth = gemm_depth(bytes);
        for (m, n) in [(1024, 576), (16, 576), (4096, 1536)] {
            let tiles = GemmTiles::choose(m, n, depth);
            assert!(tiles.workgroup_bytes() <= bytes, "{tiles:?} on {bytes} B");
        }
    }
    // Few outputs take the small tile: four times the workgroups.
    assert_eq!(GemmTiles::choose(1024, 192, 16).side, 8);
    assert_eq!(GemmTiles::choose(1024, 576, 16).side, 16);
}

/// The portable NF4 tile kernels (what hardware GPUs run), forward and backward (written and
/// accumulated): inputs a multiple of 8 (a code word decoded by one invocation) and not (each
/// weight decoded alone), blocksizes 32, 64 and 128, rows and sides off the 64 x 64 tile.
#[test]
fn portable_nf4_products_match_dequantized_cpu_matmul() {
    for_each_seed("nf4_gemm", &[], |mut rng| {
        for (case, &(rows, out, n_in)) in [
            (7usize, 64usize, 64usize),
            (65, 63, 65),
            (300, 65, 63),
            (33, 1, 7),
            (130, 129, 576),
            (64, 192, 129),
            (100, 576, 1536),
        ]
        .iter()
        .enumerate()
        {
            let blocksize = [64, 32, 128][case % 3];
            let (q, deq) = random_weight(&mut rng, out, n_in, blocksize);
            let x = random_f32(&mut rng, rows * n_in, 1.0);
            let dy = random_f32(&mut rng, rows * out, 1.0);
            let dx0 = random_f32(&mut rng, rows * n_in, 1.0);
            let mut g = common::portable_graph();
            let xt = g.input("x", &[rows, n_in], DType::F32);
            let dyt = g.input("dy", &[rows, out], DType::F32);
            let acc = g.input("dx_acc", &[rows, n_in], DType::F32);
            let w = Nf4Weight::declare(&mut g, "w", [out, n_in], blocksize);
            let y = nf4_matmul::forward(&mut g, "y", xt, &w).unwrap();
            let dx = nf4_matmul::backward(&mut g, "dx", dyt, &w).unwrap();
            nf4_matmul::backward_into(&mut g, "dx_acc += dy W", acc, dyt, &w).unwrap();
            let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
            assert_eq!(
                kernels,
                [
                    "nf4_gemm_forward",
                    "nf4_gemm_backward",
                    "nf4_gemm_backward_acc"
                ]
            );
            let (codes, absmax) = upload_bytes(&q);
            let inputs = [
                (xt, bytes(&x)),
                (dyt, bytes(&dy)),
                (acc, bytes(&dx0)),
                (w.codes, codes),
                (w.absmax, absmax),
            ];
            let got = run_graph(g, &inputs, &[y, dx, acc]);
            let case = format!("rows {rows} out {out} in {n_in} bs {blocksize}");
            let want = cpu_matmul(&x, false, &deq, true, rows, n_in, out, 1.0, None);
            Tol::F32.check(format!("forward, {case}"), &got[0], &want);
            let want = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, None);
            Tol::F32.check(format!("backward, {case}"), &got[1], &want);
            let want = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, Some(&dx0));
            Tol::F32.check(format!("backward accumulating, {case}"), &got[2], &want);
        }
    });
}

/// Values as f16 holds them (round to nearest even), back in f32.
fn f16_rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// The portable NF4 forward with its tiles in f16 (`WEBQLORA_F16_TILES=1`, devices with
/// `shader-f16`): equal to the f32 product of the f16-rounded operands (the tiles round each
/// operand once, the sums stay f32), within the documented 2e-3 of the f32 product; the
/// backward and the f32 products keep f32 tiles.
#[test]
fn f16_tile_forward_matches_cpu_on_f16_operands() {
    let gpu = common::gpu();
    if !gpu.has(wgpu::Features::SHADER_F16) {
        common::skip(&format!("{} has no shader-f16", gpu.info.name));
        return;
    }
    for_each_seed("nf4_gemm_f16", &[], |mut rng| {
        for (case, &(rows, out, n_in)) in [
            (65usize, 63usize, 65usize),
            (130, 129, 576),
            (100, 576, 1536),
        ]
        .iter()
        .enumerate()
        {
            let blocksize = [64, 32, 128][case % 3];
            let (q, deq) = random_weight(&mut rng, out, n_in, blocksize);
            let x = random_f32(&mut rng, rows * n_in, 1.0);
            let dy = random_f32(&mut rng, rows * out, 1.0);
            let mut g = common::portable_graph();
            g.kernels.f16_tiles = true;
            let xt = g.input("x", &[rows, n_in], DType::F32);
            let dyt = g.input("dy", &[rows, out], DType::F32);
            let w = Nf4Weight::declare(&mut g, "w", [out, n_in], blocksize);
            let y = nf4_matmul::forward(&mut g, "y", xt, &w).unwrap();
            let dx = nf4_matmul::backward(&mut g, "dx", dyt, &w).unwrap();
            let a = g.input("a", &[4, n_in], DType::F32);
            let x_a = matmul(
                &mut g,
                "x_a",
                Operand::plain(xt),
                Operand::transposed(a),
                1.0,
            )
            .unwrap();
            let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
            assert_eq!(
                kernels,
                ["nf4_gemm_forward_f16", "nf4_gemm_backward", "gemm"]
            );
            let (codes, absmax) = upload_bytes(&q);
            let a_values = random_f32(&mut rng, 4 * n_in, 1.0);
            let inputs = [
                (xt, bytes(&x)),
                (dyt, bytes(&dy)),
                (a, bytes(&a_values)),
                (w.codes, codes),
                (w.absmax, absmax),
            ];
            let got = run_graph(g, &inputs, &[y, dx, x_a]);
            let case = format!("rows {rows} out {out} in {n_in} bs {blocksize}");
            let (x16, deq16) = (f16_rounded(&x), f16_rounded(&deq));
            let want = cpu_matmul(&x16, false, &deq16, true, rows, n_in, out, 1.0, None);
            Tol::F32.check(
                format!("forward, {case} against the rounded operands"),
                &got[0],
                &want,
            );
            let exact = cpu_matmul(&x, false, &deq, true, rows, n_in, out, 1.0, None);
            Tol::rel(2e-3).check(
                format!("forward, {case} against the f32 product"),
                &got[0],
                &exact,
            );
            // f32 tiles elsewhere: the f32 products exactly.
            let want = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, None);
            Tol::F32.check(format!("backward, {case}"), &got[1], &want);
            let want = cpu_matmul(&x, false, &a_values, true, rows, n_in, 4, 1.0, None);
            Tol::F32.check(format!("x·Aᵀ, {case}"), &got[2], &want);
        }
    });
}

/// Texture graphs without and (where the device has eight-lane subgroups) with the
/// subgroup kernels: the two must give identical bits.
fn texture_graphs() -> Vec<Graph> {
    let mut graphs = vec![common::texture_graph_without_subgroups()];
    if common::gpu().has_eight_lane_subgroups() {
        graphs.push(common::texture_graph());
    }
    graphs
}

/// Outputs of the same computation run two ways (without and with the subgroup kernels, or
/// packs run as kernels and as copies), bit for bit.
fn assert_same_bits(results: &[Vec<Vec<f32>>], case: &str) {
    for other in &results[1..] {
        for (i, (x, y)) in results[0].iter().zip(other).enumerate() {
            let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{case}: output {i} differs");
        }
    }
}

/// c = alpha·op(a)·op(b) and c0 += alpha·op(a)·op(b) on the texture graphs against the CPU
/// reference (fresh random data, outputs poisoned); returns the kernels each graph ran.
fn check_texture_product(
    rng: &mut rand::rngs::StdRng,
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
) -> Vec<Vec<String>> {
    let alpha = rng.random_range(0.25..2.0);
    let a = random_f32(rng, m * k, 1.0);
    let b = random_f32(rng, k * n, 1.0);
    let c0 = random_f32(rng, m * n, 1.0);
    let mut kernels = Vec::new();
    let mut results = Vec::new();
    for g in texture_graphs() {
        let (ran, got) = texture_product(g, (m, k, n), ta, tb, alpha, [&a, &b, &c0]);
        kernels.push(ran);
        results.push(got);
    }
    assert_same_bits(&results, &format!("m {m} k {k} n {n} ta {ta} tb {tb}"));
    kernels
}

fn texture_product(
    mut g: Graph,
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
    alpha: f32,
    [a, b, c0]: [&[f32]; 3],
) -> (Vec<String>, Vec<Vec<f32>>) {
    let at = g.input("a", &if ta { [k, m] } else { [m, k] }, DType::F32);
    let bt = g.input("b", &if tb { [n, k] } else { [k, n] }, DType::F32);
    let ct = g.input("c0", &[m, n], DType::F32);
    let op = |t, transposed| Operand {
        tensor: t,
        transposed,
        rows: None,
    };
    let c = matmul(&mut g, "c", op(at, ta), op(bt, tb), alpha).unwrap();
    matmul_into(&mut g, "c0 += a b", ct, op(at, ta), op(bt, tb), alpha).unwrap();
    // What ran: a pack whose rows a buffer-to-texture copy can take (256-byte aligned) ran as
    // that copy.
    let kernels: Vec<String> = g
        .nodes
        .iter()
        .map(|n| {
            if n.copy.is_some() {
                "copy".to_string()
            } else {
                n.kernel_label()
            }
        })
        .collect();
    let inputs = [(at, bytes(a)), (bt, bytes(b)), (ct, bytes(c0))];
    // The pack kernels give the same texels as the copies.
    if kernels.iter().any(|k| k == "copy") {
        let mut without_copies = g.clone();
        without_copies.nodes.iter_mut().for_each(|n| n.copy = None);
        let kernel_packed = run_graph(without_copies, &inputs, &[c, ct]);
        let copied = run_graph(g.clone(), &inputs, &[c, ct]);
        assert_same_bits(&[kernel_packed, copied], "packs copied instead of run");
    }
    let got = run_graph(g, &inputs, &[c, ct]);
    let want = cpu_matmul(a, ta, b, tb, m, k, n, alpha, None);
    let want_acc = cpu_matmul(a, ta, b, tb, m, k, n, alpha, Some(c0));
    let case = format!("m {m} k {k} n {n} ta {ta} tb {tb} {kernels:?}");
    products(k).check(&case, &got[0], &want);
    products(k).check(format!("{case} accumulating"), &got[1], &want_acc);
    (kernels, got)
}

/// The texture kernel of software devices: every transposition, sides that are not multiples
/// of its 64x128 workgroup tile nor k of the four values a texel holds, written and
/// accumulated, and a block of rows (an lm-head vocabulary chunk) both ways.
#[test]
fn texture_matmul_matches_cpu() {
    for_each_seed("matmul_tex", &[], |mut rng| {
        let ms = [64usize, 65, 129, 300];
        let ns = [64usize, 65, 127, 129, 300];
        let ks = [1usize, 7, 33, 63, 64, 65, 129, 576];
        // Aligned sizes take the vec4 packs (rows, and 4x4 blocks of transposed sources), rows of
        // 256 bytes a copy, odd sizes the general pack; every kind must have run by the end.
        let mut packs_seen = std::collections::BTreeSet::new();
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for case in 0..4 {
                let (m, k, n) = match case {
                    0 => (64, 576, 300),
                    // 17 k-texels: two blocks of eight for the subgroup kernel, then a tail.
                    1 => (65, 67, 129),
                    2 => (65, 32, 129),
                    _ => (
                        *ms.choose(&mut rng).unwrap(),
                        *ks.choose(&mut rng).unwrap(),
                        *ns.choose(&mut rng).unwrap(),
                    ),
                };
                let runs = check_texture_product(&mut rng, (m, k, n), ta, tb);
                for (kernels, sg) in runs.iter().zip(["", "_sg"]) {
                    // The subgroup kernel stores vec4s: N not a multiple of four takes the plain one.
                    // A B stored as [K, N] (K and N multiples of four) is read by its rows there.
                    let sg = match sg {
                        _ if !n.is_multiple_of(4) => "",
                        "_sg" if !tb && k.is_multiple_of(4) => "_sg_kn",
                        _ => sg,
                    };
                    // The second product finds both operands already packed.
                    assert_eq!(kernels.len(), 4, "{kernels:?}");
                    let want = [format!("matmul_tex{sg}"), format!("matmul_tex{sg}_acc")];
                    assert_eq!(kernels[2..], want);
                    packs_seen.extend(kernels[..2].iter().cloned());
                }
            }
        }

        assert_eq!(
            packs_seen.into_iter().collect::<Vec<_>>(),
            ["copy", "pack_cols", "pack_f32", "pack_rows"]
        );

        check_row_block(&mut rng, common::texture_graph(), 65, 65);
        check_row_block(&mut rng, common::texture_graph(), 65, 64);
    });
}

/// The narrow texture kernels (the LoRA products: r columns, or r rows run transposed; Aᵀ B
/// when both are stored with k as rows), every transposition, written and accumulated, with
/// and without subgroups (bit for bit). Odd k: the Aᵀ B subgroup kernel takes two k a step.
#[test]
fn narrow_texture_matmul_matches_cpu() {
    for_each_seed("matmul_tex_narrow", &[], |mut rng| {
        let long = [64usize, 65, 129, 300];
        let short = [1usize, 7, 16, 17, 32];
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for transposed in [false, true] {
                for k in [1usize, 7, 16, 65, 576] {
                    let (mut m, mut n) = (
                        *long.choose(&mut rng).unwrap(),
                        *short.choose(&mut rng).unwrap(),
                    );
                    if transposed {
                        std::mem::swap(&mut m, &mut n);
                    }
                    // Both stored with k as rows (always so for k = 1): the Aᵀ B kernel, no
                    // transposing pack.
                    let kernel = if k == 1 || (ta && !tb) {
                        "matmul_tex_tn"
                    } else {
                        "matmul_tex_narrow"
                    };
                    let runs = check_texture_product(&mut rng, (m, k, n), ta, tb);
                    for (kernels, sg) in runs.iter().zip(["", "_sg"]) {
                        let (plain, acc) = (format!("{kernel}{sg}"), format!("{kernel}{sg}_acc"));
                        assert!(
                            kernels.contains(&plain) && kernels.contains(&acc),
                            "{m}x{k}x{n}: {kernels:?}"
                        );
                    }
                }
            }
        }
    });
}

#[test]
fn matmul_accumulates_into_an_existing_tensor() {
    // A 1x129x1 case whose c0 + 0.5·a·bᵀ cancelled to ~1e-3 (judged by its value alone, it
    // failed on rounding; found by `cargo xtask stress`).
    for_each_seed(
        "matmul_acc",
        &[10549219335345813077, 3962606781099637020],
        |mut rng| {
            for &(m, k, n) in &[(33usize, 16usize, 65usize), (300, 7, 16), (1, 129, 1)] {
                let a = random_f32(&mut rng, m * k, 1.0);
                let b = random_f32(&mut rng, n * k, 1.0);
                let c0 = random_f32(&mut rng, m * n, 1.0);
                let mut g = Graph::new();
                let at = g.input("a", &[m, k], DType::F32);
                let bt = g.input("b", &[n, k], DType::F32);
                let ct = g.input("c", &[m, n], DType::F32);
                let (a_op, b_op) = (Operand::plain(at), Operand::transposed(bt));
                matmul_into(&mut g, "c += a bT", ct, a_op, b_op, 0.5).unwrap();
                let got = run_graph(
                    g,
                    &[(at, bytes(&a)), (bt, bytes(&b)), (ct, bytes(&c0))],
                    &[ct],
                );
                let want = cpu_matmul(&a, false, &b, true, m, k, n, 0.5, Some(&c0));
                products(k).check(format!("{m}x{k}x{n}"), &got[0], &want);
            }
        },
    );
}

/// An lm-head chunk both ways on `g` (t rows, c columns): logits = h · E[first..first+count]ᵀ
/// and back, dh = logits · E[first..first+count]; on texture graphs no product may fall back,
/// and with the subgroup kernels and c a multiple of four the backward reads the chunk's rows
/// the forward packed (no pack of its own for E).
fn check_row_block(rng: &mut rand::rngs::StdRng, mut g: Graph, t: usize, c: usize) {
    let (v, first, count) = (300usize, 129usize, 100usize);
    let h = random_f32(rng, t * c, 1.0);
    let e = random_f32(rng, v * c, 1.0);
    let ht = g.input("h", &[t, c], DType::F32);
    let et = g.param("lm_head", &[v, c], DType::F32);
    let chunk = Operand::transposed(et).rows(first, count);
    let logits = matmul(&mut g, "logits", Operand::plain(ht), chunk, 1.0).unwrap();
    let dh = matmul(
        &mut g,
        "dh",
        Operand::plain(logits),
        Operand::plain(et).rows(first, count),
        1.0,
    )
    .unwrap();
    if g.kernels.textures.is_some() {
        assert!(g.nodes.iter().all(|n| n.kernel.name != "matmul"));
    }
    if g.kernels.eight_lane_subgroups && c.is_multiple_of(4) {
        let names: Vec<_> = g.nodes.iter().map(|n| n.kernel.name).collect();
        // h and E's rows, the logits; then the logits alone, dh.
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names[3], "pack_rows", "{names:?}");
        assert_eq!(names[4], "matmul_tex_sg_kn", "{names:?}");
    }
    let got = run_graph(g, &[(ht, bytes(&h)), (et, bytes(&e))], &[logits, dh]);
    let block = &e[first * c..(first + count) * c];
    let want = cpu_matmul(&h, false, block, true, t, c, count, 1.0, None);
    Tol::F32.check("logits block", &got[0], &want);
    let want_dh = cpu_matmul(&want, false, block, false, t, count, c, 1.0, None);
    Tol::F32.check("d hidden from the block", &got[1], &want_dh);
}

#[test]
fn matmul_uses_a_block_of_rows() {
    for_each_seed("matmul_rows", &[], |mut rng| {
        check_row_block(&mut rng, Graph::new(), 33, 65);

        let (c, v) = (65usize, 300usize);
        let mut g = Graph::new();
        let et = g.param("lm_head", &[v, c], DType::F32);
        let ht = g.input("h", &[33, c], DType::F32);
        let err = matmul(
            &mut g,
            "logits",
            Operand::plain(ht),
            Operand::transposed(et).rows(250, 100),
            1.0,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "logits: shape mismatch: rows 250..350 of 'lm_head' [300, 65]: it has 300"
        );
    });
}

#[test]
fn matmul_shapes_are_checked() {
    let mut g = Graph::new();
    let a = g.input("x", &[4, 8], DType::F32);
    let b = g.input("lora_A", &[16, 9], DType::F32);
    let err = matmul(
        &mut g,
        "x_a",
        Operand::plain(a),
        Operand::transposed(b),
        1.0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "x_a: shape mismatch: 'x' [4, 8] times transposed 'lora_A' [16, 9]: inner sizes 8 and 9 differ"
    );
}

/// A random NF4 weight [out, in] with its dequantized f32 values.
fn random_weight(
    rng: &mut rand::rngs::StdRng,
    out: usize,
    n_in: usize,
    blocksize: usize,
) -> (Nf4Tensor, Vec<f32>) {
    let w = random_f32(rng, out * n_in, 0.1);
    let q = Nf4Tensor::quantize(&w, &[out, n_in], blocksize, true).unwrap();
    let deq = q.dequantize();
    (q, deq)
}

/// NF4 products of `random_weight` (values in [-0.1, 0.1], RMS 0.1/√3) and inputs in [-1, 1]
/// summed over `k`: an output's RMS is 0.1·√k/3, the size its rounding follows where the sum
/// cancels (a one-output matvec can: seed 9556238025994266256 gave 1.4e-5 of a 7-term dot
/// product's value), as `products` for f32.
fn nf4_products(k: usize) -> Tol {
    Tol::F32.floor(0.1 * (k as f64).sqrt() / 3.0)
}

const WEIGHTS: [(usize, usize); 6] = [(64, 64), (63, 65), (65, 63), (1, 7), (129, 576), (192, 129)];

#[test]
fn nf4_forward_matches_dequantized_cpu_matmul() {
    for_each_seed("nf4_forward", &[], |mut rng| {
        for (case, &(out, n_in)) in WEIGHTS.iter().enumerate() {
            let rows = ROWS[case % ROWS.len()];
            let blocksize = [64, 32, 128][case % 3];
            let (q, deq) = random_weight(&mut rng, out, n_in, blocksize);
            let x = random_f32(&mut rng, rows * n_in, 1.0);
            let mut g = Graph::new();
            let xt = g.input("x", &[rows, n_in], DType::F32);
            let w = Nf4Weight::declare(&mut g, "w", [out, n_in], blocksize);
            let y = nf4_matmul::forward(&mut g, "y", xt, &w).unwrap();
            let (codes, absmax) = upload_bytes(&q);
            let got = run_graph(
                g,
                &[(xt, bytes(&x)), (w.codes, codes), (w.absmax, absmax)],
                &[y],
            );
            let want = cpu_matmul(&x, false, &deq, true, rows, n_in, out, 1.0, None);
            nf4_products(n_in).check(
                format!("rows {rows} out {out} in {n_in} bs {blocksize}"),
                &got[0],
                &want,
            );
        }
    });
}

/// The kernel that reproduces bitsandbytes' CPU bf16 path against `bnb_cpu::linear_bf16`, bit
/// for bit: same roundings, same order of sums. Inputs must be whole scale blocks.
#[test]
fn nf4_bnb_cpu_bf16_forward_matches_its_cpu_reference() {
    use webqlora::ops::nf4_matmul::Nf4Compute;
    use webqlora::quant::bnb_cpu::linear_bf16;
    for_each_seed("nf4_bf16", &[], |mut rng| {
        let shapes = [
            (64, 64, 64),
            (63, 128, 32),
            (65, 256, 128),
            (1, 64, 64),
            (129, 576, 64),
        ];
        for (case, &(out, n_in, blocksize)) in shapes.iter().enumerate() {
            let rows = ROWS[case % ROWS.len()];
            let (q, _) = random_weight(&mut rng, out, n_in, blocksize);
            // Activations over a wide range of magnitudes, so that the order of the sums shows.
            let x: Vec<f32> = random_f32(&mut rng, rows * n_in, 1.0)
                .into_iter()
                .map(|v| v * 2f32.powi(rng.random_range(-8..8)))
                .collect();
            let mut g = Graph::new();
            let xt = g.input("x", &[rows, n_in], DType::F32);
            let mut w = Nf4Weight::declare(&mut g, "w", [out, n_in], blocksize);
            w.compute = Nf4Compute::BnbCpuBf16;
            let y = nf4_matmul::forward(&mut g, "y", xt, &w).unwrap();
            let (codes, absmax) = upload_bytes(&q);
            let got = run_graph(
                g,
                &[(xt, bytes(&x)), (w.codes, codes), (w.absmax, absmax)],
                &[y],
            )
            .remove(0);
            let want = linear_bf16(&x, &q);
            let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differing, 0,
                "rows {rows} out {out} in {n_in}: {differing} differ"
            );
            assert!(
                got.iter().all(|v| v.to_bits() & 0xffff == 0),
                "not bf16 values"
            );
        }
        let mut g = Graph::new();
        let xt = g.input("x", &[2, 96], DType::F32);
        let mut w = Nf4Weight::declare(&mut g, "w", [4, 96], 64);
        w.compute = Nf4Compute::BnbCpuBf16;
        let err = nf4_matmul::forward(&mut g, "y", xt, &w).unwrap_err();
        assert_eq!(
        err.to_string(),
        "y: shape mismatch: bitsandbytes' CPU bf16 kernel needs rows of whole blocks: 'w' has 96 inputs, blocksize 64"
    );
    });
}

#[test]
fn nf4_backward_data_matches_dequantized_cpu_matmul() {
    for_each_seed("nf4_backward", &[], |mut rng| {
        for (case, &(out, n_in)) in WEIGHTS.iter().enumerate() {
            let rows = ROWS[(case + 2) % ROWS.len()];
            let (q, deq) = random_weight(&mut rng, out, n_in, 64);
            let dy = random_f32(&mut rng, rows * out, 1.0);
            let dx0 = random_f32(&mut rng, rows * n_in, 1.0);
            let mut g = Graph::new();
            let dyt = g.input("dy", &[rows, out], DType::F32);
            let w = Nf4Weight::declare(&mut g, "w", [out, n_in], 64);
            let dx = nf4_matmul::backward(&mut g, "dx", dyt, &w).unwrap();
            let acc = g.input("dx_acc", &[rows, n_in], DType::F32);
            nf4_matmul::backward_into(&mut g, "dx_acc += dy W", acc, dyt, &w).unwrap();
            let (codes, absmax) = upload_bytes(&q);
            let inputs = [
                (dyt, bytes(&dy)),
                (w.codes, codes),
                (w.absmax, absmax),
                (acc, bytes(&dx0)),
            ];
            let got = run_graph(g, &inputs, &[dx, acc]);
            let want = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, None);
            let want_acc = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, Some(&dx0));
            nf4_products(out).check(format!("rows {rows} out {out} in {n_in}"), &got[0], &want);
            nf4_products(out).check(
                format!("accumulating, rows {rows} out {out} in {n_in}"),
                &got[1],
                &want_acc,
            );
        }
    });
}

/// The one-token product on the software path (an output an invocation) and the portable one
/// (64 invocations an output and a workgroup reduction, rows of whole code words; others as
/// on the software path).
#[test]
fn nf4_matvec_matches_dequantized_cpu_product() {
    for_each_seed("nf4_matvec", &[9556238025994266256], |mut rng| {
        let graphs = [
            common::software_buffer_graph as fn() -> Graph,
            common::portable_graph,
        ];
        let shapes = WEIGHTS.iter().chain(&[(300, 1536), (5, 8)]);
        for (&(out, n_in), new_graph) in shapes.flat_map(|w| graphs.iter().map(move |g| (w, g))) {
            let (q, deq) = random_weight(&mut rng, out, n_in, 64);
            let x = random_f32(&mut rng, n_in, 1.0);
            let mut g = new_graph();
            let rows_kernel = g.kernels.portable(webqlora::kernels::Family::Nf4) && n_in % 8 == 0;
            let xt = g.input("x", &[n_in], DType::F32);
            let w = Nf4Weight::declare(&mut g, "w", [out, n_in], 64);
            let y = nf4_matmul::matvec(&mut g, "y", xt, &w).unwrap();
            assert_eq!(g.nodes[0].kernel.name == "nf4_matvec_rows", rows_kernel);
            let (codes, absmax) = upload_bytes(&q);
            let got = run_graph(
                g,
                &[(xt, bytes(&x)), (w.codes, codes), (w.absmax, absmax)],
                &[y],
            );
            let want = cpu_matmul(&x, false, &deq, true, 1, n_in, out, 1.0, None);
            nf4_products(n_in).check(format!("out {out} in {n_in}"), &got[0], &want);
        }
    });
}

/// The NF4 texture kernels of software devices, forward and backward (written and
/// accumulated), at row counts and output sides that are not multiples of their 64x128 tile
/// (100 outputs: a subgroup's 32 columns cut by the edge), with blocksizes 32, 64 and 128 and
/// outputs that are not multiples of the four values of a texel (whose forward takes the plain
/// kernel on every graph: the subgroup one stores vec4s); the weight's linear layouts with and without a partial last row, and (textures of
/// at most 64 texels a side) wider than 16 texels. Packs as copies and as kernels agree.
#[test]
fn nf4_texture_kernels_match_dequantized_cpu_matmul() {
    for_each_seed("nf4_tex", &[], |mut rng| {
        let cases = [
            (64usize, 64usize, 64usize, 64usize, None),
            (65, 129, 576, 64, None),
            (300, 66, 128, 32, None),
            (65, 100, 576, 64, None),
            (129, 192, 1536, 128, None),
            (100, 1536, 576, 64, None),
            (64, 256, 256, 64, Some(64)),
        ];
        for (rows, out, n_in, blocksize, max_side) in cases {
            let (q, deq) = random_weight(&mut rng, out, n_in, blocksize);
            let x = random_f32(&mut rng, rows * n_in, 1.0);
            let dy = random_f32(&mut rng, rows * out, 1.0);
            let dx0 = random_f32(&mut rng, rows * n_in, 1.0);
            let want_y = cpu_matmul(&x, false, &deq, true, rows, n_in, out, 1.0, None);
            let want_dx = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, None);
            let want_acc = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, Some(&dx0));
            let case = format!("rows {rows} out {out} in {n_in} bs {blocksize} max {max_side:?}");
            let mut results = Vec::new();
            for (mut g, sg) in texture_graphs().into_iter().zip(["", "_sg"]) {
                if max_side.is_some() {
                    g.kernels.textures = max_side;
                }
                let xt = g.input("x", &[rows, n_in], DType::F32);
                let dyt = g.input("dy", &[rows, out], DType::F32);
                let w = Nf4Weight::declare(&mut g, "w", [out, n_in], blocksize);
                let y = nf4_matmul::forward(&mut g, "y", xt, &w).unwrap();
                let dx = nf4_matmul::backward(&mut g, "dx", dyt, &w).unwrap();
                let acc = g.input("dx_acc", &[rows, n_in], DType::F32);
                nf4_matmul::backward_into(&mut g, "dx_acc += dy W", acc, dyt, &w).unwrap();
                let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
                let forward_sg = if out % 4 == 0 { sg } else { "" };
                let want = [
                    format!("nf4_forward_tex{forward_sg}"),
                    format!("nf4_backward_tex{sg}"),
                    format!("nf4_backward_tex{sg}_acc"),
                ];
                for k in &want {
                    assert!(kernels.contains(k), "{case}: {kernels:?}");
                }
                let (codes, absmax) = upload_bytes(&q);
                let inputs = [
                    (xt, bytes(&x)),
                    (dyt, bytes(&dy)),
                    (w.codes, codes),
                    (w.absmax, absmax),
                    (acc, bytes(&dx0)),
                ];
                // The weight's packs (codes and scales, once for the three products) are copies;
                // run once more with the pack kernels instead.
                let weight_packs = g
                    .nodes
                    .iter()
                    .filter(|n| n.copy.is_some() && [w.codes, w.absmax].contains(&n.tensors[0]));
                assert_eq!(weight_packs.count(), 2, "{case}");
                let mut without_copies = g.clone();
                without_copies.nodes.iter_mut().for_each(|n| n.copy = None);
                let got = run_graph(g, &inputs, &[y, dx, acc]);
                for (what, got, want) in [
                    ("forward", &got[0], &want_y),
                    ("backward", &got[1], &want_dx),
                    ("backward accumulating", &got[2], &want_acc),
                ] {
                    Tol::F32.check(format!("{case} {what}{sg}"), got, want);
                }
                results.push(got);
                results.push(run_graph(without_copies, &inputs, &[y, dx, acc]));
            }
            assert_same_bits(&results, &case);
        }
    });
}

/// NF4 products with a LoRA adapter's term (`forward_lora`: y = x·Wᵀ + s·x_a·Bᵀ;
/// `backward_lora`: dx (+)= dy·W + s·dy_b·A) against the CPU on every texture graph (one
/// kernel on the subgroup graph, the product and then `matmul_into` on the other) and on the
/// portable kernels (one kernel, the term as r more steps of k: a rank of 20 takes two).
#[test]
fn nf4_products_with_a_lora_term_match_cpu() {
    use nf4_matmul::LowRank;
    for_each_seed("nf4_lora", &[], |mut rng| {
        let cases = [
            (64usize, 64usize, 64usize, 64usize, 4usize),
            (65, 129, 576, 64, 16),
            (300, 66, 128, 32, 8),
            (70, 65, 96, 32, 20),
            (65, 100, 576, 64, 16),
            (129, 192, 1536, 128, 16),
        ];
        for (rows, out, n_in, blocksize, r) in cases {
            let (q, deq) = random_weight(&mut rng, out, n_in, blocksize);
            let scale = rng.random_range(0.25..4.0);
            let x = random_f32(&mut rng, rows * n_in, 1.0);
            let x_a = random_f32(&mut rng, rows * r, 1.0);
            let b = random_f32(&mut rng, out * r, 0.1);
            let dy = random_f32(&mut rng, rows * out, 1.0);
            let dy_b = random_f32(&mut rng, rows * r, 1.0);
            let a = random_f32(&mut rng, r * n_in, 0.1);
            let dx0 = random_f32(&mut rng, rows * n_in, 1.0);
            let base_y = cpu_matmul(&x, false, &deq, true, rows, n_in, out, 1.0, None);
            let want_y = cpu_matmul(&x_a, false, &b, true, rows, r, out, scale, Some(&base_y));
            let base_dx = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, None);
            let want_dx = cpu_matmul(
                &dy_b,
                false,
                &a,
                false,
                rows,
                r,
                n_in,
                scale,
                Some(&base_dx),
            );
            let base_acc = cpu_matmul(&dy, false, &deq, false, rows, out, n_in, 1.0, Some(&dx0));
            let want_acc = cpu_matmul(
                &dy_b,
                false,
                &a,
                false,
                rows,
                r,
                n_in,
                scale,
                Some(&base_acc),
            );
            let case = format!("rows {rows} out {out} in {n_in} bs {blocksize} r {r}");
            // The texture graphs, then the portable kernels (which take the term at any shape).
            let mut graphs = texture_graphs();
            graphs.push(common::portable_graph());
            for mut g in graphs {
                let portable = g.kernels.portable(webqlora::kernels::Family::Nf4);
                let fused = g.kernels.eight_lane_subgroups || portable;
                let xt = g.input("x", &[rows, n_in], DType::F32);
                let x_at = g.input("x_a", &[rows, r], DType::F32);
                let bt = g.input("B", &[out, r], DType::F32);
                let dyt = g.input("dy", &[rows, out], DType::F32);
                let dy_bt = g.input("dy_b", &[rows, r], DType::F32);
                let at = g.input("A", &[r, n_in], DType::F32);
                let acc = g.input("dx_acc", &[rows, n_in], DType::F32);
                let w = Nf4Weight::declare(&mut g, "w", [out, n_in], blocksize);
                let up = LowRank {
                    lhs: x_at,
                    factor: bt,
                    scale,
                };
                let down = LowRank {
                    lhs: dy_bt,
                    factor: at,
                    scale,
                };
                let y = nf4_matmul::forward_lora(&mut g, "y", xt, &w, up).unwrap();
                let dx = nf4_matmul::backward_lora(&mut g, "dx", dyt, &w, None, down).unwrap();
                nf4_matmul::backward_lora(&mut g, "dx_acc", dyt, &w, Some(acc), down).unwrap();
                // The subgroup forward stores vec4s, so outputs not a multiple of four add the
                // term apart.
                let separate_term = |product: &str| {
                    g.nodes.iter().any(|n| {
                        n.kernel.name.starts_with("matmul") && n.label.starts_with(product)
                    })
                };
                assert_eq!(
                    separate_term("y "),
                    !fused || (out % 4 != 0 && !portable),
                    "{case}: fused {fused}"
                );
                assert_eq!(separate_term("dx "), !fused, "{case}: fused {fused}");
                let (codes, absmax) = upload_bytes(&q);
                let inputs = [
                    (xt, bytes(&x)),
                    (x_at, bytes(&x_a)),
                    (bt, bytes(&b)),
                    (dyt, bytes(&dy)),
                    (dy_bt, bytes(&dy_b)),
                    (at, bytes(&a)),
                    (acc, bytes(&dx0)),
                    (w.codes, codes),
                    (w.absmax, absmax),
                ];
                let got = run_graph(g, &inputs, &[y, dx, acc]);
                for (what, got, want) in [
                    ("forward", &got[0], &want_y),
                    ("backward", &got[1], &want_dx),
                    ("backward accumulating", &got[2], &want_acc),
                ] {
                    Tol::F32.check(format!("{case} {what} (fused {fused})"), got, want);
                }
            }
        }
    });
}

/// A texture keeps its packed operand only until a node writes that tensor: the product after
/// the write packs it again (and still reuses the unchanged one).
#[test]
fn a_texture_is_packed_again_after_its_source_changes() {
    for_each_seed("repack", &[], |mut rng| {
        let (m, k, n) = (64usize, 68usize, 72usize);
        let a = random_f32(&mut rng, m * k, 1.0);
        let b = random_f32(&mut rng, n * k, 1.0);
        let d = random_f32(&mut rng, n * k, 1.0);
        let mut g = common::texture_graph();
        let at = g.input("a", &[m, k], DType::F32);
        let bt = g.input("b", &[n, k], DType::F32);
        let dt = g.input("d", &[n, k], DType::F32);
        let c1 = matmul(
            &mut g,
            "c1",
            Operand::plain(at),
            Operand::transposed(bt),
            1.0,
        )
        .unwrap();
        matmul_into(
            &mut g,
            "a += c1 d",
            at,
            Operand::plain(c1),
            Operand::plain(dt),
            1.0,
        )
        .unwrap();
        let c2 = matmul(
            &mut g,
            "c2",
            Operand::plain(at),
            Operand::transposed(bt),
            1.0,
        )
        .unwrap();
        let kernels: Vec<String> = g.nodes.iter().map(|n| n.kernel_label()).collect();
        // a, b; c1, d; a again. With the subgroup kernels d is packed by its stored rows, a
        // texture of b's packed size in b's slot, so b is packed again too.
        let packs = if g.kernels.eight_lane_subgroups { 6 } else { 5 };
        assert_eq!(
            kernels.iter().filter(|k| k.starts_with("pack")).count(),
            packs,
            "{kernels:?}"
        );
        assert_eq!(kernels[kernels.len() - 2], "pack_rows");
        assert!(kernels[kernels.len() - 1].starts_with("matmul_tex"));
        let got = run_graph(
            g,
            &[(at, bytes(&a)), (bt, bytes(&b)), (dt, bytes(&d))],
            &[c1, c2],
        );
        let want1 = cpu_matmul(&a, false, &b, true, m, k, n, 1.0, None);
        let a2 = cpu_matmul(&want1, false, &d, false, m, n, k, 1.0, Some(&a));
        let want2 = cpu_matmul(&a2, false, &b, true, m, k, n, 1.0, None);
        products(k).check("before the write", &got[0], &want1);
        Tol::F32.check("after the write", &got[1], &want2);
    });
}

/// Logits over a vocabulary larger than a texture side: column blocks of the logits, each on
/// the texture kernel, against the CPU (a texture side of 128 stands in for the device's).
#[test]
fn logits_in_column_blocks_match_cpu() {
    for_each_seed("logits_blocks", &[], |mut rng| {
        for (rows, dim, vocab) in [(65usize, 64usize, 300usize), (64, 36, 256)] {
            let h = random_f32(&mut rng, rows * dim, 1.0);
            let e = random_f32(&mut rng, vocab * dim, 1.0);
            let mut g = common::texture_graph();
            g.kernels.textures = Some(128);
            let ht = g.input("h", &[rows, dim], DType::F32);
            let et = g.param("lm_head", &[vocab, dim], DType::F32);
            let logits = webqlora::ops::matmul::logits(&mut g, "logits", ht, et).unwrap();
            let kernels = g
                .nodes
                .iter()
                .filter(|n| ["matmul_tex", "matmul_tex_sg"].contains(&n.kernel.name))
                .count();
            assert_eq!(kernels, vocab.div_ceil(128), "{rows}x{dim}x{vocab}");
            let got = run_graph(g, &[(ht, bytes(&h)), (et, bytes(&e))], &[logits]);
            let want = cpu_matmul(&h, false, &e, true, rows, dim, vocab, 1.0, None);
            products(dim).check(format!("{rows}x{dim}x{vocab}"), &got[0], &want);
        }
    });
}
