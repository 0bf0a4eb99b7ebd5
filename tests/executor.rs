//! The executor runs real kernels and matches a CPU computation, including a dispatch that
//! has to be split past 65,535 workgroups.

mod common;

use common::{for_each_seed, gpu, random_f32, Tol, POISON};
use webqlora::graph::{CompiledGraph, DType, Dispatch, Graph};
use webqlora::ops::{residual, rmsnorm, swiglu};

fn run_chain(rows: usize, cols: usize) {
    for_each_seed(&format!("chain {rows}x{cols}"), &[], |mut rng| {
        let x = random_f32(&mut rng, rows * cols, 2.0);
        let w = random_f32(&mut rng, cols, 1.5);

        let mut g = Graph::new();
        let xt = g.input("x", &[rows, cols], DType::F32);
        let wt = g.param("weight", &[cols], DType::F32);
        let (h_norm, rstd) = rmsnorm::forward(&mut g, "h_norm", xt, wt, 1e-5).unwrap();
        let act = swiglu::forward(&mut g, "act", h_norm, xt, swiglu::Activation::Silu).unwrap();
        let out = residual::add(&mut g, "out", xt, act).unwrap();
        g.mark_output(rstd);
        g.mark_output(out);

        let gpu = gpu();
        let compiled = CompiledGraph::new(gpu, g).unwrap();
        compiled.poison(gpu, POISON);
        compiled.write(gpu, xt, bytemuck::cast_slice(&x)).unwrap();
        compiled.write(gpu, wt, bytemuck::cast_slice(&w)).unwrap();
        compiled.run(gpu);
        let got_out = pollster::block_on(compiled.read_f32(gpu, out)).unwrap();
        let got_rstd = pollster::block_on(compiled.read_f32(gpu, rstd)).unwrap();

        let (y, want_rstd) = rmsnorm::cpu_forward(&x, &w, cols, 1e-5);
        let want_out =
            residual::cpu_add(&x, &swiglu::cpu_forward(&y, &x, swiglu::Activation::Silu));
        Tol::F32.check(format!("rstd at {rows}x{cols}"), &got_rstd, &want_rstd);
        Tol::F32.check(format!("out at {rows}x{cols}"), &got_out, &want_out);
    });
}

#[test]
fn chain_of_three_kernels_matches_cpu() {
    for (rows, cols) in [(1, 7), (7, 33), (33, 65), (300, 576), (65, 1)] {
        run_chain(rows, cols);
    }
}

#[test]
fn graph_runs_again_with_new_inputs() {
    for_each_seed("rerun", &[], |mut rng| {
        let n = 1000;
        let mut g = Graph::new();
        let a = g.input("a", &[n], DType::F32);
        let b = g.input("b", &[n], DType::F32);
        let out = residual::add(&mut g, "out", a, b).unwrap();
        g.mark_output(out);
        let gpu = gpu();
        let compiled = CompiledGraph::new(gpu, g).unwrap();
        for _ in 0..3 {
            let (va, vb) = (random_f32(&mut rng, n, 4.0), random_f32(&mut rng, n, 4.0));
            compiled.poison(gpu, POISON);
            compiled.write(gpu, a, bytemuck::cast_slice(&va)).unwrap();
            compiled.write(gpu, b, bytemuck::cast_slice(&vb)).unwrap();
            compiled.run(gpu);
            let got = pollster::block_on(compiled.read_f32(gpu, out)).unwrap();
            assert_eq!(got, residual::cpu_add(&va, &vb), "exact f32 addition");
        }
    });
}

#[test]
fn dispatch_over_65535_workgroups_is_split() {
    let gpu = gpu();
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    // One element per invocation, 64 a workgroup: this needs more workgroups than one
    // dimension allows, plus a ragged tail.
    let n = 64 * max + 64 * 3 + 17;
    for_each_seed("split", &[], |mut rng| {
        let va = random_f32(&mut rng, n, 8.0);
        let vb = random_f32(&mut rng, n, 8.0);

        let mut g = Graph::new();
        let a = g.input("a", &[n], DType::F32);
        let b = g.input("b", &[n], DType::F32);
        let out = residual::add(&mut g, "out", a, b).unwrap();
        g.mark_output(out);
        let wanted = Dispatch::Linear(n.div_ceil(64) as u32);
        assert_eq!(g.nodes[0].dispatch, wanted);
        let [x, y, z] = wanted.workgroups(max as u32).unwrap();
        assert!(
            y > 1 && z == 1 && x as usize * y as usize >= n.div_ceil(64),
            "{x} {y} {z}"
        );

        let compiled = CompiledGraph::new(gpu, g).unwrap();
        compiled.poison(gpu, POISON);
        compiled.write(gpu, a, bytemuck::cast_slice(&va)).unwrap();
        compiled.write(gpu, b, bytemuck::cast_slice(&vb)).unwrap();
        compiled.run(gpu);
        let got = pollster::block_on(compiled.read_f32(gpu, out)).unwrap();
        let want = residual::cpu_add(&va, &vb);
        let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(first_bad, None, "element {first_bad:?} of {n} is wrong");
    });
}

#[test]
fn temporaries_are_not_readable_but_outputs_are() {
    let mut g = Graph::new();
    let a = g.input("a", &[4], DType::F32);
    let t = residual::add(&mut g, "t", a, a).unwrap();
    let out = residual::add(&mut g, "out", t, a).unwrap();
    g.mark_output(out);
    let gpu = gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled
        .write(gpu, a, bytemuck::cast_slice(&[1.0f32, 2.0, 3.0, 4.0]))
        .unwrap();
    compiled.run(gpu);
    let err = pollster::block_on(compiled.read(gpu, t)).unwrap_err();
    assert!(
        err.to_string().contains("tensor 't' is a temporary"),
        "{err}"
    );
    let got = pollster::block_on(compiled.read_f32(gpu, out)).unwrap();
    assert_eq!(got, vec![3.0, 6.0, 9.0, 12.0]);
}

#[test]
fn views_read_and_write_their_roots_elements() {
    for_each_seed("views", &[], |mut rng| {
        let (rows, cols) = (6, 10);
        let x = random_f32(&mut rng, rows * cols, 1.0);
        let w = random_f32(&mut rng, cols / 2, 1.0);
        let mut g = Graph::new();
        let xt = g.input("x", &[rows * cols], DType::F32);
        let wt = g.param("weight", &[cols / 2], DType::F32);
        let doubled = residual::add(&mut g, "doubled", xt, xt).unwrap();
        // Normalise the flat result as rows of cols / 2, then read it back flat.
        let as_rows = g
            .view(doubled, "doubled_rows", &[rows * 2, cols / 2])
            .unwrap();
        let (normed, _) = rmsnorm::forward(&mut g, "normed", as_rows, wt, 1e-5).unwrap();
        let flat = g.view(normed, "normed_flat", &[rows * cols]).unwrap();
        g.mark_output(flat);
        let gpu = gpu();
        let compiled = CompiledGraph::new(gpu, g).unwrap();
        compiled.poison(gpu, POISON);
        compiled.write(gpu, xt, bytemuck::cast_slice(&x)).unwrap();
        compiled.write(gpu, wt, bytemuck::cast_slice(&w)).unwrap();
        compiled.run(gpu);
        let got = pollster::block_on(compiled.read_f32(gpu, flat)).unwrap();
        let doubled_cpu = residual::cpu_add(&x, &x);
        let (want, _) = rmsnorm::cpu_forward(&doubled_cpu, &w, cols / 2, 1e-5);
        Tol::F32.check("the doubled input's norm", &got, &want);
    });
}

/// Two products on the subgroup kernels, each taking its tiles from a queue of its own: every
/// run (and a profiled run, one pass a node) starts the queues over. Without the reset the
/// second run would find them empty and leave its outputs poisoned.
#[test]
fn tile_queues_start_over_on_every_run() {
    use webqlora::ops::nf4_matmul::{self, upload_bytes, Nf4Weight};
    use webqlora::quant::nf4::Nf4Tensor;
    for_each_seed("tile queues", &[], |mut rng| {
        let (rows, out, n_in) = (100, 96, 128);
        let w = random_f32(&mut rng, out * n_in, 0.1);
        let q = Nf4Tensor::quantize(&w, &[out, n_in], 64, true).unwrap();
        let deq = q.dequantize();
        let x = random_f32(&mut rng, rows * n_in, 1.0);
        let dy = random_f32(&mut rng, rows * out, 1.0);

        let mut g = common::texture_graph();
        let xt = g.input("x", &[rows, n_in], DType::F32);
        let dyt = g.input("dy", &[rows, out], DType::F32);
        let wt = Nf4Weight::declare(&mut g, "w", [out, n_in], 64);
        let y = nf4_matmul::forward(&mut g, "y", xt, &wt).unwrap();
        let dx = nf4_matmul::backward(&mut g, "dx", dyt, &wt).unwrap();
        g.mark_output(y);
        g.mark_output(dx);
        let queues = g
            .nodes
            .iter()
            .filter(|n| matches!(n.dispatch, Dispatch::TileQueue(_)))
            .count();
        let subgroups = gpu().has_eight_lane_subgroups();
        assert_eq!(queues, if subgroups { 2 } else { 0 });

        let gpu = gpu();
        let compiled = CompiledGraph::new(gpu, g).unwrap();
        assert_eq!(
            compiled.plan.queue_bytes,
            queues as u64 * compiled.plan.queue_stride
        );
        let (codes, absmax) = upload_bytes(&q);
        compiled.write(gpu, xt, bytemuck::cast_slice(&x)).unwrap();
        compiled.write(gpu, dyt, bytemuck::cast_slice(&dy)).unwrap();
        compiled.write(gpu, wt.codes, &codes).unwrap();
        compiled.write(gpu, wt.absmax, &absmax).unwrap();

        let want_y: Vec<f32> = (0..rows * out)
            .map(|i| {
                (0..n_in)
                    .map(|k| x[i / out * n_in + k] * deq[i % out * n_in + k])
                    .sum()
            })
            .collect();
        let want_dx: Vec<f32> = (0..rows * n_in)
            .map(|i| {
                (0..out)
                    .map(|o| dy[i / n_in * out + o] * deq[o * n_in + i % n_in])
                    .sum()
            })
            .collect();
        let read = |t| pollster::block_on(compiled.read_f32(gpu, t)).unwrap();
        let mut first = None;
        for profiled in [false, false, true] {
            compiled.poison(gpu, POISON);
            if profiled {
                pollster::block_on(compiled.run_profiled(gpu)).unwrap();
            } else {
                compiled.run(gpu);
            }
            let got = (read(y), read(dx));
            // The reference sums in f32 too, one term after another: its own rounding grows
            // with the sum's length, so the margin is ten times the f64 references'.
            let tol = Tol::rel(1e-4);
            tol.check(format!("y, profiled {profiled}"), &got.0, &want_y);
            tol.check(format!("dx, profiled {profiled}"), &got.1, &want_dx);
            match &first {
                None => first = Some(got),
                Some(first) => assert!(*first == got, "the same bits on every run"),
            }
        }
    });
}

/// Tensors stored in a group: each written and read by itself at its place (256-byte
/// aligned), kernels bound to single members write only there, a kernel bound to the group
/// sees them all one after another with zero gaps, and a second graph sharing a member by
/// name binds the group's buffer at that member's place.
#[test]
fn group_members_live_at_their_places_in_one_buffer() {
    use webqlora::graph::{Role, GROUP_ALIGN};
    let gpu = gpu();
    for_each_seed("groups", &[], |mut rng| {
        let sizes = [7usize, 64, 65, 1];
        let mut g = Graph::new();
        let members: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| g.param(&format!("p{i}"), &[n], DType::F32))
            .collect();
        let other = g.input("x", &[65], DType::F32);
        // Member 2 gains x by a kernel bound to the member alone.
        let sum = residual::add(&mut g, "p2 + x", members[2], other).unwrap();
        let group = g.group("group", &members, Role::Param).unwrap();
        // The whole group doubled by one kernel.
        let doubled = residual::add(&mut g, "group * 2", group, group).unwrap();
        g.mark_output(sum);
        g.mark_output(doubled);
        let total = g.tensor(group).numel();
        let slots: Vec<usize> = sizes
            .iter()
            .map(|&n| (4 * n as u64).next_multiple_of(GROUP_ALIGN) as usize / 4)
            .collect();
        assert_eq!(total, slots.iter().sum::<usize>());

        let compiled = CompiledGraph::new(gpu, g).unwrap();
        compiled.poison(gpu, POISON);
        let values: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| random_f32(&mut rng, n, 1.0))
            .collect();
        let x = random_f32(&mut rng, 65, 1.0);
        for (&t, v) in members.iter().zip(&values) {
            compiled.write(gpu, t, bytemuck::cast_slice(v)).unwrap();
        }
        compiled
            .write(gpu, other, bytemuck::cast_slice(&x))
            .unwrap();
        compiled.run(gpu);
        for (&t, v) in members.iter().zip(&values) {
            assert_eq!(&pollster::block_on(compiled.read_f32(gpu, t)).unwrap(), v);
        }
        let got_sum = pollster::block_on(compiled.read_f32(gpu, sum)).unwrap();
        let want_sum: Vec<f32> = values[2].iter().zip(&x).map(|(a, b)| a + b).collect();
        assert_eq!(got_sum, want_sum);
        let mut want = Vec::new();
        for (v, &slot) in values.iter().zip(&slots) {
            let mut padded: Vec<f32> = v.iter().map(|a| a + a).collect();
            padded.resize(slot, 0.0);
            want.extend(padded);
        }
        let got = pollster::block_on(compiled.read_f32(gpu, doubled)).unwrap();
        assert_eq!(got, want);

        // A graph over member 1 by name (as evaluation graphs share an adapter).
        let mut h = Graph::new();
        let p1 = h.param("p1", &[64], DType::F32);
        let y = h.input("y", &[64], DType::F32);
        let out = residual::add(&mut h, "p1 + y", p1, y).unwrap();
        h.mark_output(out);
        let (shared, unshared) = CompiledGraph::new_sharing(gpu, h, &compiled).unwrap();
        assert!(unshared.is_empty(), "{unshared:?}");
        let yv = random_f32(&mut rng, 64, 1.0);
        shared.write(gpu, y, bytemuck::cast_slice(&yv)).unwrap();
        shared.run(gpu);
        let got = pollster::block_on(shared.read_f32(gpu, out)).unwrap();
        let want: Vec<f32> = values[1].iter().zip(&yv).map(|(a, b)| a + b).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn groups_refuse_views_other_dtypes_and_repeats() {
    use webqlora::graph::Role;
    let mut g = Graph::new();
    let a = g.param("a", &[4, 4], DType::F32);
    let b = g.param("b", &[3], DType::U32);
    let v = g.view(a, "a flat", &[16]).unwrap();
    for (members, says) in [
        (vec![a, v], "is a view"),
        (vec![a, b], "is u32"),
        (vec![a, a], "listed twice"),
        (vec![], "needs members"),
    ] {
        let err = g.group("g", &members, Role::Param).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
}
