//! A linear module whose adapter has dropout (PEFT's lora_dropout): the forward is
//! x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ and the backward's dA, dB and dx use the same mask, against an
//! f64 CPU reference on fresh random data.

mod common;

use common::lora_reference::{lora_reference, Dropout, LoraCase};
use common::{bytes, for_each_seed, random_f32, rel_err, run_graph, to_f32, Tol};
use webqlora::graph::{DType, Graph};
use webqlora::model::transformer::{Linear, LoraFactors, Module};
use webqlora::ops::dropout::DropoutSite;

#[test]
fn adapter_dropout_forward_and_backward_match_cpu() {
    for_each_seed("lora_dropout", &[], |mut rng| {
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
                dora: None,
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

        let case = LoraCase {
            t,
            n_in: inp,
            out,
            r,
            scale,
            x: &x,
            w: &w,
            a: &a,
            b: &b,
            dy: &dy,
            dropout: Some(Dropout {
                p,
                seed: seed_value,
                salt: 3,
            }),
        };
        let want = lora_reference(&case);
        for (name, got, want) in [
            ("y", &got[0], &want.y),
            ("dx", &got[1], &want.dx),
            ("dA", &got[2], &want.d_a),
            ("dB", &got[3], &want.d_b),
        ] {
            Tol::F32.check(name, got, &to_f32(want));
        }
        // Dropout did drop: without it dA differs.
        let plain = lora_reference(&LoraCase {
            dropout: None,
            ..case
        });
        assert!(rel_err(&got[2], &to_f32(&plain.d_a)) > 0.05);
    });
}
