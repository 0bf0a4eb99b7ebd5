//! The fused lm-head + cross-entropy against a CPU reference (loss and d hidden), with
//! ignored targets and chunks that do not divide the vocabulary; the reference's gradient
//! against finite differences of its loss.

mod common;

use common::{bytes, check_gradient, for_each_seed, random_f32, run_graph, to_f32, to_f64, Tol};
use rand::Rng;
use webqlora::graph::{DType, Graph};
use webqlora::ops::cross_entropy::{chunk_for, cpu_lm_head_loss, lm_head_loss, IGNORE};

#[test]
fn fused_loss_and_gradient_match_cpu() {
    for_each_seed("cross_entropy", &[], |mut rng| {
        for &(rows, dim, vocab, chunk) in &[
            (1usize, 16usize, 100usize, 100usize),
            (7, 65, 257, 64),
            (33, 64, 1000, 300),
            (65, 33, 513, 1000),
        ] {
            let h = random_f32(&mut rng, rows * dim, 1.0);
            let w = random_f32(&mut rng, vocab * dim, 0.5);
            let targets: Vec<u32> = (0..rows)
                .map(|i| {
                    if i % 3 == 2 {
                        IGNORE
                    } else {
                        rng.random_range(0..vocab as u32)
                    }
                })
                .collect();
            let (h64, w64) = (to_f64(&h), to_f64(&w));
            let dh = check_against_cpu(&h, &w, &targets, dim, chunk);
            let f = |h: &[f64]| vec![cpu_lm_head_loss(h, &w64, &targets, dim).0];
            check_gradient("lm-head loss", f, &h64, &[1.0], &dh, &mut rng, 30);
        }
    });
}

#[test]
fn a_max_that_moves_every_chunk_rescales_the_gradient() {
    // W's rows grow along u through the vocabulary, so the logits of a row along +u rise by
    // about 40 over it and each chunk brings a new max (d hidden rescaled at every chunk, by
    // factors down to exp(-5)); a row along -u keeps its first chunk's max (never rescaled).
    for_each_seed("cross_entropy_rising", &[], |mut rng| {
        let (rows, dim, vocab, chunk) = (10, 32, 640, 64);
        let u = random_f32(&mut rng, dim, 1.0);
        let noise = random_f32(&mut rng, vocab * dim, 0.05);
        let w: Vec<f32> = (0..vocab * dim)
            .map(|i| u[i % dim] * 4.0 * (i / dim) as f32 / vocab as f32 + noise[i])
            .collect();
        let jitter = random_f32(&mut rng, rows * dim, 0.1);
        let h: Vec<f32> = (0..rows * dim)
        .map(|i| if (i / dim) % 2 == 0 { u[i % dim] } else { -u[i % dim] } + jitter[i])
        .collect();
        let mut targets: Vec<u32> = (0..rows)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect();
        targets[rows - 1] = IGNORE;
        check_against_cpu(&h, &w, &targets, dim, chunk);
    });
}

/// The fused loss on the device against the f64 reference (loss, counted rows, d hidden),
/// with the software kernels (a row an invocation) and the portable ones (a row a workgroup,
/// reductions in workgroup memory; the rescale an element an invocation); returns the
/// reference's d hidden.
fn check_against_cpu(h: &[f32], w: &[f32], targets: &[u32], dim: usize, chunk: usize) -> Vec<f64> {
    let (rows, vocab) = (targets.len(), w.len() / dim);
    let (loss, counted, dh) = cpu_lm_head_loss(&to_f64(h), &to_f64(w), targets, dim);
    for (mut g, portable) in [
        (common::software_buffer_graph(), false),
        (common::portable_graph(), true),
    ] {
        let ht = g.input("h_final", &[rows, dim], DType::F32);
        let wt = g.param("lm_head", &[vocab, dim], DType::F32);
        let tt = g.input("targets", &[rows], DType::U32);
        let out = lm_head_loss(&mut g, "loss", ht, wt, tt, chunk).unwrap();
        let online_rows = g.nodes.iter().any(|n| n.kernel.name.ends_with("_rows"));
        assert_eq!(online_rows, portable);
        let inputs = [
            (ht, bytes(h)),
            (wt, bytes(w)),
            (tt, bytemuck::cast_slice(targets).to_vec()),
        ];
        let got = run_graph(g, &inputs, &[out.loss, out.d_hidden]);
        let case = format!("{rows}x{dim}, vocab {vocab}, chunk {chunk}, portable {portable}");
        assert_eq!(got[0][1], counted as f32, "{case}");
        let e = ((got[0][0] as f64 - loss) / loss).abs();
        assert!(e < 1e-5, "loss {} vs {loss} ({case})", got[0][0]);
        Tol::F32.check(format!("d hidden ({case})"), &got[1], &to_f32(&dh));
    }
    dh
}

#[test]
fn no_counted_target_gives_zero_loss_and_gradient() {
    for_each_seed("cross_entropy_empty", &[], |mut rng| {
        let (rows, dim, vocab) = (4, 8, 50);
        let mut g = Graph::new();
        let ht = g.input("h", &[rows, dim], DType::F32);
        let wt = g.param("lm_head", &[vocab, dim], DType::F32);
        let tt = g.input("targets", &[rows], DType::U32);
        let out = lm_head_loss(&mut g, "loss", ht, wt, tt, 16).unwrap();
        let inputs = [
            (ht, bytes(&random_f32(&mut rng, rows * dim, 1.0))),
            (wt, bytes(&random_f32(&mut rng, vocab * dim, 1.0))),
            (tt, bytemuck::cast_slice(&[IGNORE; 4]).to_vec()),
        ];
        let got = run_graph(g, &inputs, &[out.loss, out.d_hidden]);
        assert_eq!(got[0], vec![0.0, 0.0]);
        assert!(got[1].iter().all(|&d| d == 0.0));
    });
}

#[test]
fn smollm2_lm_head_plans_within_the_default_binding_limit() {
    // 1024 tokens × 49152 vocabulary: the full logits would be 192 MiB.
    let (rows, dim, vocab) = (1024, 576, 49152);
    let limits = webqlora::graph::DeviceLimits::webgpu_default();
    let chunk = chunk_for(rows, vocab, 32 << 20);
    assert_eq!(chunk, 8192);
    // Few rows: the chunk is capped by the per-invocation loop budget, not memory.
    assert_eq!(chunk_for(32, vocab, 32 << 20), 16384);
    let mut g = Graph::new();
    let ht = g.input("h", &[rows, dim], DType::F32);
    let wt = g.param("embed_tokens", &[vocab, dim], DType::F32);
    let tt = g.input("targets", &[rows], DType::U32);
    let out = lm_head_loss(&mut g, "loss", ht, wt, tt, chunk).unwrap();
    g.mark_output(out.loss);
    g.mark_output(out.d_hidden);
    let plan = webqlora::graph::Plan::new(&g, &limits).unwrap();
    // Weight 108 MiB + two 32 MiB logits chunks + small tensors.
    assert!(
        plan.peak_bytes() < 190 << 20,
        "planned peak {}",
        plan.peak_bytes()
    );
}
