//! `webqlora train`: QLoRA fine-tuning from a JSONL dataset to a PEFT adapter, with
//! progress, metrics.jsonl, a loss plot, periodic and final saves, `--resume` and a clean
//! stop on Ctrl-C.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use webqlora::data::batch::scored_capacity;
use webqlora::data::pack::pack;
use webqlora::data::records::read_jsonl;
use webqlora::data::{encode_records, EncodeOptions, Example};
use webqlora::gpu::Gpu;
use webqlora::lora::peft::Adapter;
use webqlora::lora::{LoraConfig, ALL_LINEAR};
use webqlora::ops::adamw::AdamW;
use webqlora::train::checkpoint;
use webqlora::train::model_source::ModelSource;
use webqlora::train::schedule::{Schedule, ScheduleKind};
use webqlora::train::session::SessionSettings;
use webqlora::train::trainer::{padded_length, split_validation, Trainer};

use super::common::{
    at_least_one, base_format, load_bar, non_negative, positive, BaseArg, McqScoreArg, ModelArg,
};
use super::plot;
use super::GpuArgs;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Training data, JSONL: text, prompt/completion, chat messages, multiple choice or
    /// input_ids.
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data (JSONL); else `--valid-split` of the training data.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Fraction of the training data held out for validation when there is no `--valid`.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub valid_split: f64,
    /// Where the adapter, checkpoint, metrics.jsonl and loss.svg go.
    #[arg(long, default_value = "webqlora-out")]
    pub output: PathBuf,
    /// Start from this PEFT adapter (its rank, alpha and targets) instead of a fresh one.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Continue from <output>/checkpoint (adapter, optimizer state, step).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub rank: usize,
    /// LoRA alpha (default: 2 × rank).
    #[arg(long, value_parser = positive, allow_hyphen_values = true)]
    pub alpha: Option<f64>,
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub lora_dropout: f64,
    /// Scale by alpha / sqrt(rank) (rsLoRA).
    #[arg(long)]
    pub rslora: bool,
    /// DoRA (PEFT's use_dora): a trained magnitude per output over the adapted weight's row
    /// norm.
    #[arg(long)]
    pub dora: bool,
    /// Comma-separated module names (default: all seven linear modules).
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Option<Vec<String>>,
    /// Peak learning rate (finite, 0 or more).
    #[arg(long, default_value_t = 2e-4, value_parser = non_negative, allow_hyphen_values = true)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0, value_parser = non_negative, allow_hyphen_values = true)]
    pub weight_decay: f64,
    /// constant, linear or cosine (after warmup).
    #[arg(long, default_value = "linear")]
    pub schedule: ScheduleKind,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub accumulation: usize,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub max_grad_norm: f32,
    /// Optimizer steps (default: one epoch, or `--epochs`).
    #[arg(long, value_parser = at_least_one)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 1.0, value_parser = positive, allow_hyphen_values = true)]
    pub epochs: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The longest example allowed; batches are padded to the longest example (rounded up
    /// to 16), at most this.
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    pub max_seq_len: usize,
    /// Keep every activation instead of recomputing each layer's forward in the backward.
    #[arg(long)]
    pub no_checkpointing: bool,
    /// Pack several examples into each row of --max-seq-len tokens (best fit), each attending
    /// only within itself: no compute spent on padding. Steps count rows, not examples.
    #[arg(long)]
    pub packing: bool,
    /// Take the loss on prompts too.
    #[arg(long)]
    pub train_on_inputs: bool,
    /// What a multiple-choice example learns: the answer's text or its letter.
    #[arg(long, value_enum, default_value = "text")]
    pub mcq_score: McqScoreArg,
    #[arg(long, value_enum, default_value = "nf4")]
    pub base: BaseArg,
    /// Save the adapter and a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Validation loss every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// No progress bar (one line per step instead).
    #[arg(long)]
    pub quiet: bool,
    /// Also write the adapter in this format at every save: `gguf-lora` is llama.cpp's
    /// (OUTPUT/adapter.gguf, f32; `webqlora export` writes other precisions).
    #[arg(long, value_enum)]
    pub export: Vec<super::export::ExportFormat>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

/// Where `--export gguf-lora` writes in the output folder.
pub const GGUF_LORA_FILE: &str = "adapter.gguf";

/// The datasets as examples, and the padded sequence length.
struct Datasets {
    train: Vec<Example>,
    valid: Vec<Example>,
    seq: usize,
}

fn load_data(args: &TrainArgs, source: &ModelSource) -> anyhow::Result<Datasets> {
    let opts = EncodeOptions {
        train_on_inputs: args.train_on_inputs,
        max_len: args.max_seq_len,
        mcq_by_letter: args.mcq_score == McqScoreArg::Letter,
    };
    let vocab = source.config.vocab_size;
    let encode = |path: &Path| -> anyhow::Result<Vec<Example>> {
        let records = read_jsonl(path)?;
        let needs_tokenizer = records
            .iter()
            .any(|(_, r)| !matches!(r, webqlora::data::Record::Tokens { .. }));
        let tok = if needs_tokenizer {
            Some(source.tokenizer()?)
        } else {
            None
        };
        Ok(encode_records(
            &records,
            tok,
            vocab,
            &opts,
            &path.display().to_string(),
        )?)
    };
    let train = encode(&args.data)?;
    let (train, valid) = match &args.valid {
        Some(path) => (train, encode(path)?),
        None => split_validation(train, args.valid_split, args.seed)
            .map_err(|e| anyhow::anyhow!("--valid-split: {e}"))?,
    };
    let seq = padded_length(train.iter().chain(&valid), args.max_seq_len);
    Ok(Datasets { train, valid, seq })
}

fn lora_config(
    args: &TrainArgs,
    model: &Path,
    from: Option<&Adapter>,
) -> anyhow::Result<LoraConfig> {
    if !(0.0..1.0).contains(&args.lora_dropout) {
        bail!("--lora-dropout {} must be in [0, 1)", args.lora_dropout);
    }
    if let Some(a) = from {
        if args.dora && !a.config.use_dora {
            bail!("--dora: the adapter to train on is a LoRA one (training on keeps its settings)");
        }
        // Training on from a PEFT adapter keeps its settings, dropout included.
        return Ok(a.config.clone());
    }
    let targets = args
        .target_modules
        .clone()
        .unwrap_or_else(|| ALL_LINEAR.iter().map(|m| m.to_string()).collect());
    if let Some(bad) = targets.iter().find(|t| !ALL_LINEAR.contains(&t.as_str())) {
        bail!(
            "--target-modules: '{bad}' is not one of {}",
            ALL_LINEAR.join(", ")
        );
    }
    let mut targets = targets;
    targets.sort();
    targets.dedup();
    Ok(LoraConfig {
        r: args.rank,
        alpha: args.alpha.unwrap_or(2.0 * args.rank as f64),
        dropout: args.lora_dropout,
        target_modules: targets,
        use_rslora: args.rslora,
        use_dora: args.dora,
        base_model_name_or_path: model.display().to_string(),
    })
}

struct Outputs {
    metrics: std::fs::File,
}

impl Outputs {
    fn log(&mut self, line: serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.metrics, "{line}").context("metrics.jsonl")?;
        Ok(())
    }
}

/// The formats to write besides PEFT's at each save, and the base model they are for.
struct Exports<'a> {
    formats: &'a [super::export::ExportFormat],
    config: &'a webqlora::model::ModelConfig,
}

/// Save the adapter and the checkpoint, unless training has diverged: a NaN or infinity in
/// the adapter or its moments is an error and nothing is written, so the last good save
/// stays.
fn save_all(trainer: &Trainer, gpu: &Gpu, out: &Path, exports: &Exports) -> anyhow::Result<()> {
    let (adapter, moments, state) = pollster::block_on(trainer.checkpoint(gpu))?;
    checkpoint::save(out, &adapter, &moments, &state)?;
    for format in exports.formats {
        match format {
            super::export::ExportFormat::GgufLora => {
                super::export::write_gguf_lora(
                    &adapter,
                    exports.config,
                    webqlora::lora::gguf_lora::GgufLoraDtype::F32,
                    out,
                    &out.join(GGUF_LORA_FILE),
                )?;
            }
        }
    }
    Ok(())
}

/// What the user has on disk when training stops with an error, `last_saved` being the step
/// of the last save.
fn kept(out: &Path, last_saved: Option<usize>) -> String {
    match last_saved {
        Some(s) => format!(
            "the adapter and checkpoint of step {s} in {} are kept",
            out.display()
        ),
        None => "nothing was saved".into(),
    }
}

/// On `--resume` from step `done`: drop the lines metrics.jsonl holds for later steps (logged
/// after the checkpoint by the interrupted run), so the resumed run does not repeat them.
fn truncate_metrics(path: &Path, done: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= done)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    webqlora::io::write_atomic(path, kept.as_bytes()).with_context(|| path.display().to_string())
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if !(args.max_grad_norm.is_finite() && args.max_grad_norm >= 0.0) {
        bail!(
            "--max-grad-norm {} must be 0 (off) or more",
            args.max_grad_norm
        );
    }
    let model_path = args.model.path();
    let base = base_format(args.base, &model_path)?;
    let source = ModelSource::open(&model_path)?;
    let data = load_data(&args, &source)?;
    let resumed = if args.resume {
        let Some(dir) = checkpoint::find(&args.output) else {
            bail!(
                "--resume: no checkpoint at {}",
                args.output.join(checkpoint::DIR).display()
            );
        };
        Some(checkpoint::load(&dir)?)
    } else {
        None
    };
    let start_adapter = match (&resumed, &args.adapter) {
        (Some((a, _, _)), _) => Some(a.clone()),
        (None, Some(dir)) => Some(Adapter::load(dir)?),
        (None, None) => None,
    };
    let lora = lora_config(&args, &model_path, start_adapter.as_ref())?;
    if lora.use_dora && !args.export.is_empty() {
        // Refused before training, not after.
        bail!(
            "--export gguf-lora: a DoRA adapter has no GGUF LoRA form (llama.cpp's adapters hold \
             no magnitudes); merge it instead (webqlora merge --format gguf)"
        );
    }
    let batch = args.batch;
    let per_step = batch * args.accumulation;
    let examples = data.train.len();
    // Packing: rows of --max-seq-len holding several examples each.
    let (train, starts, seq) = match args.packing {
        true => {
            let packed = pack(&data.train, args.max_seq_len);
            (packed.rows, Some(packed.starts), args.max_seq_len)
        }
        false => (data.train, None, data.seq),
    };
    let total_steps = args.steps.unwrap_or_else(|| {
        ((train.len() as f64 * args.epochs) / per_step as f64)
            .ceil()
            .max(1.0) as usize
    });
    let schedule = Schedule {
        kind: args.schedule,
        peak: args.lr,
        warmup: args.warmup_steps,
        total: total_steps,
    };

    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let settings = SessionSettings {
        batch,
        seq,
        base,
        lora: lora.clone(),
        checkpointing: !args.no_checkpointing,
        accumulation: args.accumulation,
        max_grad_norm: args.max_grad_norm,
        adamw: AdamW {
            weight_decay: args.weight_decay as f32,
            ..AdamW::default()
        },
        seed: args.seed,
        scored_rows: scored_capacity(&train, batch, seq),
        packing: args.packing,
    };
    let loading = Instant::now();
    let (bar, mut progress) = load_bar(args.quiet);
    let (rows, valid_count) = (train.len(), data.valid.len());
    let mut trainer = Trainer::new(
        &gpu,
        &source.config,
        source.weights.as_ref(),
        settings,
        schedule,
        train,
        starts,
        data.valid,
        source.pad_id(),
        start_adapter.as_ref(),
        &mut progress,
    )?;
    bar.finish_and_clear();
    if let Some((_, moments, state)) = &resumed {
        trainer
            .resume(&gpu, moments, state)
            .map_err(|e| anyhow::anyhow!("--resume: {e}"))?;
    }
    let first_step = trainer.step + 1;
    let load_s = loading.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let metrics_path = args.output.join("metrics.jsonl");
    if args.resume {
        truncate_metrics(&metrics_path, first_step - 1)?;
    }
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.resume)
        .truncate(!args.resume)
        .open(&metrics_path)
        .with_context(|| metrics_path.display().to_string())?;
    let mut out = Outputs { metrics };

    let session = &trainer.session;
    let trainable: usize = session
        .trainable()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    println!("device: {} ({:?})", gpu.info.name, gpu.info.backend);
    println!(
        "model: {} ({} layers, hidden {}, {} base)",
        model_path.display(),
        source.config.num_layers,
        source.config.hidden_size,
        args.base.name()
    );
    let packed = match args.packing {
        true => format!(" packed into {rows} rows"),
        false => String::new(),
    };
    println!(
        "data: {examples} training examples{packed}, {valid_count} validation; batches {batch} x {seq} tokens, {} per step; {total_steps} steps",
        args.accumulation
    );
    println!(
        "LoRA r {} alpha {} on {} ({} trainable values); planned peak GPU memory {:.1} MiB; loaded in {:.1} s",
        lora.r,
        lora.alpha,
        lora.target_modules.join(","),
        trainable,
        session.compiled.peak_bytes() as f64 / (1 << 20) as f64,
        load_s
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .context("cannot install the Ctrl-C handler")?;
    }

    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total_steps as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
        )
        .expect("a valid template"),
    );
    bar.set_position(first_step as u64 - 1);
    let started = Instant::now();
    let (mut tokens_total, mut losses, mut val_losses) = (0usize, Vec::new(), Vec::new());
    let mut best_val = f64::INFINITY;
    let mut last_step = first_step - 1;
    // The step whose adapter and checkpoint are on disk.
    let mut last_saved = resumed.as_ref().map(|_| first_step - 1);
    let save = |trainer: &Trainer, last_saved: &mut Option<usize>| -> anyhow::Result<()> {
        let exports = Exports {
            formats: &args.export,
            config: &source.config,
        };
        save_all(trainer, &gpu, &args.output, &exports)
            .map_err(|e| anyhow::anyhow!("{e:#}; {}", kept(&args.output, *last_saved)))?;
        *last_saved = Some(trainer.step);
        Ok(())
    };
    let validate = |trainer: &Trainer,
                    out: &mut Outputs,
                    best: &mut f64,
                    vals: &mut Vec<(usize, f64)>|
     -> anyhow::Result<Option<f64>> {
        let Some(score) = pollster::block_on(trainer.validate(&gpu))? else {
            return Ok(None);
        };
        let step = trainer.step;
        out.log(
            json!({"step": step, "val_loss": score.loss, "val_perplexity": score.perplexity,
                       "val_tokens": score.tokens}),
        )?;
        *best = best.min(score.loss);
        vals.push((step, score.loss));
        Ok(Some(score.loss))
    };

    while !trainer.done() {
        let t0 = Instant::now();
        let report = pollster::block_on(trainer.step(&gpu))
            .map_err(|e| anyhow::anyhow!("{e}; {}", kept(&args.output, last_saved)))?;
        let step = report.step;
        let secs = t0.elapsed().as_secs_f64();
        tokens_total += report.tokens;
        losses.push((step, report.loss as f64));
        last_step = step;
        let mut line = report.json(secs);
        line["elapsed_s"] = json!(started.elapsed().as_secs_f64());
        out.log(line)?;
        let msg = format!(
            "loss {:.4}  lr {:.2e}  {:.1} tok/s",
            report.loss,
            report.lr,
            report.tokens as f64 / secs
        );
        if args.quiet {
            println!("step {step}/{total_steps}: {msg}");
        }
        bar.set_message(msg);
        bar.inc(1);
        if args.eval_every > 0 && step % args.eval_every == 0 && step < total_steps {
            if let Some(v) = validate(&trainer, &mut out, &mut best_val, &mut val_losses)? {
                bar.println(format!("step {step}: validation loss {v:.4}"));
            }
        }
        if args.save_every > 0 && step % args.save_every == 0 {
            save(&trainer, &mut last_saved)?;
        }
        if stop.load(Ordering::SeqCst) {
            bar.abandon();
            if last_saved != Some(step) {
                save(&trainer, &mut last_saved)?;
            }
            println!(
                "stopped at step {step}: adapter and checkpoint saved in {} (continue with --resume)",
                args.output.display()
            );
            return Ok(());
        }
    }
    bar.finish();
    let final_val = validate(&trainer, &mut out, &mut best_val, &mut val_losses)?;
    if last_saved != Some(last_step) {
        save(&trainer, &mut last_saved)?;
    }
    let plot_path = args.output.join("loss.svg");
    plot::loss_svg(&plot_path, &losses, &val_losses)?;
    let elapsed = started.elapsed().as_secs_f64();
    let summary = json!({
        "steps": last_step, "time_s": elapsed, "tokens": tokens_total,
        "tokens_per_s": tokens_total as f64 / elapsed.max(1e-9),
        "planned_peak_gpu_bytes": trainer.session.compiled.peak_bytes(),
        "final_loss": losses.last().map(|l| l.1),
        "final_val_loss": final_val,
        "best_val_loss": best_val.is_finite().then_some(best_val),
        "adapter": args.output.display().to_string(),
        "device": gpu.info.name,
    });
    webqlora::io::write_atomic(
        &args.output.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "done: {} steps in {:.1} s, {} tokens ({:.1} tokens/s); planned peak GPU memory {:.1} MiB",
        last_step.saturating_sub(first_step - 1),
        elapsed,
        tokens_total,
        tokens_total as f64 / elapsed.max(1e-9),
        trainer.session.compiled.peak_bytes() as f64 / (1 << 20) as f64
    );
    if let Some(v) = final_val {
        println!("validation loss {v:.4} (best {best_val:.4})");
    }
    println!("metrics: {}", metrics_path.display());
    println!("plot: {}", plot_path.display());
    println!("adapter: {}", args.output.display());
    if !args.export.is_empty() {
        println!(
            "llama.cpp adapter: {}",
            args.output.join(GGUF_LORA_FILE).display()
        );
    }
    Ok(())
}
