//! Sequence packing: a packed batch (several examples a row, each attending only within itself,
//! RoPE positions from 0 in each, no target across a boundary) gives the loss and every LoRA
//! gradient of the same examples padded one a row.

mod common;

use common::{for_each_seed, golden, Tol};
use rand::Rng;
use webqlora::data::pack::{pack, packed_mask};
use webqlora::data::{Batch, Example, NO_LOSS};
use webqlora::graph::{CompiledGraph, DType, Graph, TensorId};
use webqlora::lora::peft::Adapter;
use webqlora::model::load::upload_model;
use webqlora::model::safetensors_files::SafetensorsFiles;
use webqlora::model::transformer::{BaseFormat, Transformer};
use webqlora::model::ModelConfig;
use webqlora::ops::attention::TokenMask;

/// A graph with the kernels a case runs.
type MakeGraph = fn() -> Graph;

/// Loss and gradients (by name) of one step over `ids`/`targets` [rows·seq], packed when
/// `packing` gives the row's mask and positions.
fn step(
    graph: MakeGraph,
    base: BaseFormat,
    seq: usize,
    ids: &[u32],
    targets: &[u32],
    packing: Option<(&[TokenMask], &[u32])>,
    checkpointing: bool,
) -> (f32, Vec<(String, Vec<f32>)>) {
    let dir = golden("tiny-llama/base-f32");
    let config = ModelConfig::load(&dir).unwrap();
    let files = SafetensorsFiles::open_dir(&dir).unwrap();
    let adapter = Adapter::load(&golden("tiny-llama/adapter")).unwrap();
    let mut g = graph();
    let model = Transformer::declare(&mut g, &config, base, Some(&adapter.config), seq).unwrap();
    let tokens = ids.len();
    let input = g.input("input_ids", &[tokens], DType::U32);
    let target = g.input("targets", &[tokens], DType::U32);
    let mut packed_inputs: Option<(TensorId, TensorId)> = None;
    let stepped = match packing {
        Some(_) => {
            let mask = g.input("mask", &[tokens, 4], DType::F32);
            let positions = g.input("positions", &[tokens], DType::U32);
            packed_inputs = Some((mask, positions));
            let attend = model.packed_attend(&mut g, mask, positions).unwrap();
            model.train_step_attending(&mut g, input, target, None, attend, 100, checkpointing)
        }
        None => model.train_step(&mut g, input, target, None, seq, 100, checkpointing),
    }
    .unwrap();
    g.mark_output(stepped.loss);
    for (_, grad) in &stepped.grads {
        g.mark_output(*grad);
    }
    let gpu = common::gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, common::POISON);
    upload_model(gpu, &compiled, &model, &files, base, Some(&adapter)).unwrap();
    compiled
        .write(gpu, input, bytemuck::cast_slice(ids))
        .unwrap();
    compiled
        .write(gpu, target, bytemuck::cast_slice(targets))
        .unwrap();
    if let (Some((mask, positions)), Some((m, p))) = (packed_inputs, packing) {
        let values = TokenMask::values(m);
        compiled
            .write(gpu, mask, bytemuck::cast_slice(&values))
            .unwrap();
        compiled
            .write(gpu, positions, bytemuck::cast_slice(p))
            .unwrap();
    }
    compiled.run(gpu);
    let loss = pollster::block_on(compiled.read_f32(gpu, stepped.loss)).unwrap()[0];
    let grads = stepped
        .grads
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                pollster::block_on(compiled.read_f32(gpu, *t)).unwrap(),
            )
        })
        .collect();
    (loss, grads)
}

#[test]
fn a_packed_batch_has_the_loss_and_gradients_of_the_same_examples_padded() {
    for_each_seed("packing", &[], |mut rng| {
        let lengths = [7usize, 12, 3, 9, 5, 11, 2];
        let examples: Vec<Example> = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let ids: Vec<u32> = (0..len).map(|_| rng.random_range(1..256)).collect();
                // A two-token prompt without loss, as prompt-masked data has.
                let labels = ids
                    .iter()
                    .enumerate()
                    .map(|(k, &id)| if k < 2 { NO_LOSS } else { id as i64 })
                    .collect();
                Example {
                    ids,
                    labels,
                    line: i + 1,
                }
            })
            .collect();
        // Padded: one example a row.
        let seq = 12;
        let rows: Vec<&Example> = examples.iter().collect();
        let padded = Batch::pad(&rows, rows.len(), seq, 0);
        // Packed: rows of 24, two rows (49 tokens need three) plus a padding row.
        let packed_seq = 24;
        let p = pack(&examples, packed_seq);
        assert!(p.rows.len() < examples.len());
        let batch = p.rows.len() + 1;
        let packed_rows: Vec<&Example> = p.rows.iter().collect();
        let packed = Batch::pad(&packed_rows, batch, packed_seq, 0);
        let shape: Vec<(&[usize], usize)> = p
            .starts
            .iter()
            .zip(&p.rows)
            .map(|(s, r)| (&s[..], r.ids.len()))
            .collect();
        let (mask, positions) = packed_mask(&shape, batch, packed_seq);
        assert_eq!(padded.counted(), packed.counted());
        // The software kernels (textures) and the portable ones (hardware GPUs), NF4 and f32 bases,
        // with and without gradient checkpointing.
        let cases: [(MakeGraph, BaseFormat, bool); 3] = [
            (common::texture_graph, BaseFormat::F32, true),
            (
                common::portable_graph,
                BaseFormat::Nf4 { blocksize: 64 },
                true,
            ),
            (common::portable_graph, BaseFormat::F32, false),
        ];
        for (graph, base, checkpointing) in cases {
            let (want_loss, want) = step(
                graph,
                base,
                seq,
                &padded.input_ids,
                &padded.targets(),
                None,
                checkpointing,
            );
            let (loss, got) = step(
                graph,
                base,
                packed_seq,
                &packed.input_ids,
                &packed.targets(),
                Some((&mask, &positions)),
                checkpointing,
            );
            let e = ((loss - want_loss) / want_loss).abs();
            assert!(e < 1e-5, "{base:?}: loss {loss} packed, {want_loss} padded");
            assert_eq!(got.len(), want.len());
            assert_eq!(got.len(), 28);
            for ((name, g), (other, w)) in got.iter().zip(&want) {
                assert_eq!(name, other);
                Tol::F32.check(format!("{base:?}: {name}"), g, w);
            }
        }
    });
}
