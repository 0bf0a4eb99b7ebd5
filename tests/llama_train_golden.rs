//! One training step of the Llama graph against PyTorch + PEFT for the golden tiny Llama with
//! its adapter on the f32 base: the loss (1e-4 relative) and the gradient of every adapter
//! tensor (1e-3 relative each), as golden/README.md allows.

mod common;

use common::{golden, shifted_targets, Golden, Tol};
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::lora::peft::Adapter;
use webqlora::model::load::{initialize_missing, upload_model};
use webqlora::model::safetensors_files::SafetensorsFiles;
use webqlora::model::transformer::{BaseFormat, Transformer};
use webqlora::model::transformer_train::{compact_targets, ScoredRows};
use webqlora::model::ModelConfig;
use webqlora::ops::cross_entropy::IGNORE;

#[test]
fn lora_loss_and_gradients_match_peft() {
    lora_step_matches_peft(false, None);
}

/// The same with each layer's forward recomputed before its backward.
#[test]
fn with_checkpointing_too() {
    lora_step_matches_peft(true, None);
}

/// The same with the lm-head on the scored rows only (22 of the 32 tokens carry a loss; two
/// spare slots).
#[test]
fn with_the_lm_head_on_scored_rows_only() {
    lora_step_matches_peft(false, Some(24));
}

#[test]
fn more_targets_than_scored_rows_is_an_error() {
    use webqlora::model::transformer_train::compact_targets;
    let targets = [5, IGNORE, 7, 9, IGNORE];
    let compact = compact_targets(&targets, 4).unwrap();
    assert_eq!(compact.positions, [0, 2, 3, 0]);
    assert_eq!(compact.slots, [0, u32::MAX, 1, 2, u32::MAX]);
    assert_eq!(compact.targets, [5, 7, 9, IGNORE]);
    assert_eq!(
        compact_targets(&targets, 2).unwrap_err(),
        "3 targets carry a loss, more than the 2 scored rows the step was built for"
    );
}

fn lora_step_matches_peft(checkpointing: bool, scored: Option<usize>) {
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let (ids, labels, (batch, seq)) = expected.ids_labels();
    let targets = shifted_targets(&labels, seq);

    let dir = golden("tiny-llama/base-f32");
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let adapter = Adapter::load(&golden("tiny-llama/adapter")).unwrap();
    let mut g = Graph::new();
    let model =
        Transformer::declare(&mut g, &config, BaseFormat::F32, Some(&adapter.config), seq).unwrap();
    let input = g.input("input_ids", &[batch * seq], DType::U32);
    let rows = scored.map(|capacity| ScoredRows::declare(&mut g, batch * seq, capacity));
    let target_t = g.input("targets", &[scored.unwrap_or(batch * seq)], DType::U32);
    let step = model
        .train_step(
            &mut g,
            input,
            target_t,
            rows,
            seq,
            config.vocab_size,
            checkpointing,
        )
        .unwrap();
    g.mark_output(step.loss);
    for &(_, t) in &step.grads {
        g.mark_output(t);
    }
    assert_eq!(step.grads.len(), 28);

    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(
        gpu,
        &compiled,
        &model,
        &files,
        BaseFormat::F32,
        Some(&adapter),
    )
    .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    let targets = match (rows, scored) {
        (Some(rows), Some(capacity)) => {
            let compact = compact_targets(&targets, capacity).unwrap();
            assert_eq!(compact.targets.iter().filter(|&&t| t != IGNORE).count(), 22);
            compiled
                .write(
                    gpu,
                    rows.positions,
                    bytemuck::cast_slice(&compact.positions),
                )
                .unwrap();
            compiled
                .write(gpu, rows.slots, bytemuck::cast_slice(&compact.slots))
                .unwrap();
            compact.targets
        }
        _ => targets,
    };
    compiled
        .write(gpu, target_t, bytemuck::cast_slice(&targets))
        .unwrap();
    compiled.run(gpu);

    let loss = pollster::block_on(compiled.read_f32(gpu, step.loss)).unwrap();
    let want = expected.f32("loss_lora")[0];
    assert!(
        ((loss[0] - want) / want).abs() < 1e-4,
        "loss {} vs {want}",
        loss[0]
    );
    for (name, t) in &step.grads {
        let got = pollster::block_on(compiled.read_f32(gpu, *t)).unwrap();
        Tol::rel(1e-3).check(name, &got, &expected.f32(&format!("grad_lora.{name}")));
    }
}

/// Several steps with AdamW and clipping in one graph, run repeatedly, from a fresh adapter
/// initialised as PEFT does: the loss on a fixed batch falls and stays finite.
#[test]
fn repeated_steps_lower_the_loss() {
    use webqlora::ops::adamw::AdamW;
    use webqlora::ops::grad_norm;
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let (ids, labels, (batch, seq)) = expected.ids_labels();
    let dir = golden("tiny-llama/base-bnb-nf4");
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let lora = Adapter::load(&golden("tiny-llama/adapter")).unwrap().config;
    let base = BaseFormat::Nf4 { blocksize: 64 };
    let mut g = Graph::new();
    let model = Transformer::declare(&mut g, &config, base, Some(&lora), seq).unwrap();
    let input = g.input("input_ids", &[batch * seq], DType::U32);
    let target_t = g.input("targets", &[batch * seq], DType::U32);
    let step = model
        .train_step(&mut g, input, target_t, None, seq, 100, true)
        .unwrap();
    let grads: Vec<_> = step.grads.iter().map(|g| g.1).collect();
    let clip = grad_norm::clip(&mut g, "grad_scale", &grads, 1.0).unwrap();
    let hyper = g.input("hyper", &[4], DType::F32);
    let opt = AdamW::default();
    for (name, grad) in &step.grads {
        let p = g.find(name).unwrap();
        let shape = g.tensor(p).shape.clone();
        let m = g.param(&format!("m.{name}"), &shape, DType::F32);
        let v = g.param(&format!("v.{name}"), &shape, DType::F32);
        opt.step(&mut g, name, p, *grad, m, v, hyper, clip).unwrap();
    }
    g.mark_output(step.loss);
    g.mark_output(clip);
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    let missing = upload_model(gpu, &compiled, &model, &files, base, None).unwrap();
    assert_eq!(
        missing.len(),
        28 * 3 + 1,
        "adapter, two moments each, the norm's scratch"
    );
    initialize_missing(gpu, &compiled, &missing, 3).unwrap();
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    compiled
        .write(
            gpu,
            target_t,
            bytemuck::cast_slice(&shifted_targets(&labels, seq)),
        )
        .unwrap();
    let mut losses = Vec::new();
    for i in 1..=5 {
        compiled
            .write(gpu, hyper, bytemuck::cast_slice(&opt.hyper(1e-2, i)))
            .unwrap();
        compiled.run(gpu);
        let loss = pollster::block_on(compiled.read_f32(gpu, step.loss)).unwrap()[0];
        let norm = pollster::block_on(compiled.read_f32(gpu, clip)).unwrap();
        assert!(norm[1].is_finite(), "step {i}: gradient norm {}", norm[1]);
        losses.push(loss);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[4] < losses[0], "{losses:?}");
}
