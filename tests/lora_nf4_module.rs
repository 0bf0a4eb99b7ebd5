//! A linear module with an NF4 base weight and a LoRA adapter, forward and backward, against
//! an f64 CPU reference on the dequantized weight: on the texture graphs of software devices
//! (where the subgroup kernels take the adapter's terms into the NF4 products), with and
//! without dropout, writing dx or adding it into an existing tensor; and on the plain graph.

mod common;

use common::lora_reference::{lora_reference, Dropout, LoraCase};
use common::{bytes, for_each_seed, random_f32, run_graph, to_f32, Tol};
use rand::Rng;
use webqlora::graph::{DType, Graph};
use webqlora::model::transformer::{Linear, LoraFactors, Module};
use webqlora::ops::dropout::DropoutSite;
use webqlora::ops::nf4_matmul::{upload_bytes, Nf4Weight};
use webqlora::quant::nf4::Nf4Tensor;

struct Case {
    rows: usize,
    n_in: usize,
    out: usize,
    r: usize,
    dropout: Option<f32>,
    accumulate: bool,
}

fn check(mut g: Graph, case: &Case, rng: &mut rand::rngs::StdRng) {
    let Case {
        rows: t,
        n_in: inp,
        out,
        r,
        dropout,
        accumulate,
    } = *case;
    let what = format!(
        "rows {t} in {inp} out {out} r {r} dropout {dropout:?} accumulate {accumulate} textures {} subgroups {}",
        g.kernels.textures.is_some(),
        g.kernels.eight_lane_subgroups
    );
    let scale = rng.random_range(0.5..4.0);
    let x = random_f32(rng, t * inp, 1.0);
    let w = random_f32(rng, out * inp, 0.1);
    let q = Nf4Tensor::quantize(&w, &[out, inp], 64, true).unwrap();
    let w = q.dequantize();
    let a = random_f32(rng, r * inp, 0.3);
    let b = random_f32(rng, out * r, 0.3);
    let dy = random_f32(rng, t * out, 1.0);
    let dx0 = random_f32(rng, t * inp, 1.0);
    let seed_value = 4242u32;

    let xt = g.input("x", &[t, inp], DType::F32);
    let dyt = g.input("dy", &[t, out], DType::F32);
    let dx0t = g.input("dx0", &[t, inp], DType::F32);
    let seed = g.input("seed", &[1], DType::U32);
    let wt = Nf4Weight::declare(&mut g, "w", [out, inp], 64);
    let at = g.param("a", &[r, inp], DType::F32);
    let bt = g.param("b", &[out, r], DType::F32);
    let module = Module {
        weight: Linear::Nf4(wt),
        bias: None,
        lora: Some(LoraFactors {
            a: at,
            b: bt,
            scale,
            dropout: dropout.map(|p| DropoutSite { p, seed, salt: 5 }),
            dora: None,
        }),
    };
    let (y, saved) = module.forward_saving(&mut g, "y", xt).unwrap();
    let into = accumulate.then_some(dx0t);
    let (dx, grads) = module.backward(&mut g, "dx", dyt, saved, into).unwrap();
    let grads = grads.unwrap();
    // Separate products add the adapter's terms to y and dx, except where the subgroup
    // texture kernels or the portable kernels take them (dx's only without dropout, whose
    // mask it needs).
    let separate = g
        .nodes
        .iter()
        .filter(|n| n.label.ends_with("+= lora"))
        .count();
    let takes_terms =
        g.kernels.eight_lane_subgroups || g.kernels.portable(webqlora::kernels::Family::Nf4);
    let fused = match (takes_terms, dropout) {
        (false, _) => 0,
        (true, Some(_)) => 1,
        (true, None) => 2,
    };
    assert_eq!(separate, 2 - fused, "{what}");
    let (codes, absmax) = upload_bytes(&q);
    let got = run_graph(
        g,
        &[
            (xt, bytes(&x)),
            (dyt, bytes(&dy)),
            (dx0t, bytes(&dx0)),
            (seed, bytemuck::bytes_of(&seed_value).to_vec()),
            (wt.codes, codes),
            (wt.absmax, absmax),
            (at, bytes(&a)),
            (bt, bytes(&b)),
        ],
        &[y, dx, grads.a, grads.b],
    );

    let want = lora_reference(&LoraCase {
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
        dropout: dropout.map(|p| Dropout {
            p,
            seed: seed_value,
            salt: 5,
        }),
    });
    let dx_want: Vec<f64> = if accumulate {
        want.dx
            .iter()
            .zip(&dx0)
            .map(|(d, &d0)| d + d0 as f64)
            .collect()
    } else {
        want.dx
    };
    for (name, got, want) in [
        ("y", &got[0], &want.y),
        ("dx", &got[1], &dx_want),
        ("dA", &got[2], &want.d_a),
        ("dB", &got[3], &want.d_b),
    ] {
        Tol::F32.check(format!("{what}: {name}"), got, &to_f32(want));
    }
}

#[test]
fn nf4_module_with_an_adapter_matches_cpu() {
    for_each_seed("lora_nf4_module", &[], |mut rng| {
        let cases = [
            (None, false),
            (None, true),
            (Some(0.25), false),
            (Some(0.25), true),
        ];
        for (i, (dropout, accumulate)) in cases.into_iter().enumerate() {
            let case = Case {
                rows: [64, 97][i % 2],
                n_in: [128, 192][i / 2],
                out: [64, 320][i % 2],
                r: [16, 8][i / 2],
                dropout,
                accumulate,
            };
            check(common::texture_graph(), &case, &mut rng);
            check(common::software_buffer_graph(), &case, &mut rng);
            check(common::portable_graph(), &case, &mut rng);
        }
    });
}
