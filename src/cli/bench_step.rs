//! `webqlora bench step`: one QLoRA training step of a real model (NF4 base, fresh LoRA on
//! all seven linear modules, AdamW with clipping), its planned peak GPU bytes and tokens/s.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng};
use webqlora::gpu::Gpu;
use webqlora::graph::{CompiledGraph, DType, Graph, TensorId};
use webqlora::lora::{LoraConfig, ALL_LINEAR};
use webqlora::model::gguf::GgufFile;
use webqlora::model::llama::{BaseFormat, Llama};
use webqlora::model::load::{initialize_missing, upload_model};
use webqlora::ops::adamw::AdamW;
use webqlora::ops::cross_entropy::{chunk_for, DEFAULT_CHUNK_BYTES};
use webqlora::ops::grad_norm;
use webqlora::train::model_source::default_model_path;

use super::GpuArgs;

#[derive(Args)]
pub struct StepArgs {
    /// A GGUF model (default: the SmolLM2-135M-Instruct that `cargo xtask fetch-model` caches).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq: usize,
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Keep every activation instead of recomputing each layer's forward before its backward.
    #[arg(long)]
    no_checkpointing: bool,
    /// Steps to run; the first also compiles pipelines, the last is reported.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: StepArgs) -> anyhow::Result<()> {
    let path = args.model.clone().unwrap_or_else(default_model_path);
    let file = GgufFile::open(&path)
        .map_err(|e| anyhow::anyhow!("{e} (cargo xtask fetch-model gets the default model)"))?;
    let config = file.config().clone();
    let (b, s) = (args.batch, args.seq);
    let tokens = b * s;
    let lora = LoraConfig {
        r: args.rank,
        alpha: 2.0 * args.rank as f64,
        dropout: 0.0,
        target_modules: ALL_LINEAR.iter().map(|m| m.to_string()).collect(),
        use_rslora: false,
        base_model_name_or_path: path.display().to_string(),
    };
    let base = BaseFormat::Nf4 { blocksize: 64 };

    let mut g = Graph::new();
    let model = Llama::declare(&mut g, &config, base, Some(&lora), s)?;
    let input = g.input("input_ids", &[tokens], DType::U32);
    let targets = g.input("targets", &[tokens], DType::U32);
    let step = model.train_step(
        &mut g,
        input,
        targets,
        s,
        chunk_for(tokens, config.vocab_size, DEFAULT_CHUNK_BYTES),
        !args.no_checkpointing,
    )?;
    let grads: Vec<TensorId> = step.grads.iter().map(|g| g.1).collect();
    let clip = grad_norm::clip(&mut g, "grad_scale", &grads, 1.0)?;
    let hyper = g.input("adamw.hyper", &[4], DType::F32);
    let opt = AdamW::default();
    for (name, grad) in &step.grads {
        let param = g.find(name).expect("declared");
        let shape = g.tensor(param).shape.clone();
        let m = g.param(&format!("adamw.m.{name}"), &shape, DType::F32);
        let v = g.param(&format!("adamw.v.{name}"), &shape, DType::F32);
        opt.step(
            &mut g,
            &format!("adamw {name}"),
            param,
            *grad,
            m,
            v,
            hyper,
            clip,
        )?;
    }
    g.mark_output(step.loss);
    g.mark_output(clip);
    let trainable: usize = step.grads.iter().map(|(_, t)| g.tensor(*t).numel()).sum();
    let nodes = g.nodes.len();

    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let compiled = CompiledGraph::new(&gpu, g)?;
    let load = Instant::now();
    let missing = upload_model(&gpu, &compiled, &config, &file, base, None)?;
    initialize_missing(&gpu, &compiled, &missing, 0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let load_s = load.elapsed().as_secs_f64();
    let ids: Vec<u32> = (0..tokens)
        .map(|_| rng.random_range(0..config.vocab_size as u32))
        .collect();
    let next: Vec<u32> = (0..tokens)
        .map(|i| {
            if (i + 1) % s == 0 {
                u32::MAX
            } else {
                ids[i + 1]
            }
        })
        .collect();
    compiled.write(&gpu, input, bytemuck::cast_slice(&ids))?;
    compiled.write(&gpu, targets, bytemuck::cast_slice(&next))?;

    println!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
    println!(
        "model: {} ({} layers, hidden {}), NF4 base, LoRA r {} on all 7 linears ({} trainable values)",
        path.display(),
        config.num_layers,
        config.hidden_size,
        args.rank,
        trainable
    );
    println!("batch {b} x {s} = {tokens} tokens; {nodes} nodes; weights loaded and quantized in {load_s:.1} s");
    println!(
        "planned peak GPU memory: {} bytes ({:.0} MiB)",
        compiled.peak_bytes(),
        compiled.peak_bytes() as f64 / (1 << 20) as f64
    );
    let mut slots = compiled.plan.slot_bytes.clone();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    println!(
        "  of which {} MiB own buffers (weights, adapter, optimizer state, inputs, outputs) and {} MiB in {} shared slots",
        compiled.plan.pinned_bytes >> 20,
        slots.iter().sum::<u64>() >> 20,
        slots.len()
    );
    if std::env::var("DEBUG_PLAN").is_ok() {
        println!(
            "largest slots (MiB): {:?}",
            slots.iter().take(16).map(|b| b >> 20).collect::<Vec<_>>()
        );
    }
    for i in 1..args.steps + 1 {
        compiled.write(
            &gpu,
            hyper,
            bytemuck::cast_slice(&opt.hyper(1e-3, i as u32)),
        )?;
        let start = Instant::now();
        compiled.run(&gpu);
        let loss = pollster::block_on(compiled.read_f32(&gpu, step.loss))?;
        let secs = start.elapsed().as_secs_f64();
        let norm = pollster::block_on(compiled.read_f32(&gpu, clip))?;
        println!(
            "step {i}: loss {:.4}, gradient norm {:.4} (scale {:.4}), {secs:.1} s, {:.1} tokens/s",
            loss[0],
            norm[1],
            norm[0],
            tokens as f64 / secs
        );
    }
    Ok(())
}
