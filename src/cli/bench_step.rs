//! `webqlora bench step`: one QLoRA training step of a real model (its default base or `--base`, fresh LoRA on
//! all seven linear modules, AdamW with clipping), its planned peak GPU bytes and tokens/s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use rand::{Rng, SeedableRng};
use webqlora::gpu::Gpu;
use webqlora::graph::CompiledGraph;
use webqlora::lora::{LoraConfig, ALL_LINEAR};
use webqlora::model::gguf::GgufFile;
use webqlora::model::load::{initialize_missing, upload_model};
use webqlora::model::random::RandomWeights;
use webqlora::model::{ModelConfig, WeightSource};
use webqlora::ops::adamw::AdamW;
use webqlora::train::model_source::default_model_path;
use webqlora::train::session::{MicroBatch, SessionSettings, TrainSession};

use super::common::{choose_base, median, BaseArg};
use super::GpuArgs;
use webqlora::model::transformer::{BaseChoice, ModelKind};

#[derive(Args)]
pub struct StepArgs {
    /// A GGUF model (default: the SmolLM2-135M-Instruct that `cargo xtask fetch-model` caches);
    /// with --random-weights also a config.json (or a folder with one), e.g.
    /// data/configs/smollm2-135m.json.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seeded random weights of the model's shape instead of its own (nothing is read but the
    /// config): for timing and sizing a step where the weights are not at hand.
    #[arg(long)]
    random_weights: bool,
    #[arg(long, default_value_t = 4, value_parser = super::common::at_least_one)]
    batch: usize,
    #[arg(long, default_value_t = 256, value_parser = super::common::at_least_one)]
    seq: usize,
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    rank: usize,
    /// DoRA adapters (the norms, the scale and the magnitudes' gradients each step).
    #[arg(long)]
    dora: bool,
    /// Keep every activation instead of recomputing each layer's forward before its backward.
    #[arg(long)]
    no_checkpointing: bool,
    /// Steps to run; the first also compiles pipelines. With three or more, the median of all
    /// but the first is printed last.
    #[arg(long, default_value_t = 2, value_parser = super::common::at_least_one)]
    steps: usize,
    /// Then run the step once more, one node at a time, and print the time by kernel.
    #[arg(long)]
    profile: bool,
    /// Print one JSON object (tokens_per_s, planned_peak_bytes, dispatches, kernels, ...)
    /// instead of the text.
    #[arg(long, conflicts_with = "profile")]
    json: bool,
    /// How the frozen base weights are held on the GPU (default: what `train` holds this model
    /// in on this device: a GGUF's own weights, random weights in NF4).
    #[arg(long, value_enum)]
    base: Option<BaseArg>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: StepArgs) -> anyhow::Result<()> {
    let path = args.model.clone().unwrap_or_else(default_model_path);
    let (config, weights) = open_model(&args, &path)?;
    let (b, s) = (args.batch, args.seq);
    let tokens = b * s;
    let lora = LoraConfig {
        r: args.rank,
        alpha: 2.0 * args.rank as f64,
        dropout: 0.0,
        target_modules: ALL_LINEAR.iter().map(|m| m.to_string()).collect(),
        use_rslora: false,
        use_dora: args.dora,
        base_model_name_or_path: path.display().to_string(),
    };
    if let Some(b) = args.base {
        b.format(&path)?;
    }

    // The step `webqlora train` runs: the same session, clipping at 1.0, torch's AdamW.
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let base = choose_base(
        args.base,
        &path,
        ModelKind::of(&config, weights.as_ref()),
        &gpu.kernels,
    )?;
    let settings = SessionSettings {
        batch: b,
        seq: s,
        base: base.format,
        lora,
        checkpointing: !args.no_checkpointing,
        accumulation: 1,
        max_grad_norm: 1.0,
        adamw: AdamW::default(),
        seed: 1,
        // Random text: every row carries a loss.
        scored_rows: None,
        packing: false,
    };
    let session = TrainSession::new(&gpu, &config, settings)?;
    let compiled = &session.compiled;
    let load = Instant::now();
    let missing = upload_model(
        &gpu,
        compiled,
        &session.model,
        weights.as_ref(),
        base.format,
        None,
    )?;
    initialize_missing(&gpu, compiled, &missing, 0)?;
    let load_s = load.elapsed().as_secs_f64();
    let micro = [random_batch(&config, b, s)];
    let json = args.json;
    // The text report; with --json only the JSON line at the end is printed.
    macro_rules! say {
        ($($arg:tt)*) => {
            if !json {
                println!($($arg)*);
            }
        };
    }
    if !json {
        print_header(&args, &path, &config, &gpu, &session, &base, load_s);
    }
    let mut warm = Vec::new();
    let mut all = Vec::new();
    let mut last = None;
    for i in 1..args.steps + 1 {
        let start = Instant::now();
        let stats = pollster::block_on(session.step(&gpu, &micro, 1e-3, i as u32))?;
        let secs = start.elapsed().as_secs_f64();
        say!(
            "step {i}: loss {:.4}, gradient norm {:.4}, {secs:.1} s, {:.1} tokens/s",
            stats.loss,
            stats.grad_norm,
            tokens as f64 / secs
        );
        all.push(secs);
        if i > 1 {
            warm.push(secs);
        }
        last = Some(stats);
    }
    // The step time reported: the median of the warm steps (all but the first, which also
    // compiles pipelines), or the only step there is.
    let step_secs = if warm.is_empty() {
        all[0]
    } else {
        median(&mut warm.clone())
    };
    if json {
        let stats = last.expect("at least one step");
        println!(
            "{}",
            serde_json::json!({
                "adapter": gpu.describe(),
                "model": path.display().to_string(),
                "random_weights": args.random_weights,
                "base": base.format.key(),
                "base_why": base.why,
                "batch": b,
                "seq": s,
                "tokens": tokens,
                "rank": args.rank,
                "steps": args.steps,
                "step_s": step_secs,
                "tokens_per_s": tokens as f64 / step_secs,
                "planned_peak_bytes": compiled.peak_bytes(),
                "dispatches": compiled.graph.dispatches(),
                "dispatches_by_kernel": serde_json::Value::Object(
                    dispatches_by_kernel(compiled)
                        .into_iter()
                        .map(|(k, n)| (k, n.into()))
                        .collect()
                ),
                "nodes": compiled.graph.nodes.len(),
                "kernels": gpu.kernels.to_string(),
                "loss": stats.loss,
                "grad_norm": stats.grad_norm,
            })
        );
    }
    if warm.len() > 1 {
        let secs = median(&mut warm);
        say!(
            "median of steps 2-{}: {secs:.2} s, {:.1} tokens/s",
            args.steps,
            tokens as f64 / secs
        );
    }
    if args.profile {
        print_profile(&gpu, compiled)?;
    }
    Ok(())
}

/// The model's config and weights: a GGUF's own, or seeded random weights of the shape a
/// config.json (or a GGUF) gives.
fn open_model(
    args: &StepArgs,
    path: &Path,
) -> anyhow::Result<(ModelConfig, Box<dyn WeightSource>)> {
    let is_json = path.extension().is_some_and(|e| e == "json") || path.is_dir();
    if args.random_weights && is_json {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let config = ModelConfig::from_json(&text, &file.display().to_string())?;
        let weights = Box::new(RandomWeights::new(1, &config));
        return Ok((config, weights));
    }
    let file = GgufFile::open(path)
        .map_err(|e| anyhow::anyhow!("{e} (cargo xtask fetch-model gets the default model)"))?;
    let config = file.config().clone();
    if args.random_weights {
        let weights = Box::new(RandomWeights::new(1, &config));
        Ok((config, weights))
    } else {
        Ok((config, Box::new(file)))
    }
}

/// `b` rows of `s` random token ids, each predicting the next (the last of a row nothing).
fn random_batch(config: &ModelConfig, b: usize, s: usize) -> MicroBatch {
    let tokens = b * s;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ids: Vec<u32> = (0..tokens)
        .map(|_| rng.random_range(0..config.vocab_size as u32))
        .collect();
    let targets: Vec<u32> = (0..tokens)
        .map(|i| {
            if (i + 1) % s == 0 {
                u32::MAX
            } else {
                ids[i + 1]
            }
        })
        .collect();
    MicroBatch {
        ids,
        targets,
        packing: None,
    }
}

/// Dispatches a step by kernel, most first.
fn dispatches_by_kernel(compiled: &CompiledGraph) -> Vec<(String, usize)> {
    let mut by_kernel: Vec<(String, usize)> = Vec::new();
    for node in compiled.graph.nodes.iter().filter(|n| n.copy.is_none()) {
        let label = node.kernel_label();
        match by_kernel.iter_mut().find(|(k, _)| *k == label) {
            Some((_, n)) => *n += 1,
            None => by_kernel.push((label, 1)),
        }
    }
    by_kernel.sort_by(|(ka, na), (kb, nb)| nb.cmp(na).then(ka.cmp(kb)));
    by_kernel
}

/// The text report's lines before the steps: the device, the model, the base, the graph and
/// its planned memory.
fn print_header(
    args: &StepArgs,
    path: &Path,
    config: &ModelConfig,
    gpu: &Gpu,
    session: &TrainSession,
    base: &BaseChoice,
    load_s: f64,
) {
    let compiled = &session.compiled;
    let (b, s) = (args.batch, args.seq);
    let trainable: usize = session
        .trainable()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    println!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
    println!(
        "model: {}{} ({} layers, hidden {}), LoRA r {} on all 7 linears ({} trainable values)",
        path.display(),
        if args.random_weights {
            " with random weights"
        } else {
            ""
        },
        config.num_layers,
        config.hidden_size,
        args.rank,
        trainable
    );
    println!("base: {}", base.describe());
    println!(
        "batch {b} x {s} = {} tokens; {} nodes, {} dispatches a step; weights loaded in {load_s:.1} s",
        b * s,
        compiled.graph.nodes.len(),
        compiled.graph.dispatches()
    );
    println!("kernels: {}", gpu.kernels);
    println!(
        "planned peak GPU memory: {} bytes ({:.0} MiB)",
        compiled.peak_bytes(),
        compiled.peak_bytes() as f64 / (1 << 20) as f64
    );
    let mut slots = compiled.plan.slot_bytes.clone();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    println!(
        "  of which {} MiB own buffers (weights, adapter, optimizer state, inputs, outputs), {} MiB in {} shared slots and {} MiB in {} operand textures",
        compiled.plan.pinned_bytes >> 20,
        slots.iter().sum::<u64>() >> 20,
        slots.len(),
        compiled.plan.texture_bytes >> 20,
        compiled.graph.textures.len()
    );
    if std::env::var("DEBUG_PLAN").is_ok() {
        println!(
            "largest slots (MiB): {:?}",
            slots.iter().take(16).map(|b| b >> 20).collect::<Vec<_>>()
        );
        for t in &compiled.graph.textures {
            println!(
                "texture {}: {:.1} MiB",
                t.name(),
                t.bytes() as f64 / (1 << 20) as f64
            );
        }
    }
}

/// Wall time of one more run of the whole graph, one node at a time (submitted alone and
/// waited for: timestamp queries on lavapipe do not time passes that follow each other in one
/// submission), summed by kernel, largest first. Pack nodes that run as buffer-to-texture
/// copies count apart from those that run their kernel.
fn print_profile(gpu: &Gpu, compiled: &CompiledGraph) -> anyhow::Result<()> {
    let mut by_kernel: Vec<(String, usize, f64)> = Vec::new();
    for (i, node) in compiled.graph.nodes.iter().enumerate() {
        let start = Instant::now();
        compiled.run_nodes(gpu, i..i + 1);
        gpu.poll_wait();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let name = match node.copy {
            Some(_) => format!("{} (copy)", node.kernel.name),
            _ => node.kernel_label(),
        };
        match by_kernel.iter_mut().find(|(k, _, _)| *k == name) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += ms;
            }
            None => by_kernel.push((name, 1, ms)),
        }
    }
    by_kernel.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total: f64 = by_kernel.iter().map(|k| k.2).sum();
    println!("| kernel | nodes | ms | share |\n|---|---:|---:|---:|");
    for (kernel, count, ms) in by_kernel {
        println!(
            "| {kernel} | {count} | {ms:.0} | {:.1}% |",
            100.0 * ms / total
        );
    }
    println!("| all | {} | {total:.0} | |", compiled.graph.nodes.len());
    Ok(())
}
