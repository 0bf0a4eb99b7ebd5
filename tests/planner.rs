//! The liveness planner shares buffers between temporaries whose lifetimes do not overlap.

mod common;

use webqlora::graph::{DType, DeviceLimits, Graph, Placement, Plan};
use webqlora::lora::LoraConfig;
use webqlora::model::transformer::BaseFormat;
use webqlora::model::ModelConfig;
use webqlora::ops::adamw::AdamW;
use webqlora::ops::{residual, rmsnorm, swiglu};
use webqlora::train::fit::{will_it_fit, FitShape};
use webqlora::train::session::{SessionSettings, TrainSession};

#[test]
fn chain_of_same_size_temporaries_ping_pongs_between_two_buffers() {
    let n = 1 << 16; // elements
    let size = 4 * n as u64;
    let steps = 16;
    let mut g = Graph::new();
    let x = g.input("x", &[n], DType::F32);
    let mut t = residual::add(&mut g, "t1", x, x).unwrap();
    for i in 2..=steps {
        t = residual::add(&mut g, &format!("t{i}"), t, x).unwrap();
    }
    g.mark_output(t);
    let plan = Plan::new(&g, &DeviceLimits::webgpu_default()).unwrap();

    // x and the final output have their own buffers; the 15 temporaries need only two slots.
    assert_eq!(plan.slot_bytes, vec![size, size]);
    assert_eq!(plan.peak_bytes(), 4 * size);
    let unshared = (steps as u64 + 1) * size;
    assert!(
        plan.peak_bytes() * 4 < unshared,
        "{} vs {unshared}",
        plan.peak_bytes()
    );
}

#[test]
fn exact_peak_of_a_small_fixed_graph() {
    // x [4, 8] -> rmsnorm -> (y, rstd); act = swiglu(y, x); out = x + act.
    let mut g = Graph::new();
    let x = g.input("x", &[4, 8], DType::F32); // 128 B, own
    let w = g.param("weight", &[8], DType::F32); // 32 B, own
    let (y, rstd) = rmsnorm::forward(&mut g, "y", x, w, 1e-5).unwrap(); // 128 B, 16 B
    let act = swiglu::forward(&mut g, "act", y, x, swiglu::Activation::Silu).unwrap(); // 128 B
    let out = residual::add(&mut g, "out", x, act).unwrap(); // 128 B, own
    g.mark_output(out);
    let plan = Plan::new(&g, &DeviceLimits::webgpu_default()).unwrap();

    // y is still being read by node 1, so act cannot have y's slot; rstd (never read) dies at
    // node 0, before act is written, so it shares act's slot instead of needing a third.
    assert_eq!(plan.placement[y.index()], Placement::Slot(0));
    assert_eq!(plan.placement[rstd.index()], Placement::Slot(1));
    assert_eq!(plan.placement[act.index()], Placement::Slot(1));
    assert_eq!(plan.placement[out.index()], Placement::Own);
    assert_eq!(plan.slot_bytes, vec![128, 128]);
    assert_eq!(plan.pinned_bytes, 128 + 32 + 128);
    assert_eq!(plan.peak_bytes(), 544);
    let dump = plan.describe(&g);
    assert!(dump.contains("planned peak: 544 bytes"), "{dump}");
}

#[test]
fn a_node_never_writes_into_a_buffer_it_reads() {
    let mut g = Graph::new();
    let x = g.input("x", &[64], DType::F32);
    let a = residual::add(&mut g, "a", x, x).unwrap();
    let b = residual::add(&mut g, "b", a, x).unwrap(); // a dies here: b must not take a's slot
    let c = residual::add(&mut g, "c", b, x).unwrap(); // ... but c may
    g.mark_output(c);
    let plan = Plan::new(&g, &DeviceLimits::webgpu_default()).unwrap();
    assert_ne!(plan.placement[a.index()], plan.placement[b.index()]);
    assert_eq!(plan.placement[a.index()], Placement::Slot(0));
    assert_eq!(plan.placement[b.index()], Placement::Slot(1));
}

#[test]
fn unused_temporaries_take_no_memory() {
    let mut g = Graph::new();
    let x = g.input("x", &[16], DType::F32);
    let spare = g.temp("spare", &[1 << 20], DType::F32);
    let out = residual::add(&mut g, "out", x, x).unwrap();
    g.mark_output(out);
    let plan = Plan::new(&g, &DeviceLimits::webgpu_default()).unwrap();
    assert_eq!(plan.placement[spare.index()], Placement::Unused);
    assert_eq!(plan.peak_bytes(), 128);
}

#[test]
fn a_view_shares_its_roots_buffer_and_keeps_it_alive() {
    let n = 64;
    let mut g = Graph::new();
    let x = g.input("x", &[n], DType::F32);
    let y = g.input("y", &[8, n / 8], DType::F32);
    let a = residual::add(&mut g, "a", x, x).unwrap();
    let a_view = g.view(a, "a_2d", &[8, n / 8]).unwrap();
    // a itself is never used again, but its view is, after b: b must not reuse a's buffer.
    let b = residual::add(&mut g, "b", x, x).unwrap();
    let c = residual::add(&mut g, "c", a_view, y).unwrap();
    let b_view = g.view(b, "b_2d", &[8, n / 8]).unwrap();
    let out = residual::add(&mut g, "out", c, b_view).unwrap();
    g.mark_output(out);
    let plan = Plan::new(&g, &DeviceLimits::webgpu_default()).unwrap();
    assert_eq!(plan.placement[a_view.index()], plan.placement[a.index()]);
    assert_ne!(plan.placement[a.index()], plan.placement[b.index()]);
    assert!(plan.describe(&g).contains("view of a"));

    let err = g.view(a, "bad", &[7, 9]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad: shape mismatch: 'a' [64] cannot be viewed as [7, 9]"
    );
}

#[test]
fn a_long_lived_small_tensor_does_not_pin_a_large_buffer() {
    // big1 dies, then a small tensor that lives to the end is made, then big2: big2 must be
    // able to reuse big1's buffer, so the small one must not have taken it.
    let mut g = Graph::new();
    let x = g.input("x", &[1024], DType::F32);
    let s = g.input("s", &[8], DType::F32);
    let big1 = residual::add(&mut g, "big1", x, x).unwrap();
    let use1 = residual::add(&mut g, "use1", big1, x).unwrap();
    let small = residual::add(&mut g, "small", s, s).unwrap();
    let big2 = residual::add(&mut g, "big2", use1, x).unwrap();
    let out = residual::add(&mut g, "out", big2, x).unwrap();
    let end = residual::add(&mut g, "end", small, s).unwrap();
    g.mark_output(out);
    g.mark_output(end);
    let plan = Plan::new(&g, &DeviceLimits::webgpu_default()).unwrap();
    assert_eq!(plan.placement[big2.index()], plan.placement[big1.index()]);
    assert_ne!(plan.placement[small.index()], plan.placement[big1.index()]);
    assert_eq!(plan.slot_bytes.iter().sum::<u64>(), 4096 + 4096 + 32);
}

/// The tiny Llama's training-step settings (NF4 base, r 4 on every linear layer).
fn step_settings(batch: usize, accumulation: usize, seq: usize) -> SessionSettings {
    let mut modules: Vec<String> = webqlora::lora::ALL_LINEAR
        .iter()
        .map(|m| m.to_string())
        .collect();
    modules.sort();
    SessionSettings {
        batch,
        seq,
        base: BaseFormat::Nf4 { blocksize: 64 },
        lora: LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: modules,
            use_rslora: false,
            use_dora: false,
            base_model_name_or_path: String::new(),
        },
        checkpointing: true,
        accumulation,
        max_grad_norm: 1.0,
        adamw: AdamW::default(),
        seed: 1,
        scored_rows: None,
        packing: false,
    }
}

#[test]
fn a_training_steps_plan_is_what_compiling_it_allocates_and_smaller_shapes_are_proposed() {
    let gpu = common::gpu();
    let dir = common::golden("tiny-llama/base-f32");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config = ModelConfig::from_json(&text, "config.json").unwrap();
    let plan = |batch, accumulation, seq| {
        TrainSession::plan(gpu, &config, &step_settings(batch, accumulation, seq)).unwrap()
    };
    for (batch, accumulation, seq) in [(4, 1, 64), (1, 2, 48), (3, 1, 16)] {
        let planned = plan(batch, accumulation, seq);
        let session =
            TrainSession::new(gpu, &config, step_settings(batch, accumulation, seq)).unwrap();
        assert_eq!(planned.peak_bytes, session.compiled.peak_bytes());
        assert!(planned.params_bytes < planned.peak_bytes);
        assert!(planned.largest_buffer <= planned.peak_bytes);
    }
    assert!(plan(4, 1, 64).peak_bytes > plan(2, 2, 64).peak_bytes);

    // A budget just under batch 4's plan: batch 2 with 2 accumulation micro-batches (the same
    // examples a step) fits; no budget at all: refused in words, nothing proposed.
    let asked = FitShape {
        batch: 4,
        accumulation: 1,
        max_len: 64,
    };
    let fit = |budget| {
        will_it_fit(asked, budget, |s| {
            let p = TrainSession::plan(gpu, &config, &step_settings(s.batch, s.accumulation, 64))
                .map_err(|e| e.to_string());
            (s.max_len, p)
        })
    };
    let report = fit(plan(4, 1, 64).peak_bytes - 1);
    let proposal = report.proposal.as_ref().expect("a smaller batch fits");
    assert_eq!((proposal.shape.batch, proposal.shape.accumulation), (2, 2));
    assert_eq!(proposal.plan, Ok(plan(2, 2, 64)));
    assert!(report.refusal().unwrap().contains("more than the"));
    let report = fit(0);
    assert!(report.proposal.is_none());
    assert!(report.refusal().unwrap().contains("larger budget"));
    assert!(fit(u64::MAX).fits());
}
