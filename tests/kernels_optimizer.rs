//! AdamW and gradient clipping against CPU references, and one AdamW step against PyTorch's
//! (../shared/golden/tiny-llama: adapter weights, their gradients, the weights after a step).

mod common;

use common::{bytes, for_each_seed, golden_json, random_f32, run_graph, Golden};
use webqlora::graph::{DType, Graph};
use webqlora::ops::adamw::AdamW;
use webqlora::ops::grad_norm::{clip, cpu_clip};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_finite() {
                (x - y).abs()
            } else {
                f32::INFINITY
            }
        })
        .fold(0.0, f32::max)
}

#[test]
fn clipped_adamw_steps_match_cpu() {
    for_each_seed("adamw", &[], |mut rng| {
        let sizes = [1usize, 300, 70_001];
        let opt = AdamW::default();
        for (max_norm, steps) in [(0.5f32, 3u32), (0.0, 2), (1e9, 1)] {
            let mut g = Graph::new();
            let hyper = g.input("hyper", &[4], DType::F32);
            let mut tensors = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let p = g.param(&format!("p{i}"), &[n], DType::F32);
                let grad = g.input(&format!("grad{i}"), &[n], DType::F32);
                let m = g.param(&format!("m{i}"), &[n], DType::F32);
                let v = g.param(&format!("v{i}"), &[n], DType::F32);
                tensors.push((p, grad, m, v));
            }
            let grads: Vec<_> = tensors.iter().map(|t| t.1).collect();
            let scale = clip(&mut g, "grad_scale", &grads, max_norm).unwrap();
            for (i, &(p, grad, m, v)) in tensors.iter().enumerate() {
                opt.step(&mut g, &format!("adamw p{i}"), p, grad, m, v, hyper, scale)
                    .unwrap();
            }
            g.mark_output(scale);
            let gpu = common::gpu();
            let compiled = webqlora::graph::CompiledGraph::new(gpu, g).unwrap();
            compiled.poison(gpu, common::POISON);

            let mut cpu: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = Vec::new();
            for (&(p, _, m, v), &n) in tensors.iter().zip(&sizes) {
                let p0 = random_f32(&mut rng, n, 1.0);
                compiled.write(gpu, p, &bytes(&p0)).unwrap();
                compiled.write(gpu, m, &bytes(&vec![0.0; n])).unwrap();
                compiled.write(gpu, v, &bytes(&vec![0.0; n])).unwrap();
                cpu.push((p0, vec![0.0; n], vec![0.0; n]));
            }
            for step in 1..=steps {
                let hyper_values = opt.hyper(1e-2, step);
                compiled.write(gpu, hyper, &bytes(&hyper_values)).unwrap();
                let grad_values: Vec<Vec<f32>> = sizes
                    .iter()
                    .map(|&n| random_f32(&mut rng, n, 0.01))
                    .collect();
                for (&(_, grad, _, _), values) in tensors.iter().zip(&grad_values) {
                    compiled.write(gpu, grad, &bytes(values)).unwrap();
                }
                compiled.run(gpu);
                let refs: Vec<&[f32]> = grad_values.iter().map(Vec::as_slice).collect();
                let (want_scale, want_norm) = cpu_clip(&refs, max_norm);
                let got = pollster::block_on(compiled.read_f32(gpu, scale)).unwrap();
                assert!(
                    (got[1] - want_norm).abs() <= 1e-5 * want_norm,
                    "norm {} vs {want_norm}",
                    got[1]
                );
                assert!(
                    (got[0] - want_scale).abs() <= 1e-5,
                    "scale {} vs {want_scale}",
                    got[0]
                );
                if max_norm == 0.5 {
                    assert!(want_scale < 1.0, "this case must clip");
                }
                for ((p, m, v), grad) in cpu.iter_mut().zip(&grad_values) {
                    opt.cpu_step(p, grad, m, v, hyper_values, want_scale);
                }
            }
            for (&(p, _, _, _), (want, _, _)) in tensors.iter().zip(&cpu) {
                let got = pollster::block_on(compiled.read_f32(gpu, p)).unwrap();
                let d = max_abs_diff(&got, want);
                assert!(d < 1e-6, "max_norm {max_norm}: params differ by {d}");
            }
        }
    });
}

#[test]
fn too_many_gradient_elements_are_refused() {
    let mut g = Graph::new();
    let grads: Vec<_> = (0..2)
        .map(|i| g.input(&format!("grad{i}"), &[140_000_000], DType::F32))
        .collect();
    let err = clip(&mut g, "grad_scale", &grads, 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "grad_scale: 280000000 gradient elements need 68360 partial sums; at most 65535 (268431360 elements) are supported"
    );
}

#[test]
fn one_adamw_step_matches_pytorch() {
    let meta = golden_json("tiny-llama/expected.json");
    let opt = AdamW {
        beta1: meta["betas"][0].as_f64().unwrap() as f32,
        beta2: meta["betas"][1].as_f64().unwrap() as f32,
        eps: meta["eps"].as_f64().unwrap() as f32,
        weight_decay: meta["weight_decay"].as_f64().unwrap() as f32,
    };
    let lr = meta["lr"].as_f64().unwrap() as f32;
    let adapter = Golden::open("tiny-llama/adapter/adapter_model.safetensors");
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let names = adapter.names();
    assert_eq!(names.len(), 28);
    for variant in ["lora", "qlora"] {
        let mut g = Graph::new();
        let hyper = g.input("hyper", &[4], DType::F32);
        let grad_scale = g.param("grad_scale", &[1], DType::F32);
        let mut inputs = vec![
            (hyper, bytes(&opt.hyper(lr, 1))),
            (grad_scale, bytes(&[1.0])),
        ];
        let mut params = Vec::new();
        for name in &names {
            let shape = adapter.shape(name);
            let n: usize = shape.iter().product();
            let p = g.param(name, &shape, DType::F32);
            let grad = g.input(&format!("grad.{name}"), &shape, DType::F32);
            let m = g.param(&format!("m.{name}"), &shape, DType::F32);
            let v = g.param(&format!("v.{name}"), &shape, DType::F32);
            opt.step(&mut g, name, p, grad, m, v, hyper, grad_scale)
                .unwrap();
            inputs.push((p, bytes(&adapter.f32(name))));
            inputs.push((
                grad,
                bytes(&expected.f32(&format!("grad_{variant}.{name}"))),
            ));
            inputs.push((m, bytes(&vec![0.0; n])));
            inputs.push((v, bytes(&vec![0.0; n])));
            params.push(p);
        }
        let got = run_graph(g, &inputs, &params);
        for (name, got) in names.iter().zip(&got) {
            let want = expected.f32(&format!("after_adamw_{variant}.{name}"));
            let d = max_abs_diff(got, &want);
            assert!(d <= 1e-5, "{variant} {name}: differs from PyTorch by {d}");
        }
    }
}

#[test]
fn accumulation_over_micro_batches_matches_cpu() {
    use webqlora::graph::{CompiledGraph, DType, Graph};
    use webqlora::ops::accumulate::{accumulate, cpu_accumulate};
    for_each_seed("accumulate", &[], |mut rng| {
        for n in [1usize, 65, 70_001] {
            let mut g = Graph::new();
            let grad = g.input("g", &[n], DType::F32);
            let coef = g.input("coef", &[2], DType::F32);
            let acc = g.param("acc", &[n], DType::F32);
            accumulate(&mut g, "acc", grad, coef, acc).unwrap();
            let gpu = common::gpu();
            let compiled = CompiledGraph::new(gpu, g).unwrap();
            // Whatever acc held before the first micro-batch (NaN here) must not leak in.
            compiled
                .write(gpu, acc, bytemuck::cast_slice(&vec![common::POISON; n]))
                .unwrap();
            let micro = 3;
            let mut expected = vec![f32::NAN; n];
            for i in 0..micro {
                let values = random_f32(&mut rng, n, 2.0);
                let keep = if i == 0 { 0.0 } else { 1.0 };
                let weight = 1.0 / micro as f32;
                compiled.write(gpu, grad, &bytes(&values)).unwrap();
                compiled.write(gpu, coef, &bytes(&[keep, weight])).unwrap();
                compiled.run(gpu);
                expected = cpu_accumulate(&expected, &values, keep, weight);
            }
            let got = pollster::block_on(compiled.read_f32(gpu, acc)).unwrap();
            assert!(max_abs_diff(&got, &expected) < 1e-6, "n {n}");
        }
    });
}
