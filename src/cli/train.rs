//! `webqlora train`: QLoRA fine-tuning from a JSONL dataset to a PEFT adapter, with
//! progress, metrics.jsonl, a loss plot, periodic and final saves, `--resume` and a clean
//! stop on Ctrl-C.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use webqlora::data::records::read_jsonl;
use webqlora::data::{encode_records, EncodeOptions, Example};
use webqlora::gpu::Gpu;
use webqlora::lora::peft::Adapter;
use webqlora::lora::LoraConfig;
use webqlora::model::transformer::{BaseChoice, BaseFormat};
use webqlora::train::checkpoint;
use webqlora::train::model_source::ModelSource;
use webqlora::train::recipe::{lora_config, Recipe, RunSettings};
use webqlora::train::schedule::ScheduleKind;
use webqlora::train::trainer::{split_validation, NamedTensors, Trainer};

use super::common::{
    at_least_one, choose_base, load_bar, non_negative, positive, BaseArg, McqScoreArg, ModelArg,
};
use super::plot;
use super::progress::{Progress, Stream};
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
    /// Where the adapter, checkpoint, metrics.jsonl and loss.svg go. A folder holding a run
    /// takes `--resume` (continue it) or `--force` (replace it).
    #[arg(long, default_value = "webqlora-out")]
    pub output: PathBuf,
    /// Start a fresh run in an --output folder that holds one (its adapter, checkpoint and
    /// metrics are replaced as the new run saves).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Start from this PEFT adapter (its rank, alpha and targets) instead of a fresh one.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Continue from <output>/checkpoint (adapter, optimizer state, step); settings not given
    /// are the checkpoint's, and a setting given that differs from it is refused.
    #[arg(long)]
    pub resume: bool,
    /// LoRA rank (default 16).
    #[arg(long, value_parser = at_least_one)]
    pub rank: Option<usize>,
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
    /// Comma-separated module names (default: every linear module: the seven, or for Phi-3
    /// its fused qkv_proj and gate_up_proj with o_proj and down_proj).
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
    /// Examples per micro-batch (default 4).
    #[arg(long, value_parser = at_least_one)]
    pub batch: Option<usize>,
    /// Micro-batches per optimizer step (default 1).
    #[arg(long, value_parser = at_least_one)]
    pub accumulation: Option<usize>,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub max_grad_norm: f32,
    /// Optimizer steps (default: one epoch, or `--epochs`).
    #[arg(long, value_parser = at_least_one)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 1.0, value_parser = positive, allow_hyphen_values = true)]
    pub epochs: f64,
    /// The seed of the adapter's initialization, the data order and dropout (default 42).
    #[arg(long)]
    pub seed: Option<u64>,
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
    /// How the frozen base weights are held. Default: a GGUF file's own weights (its codes on
    /// a GPU, their exact f32 dequantization on a software device, where that is faster); a
    /// Hugging Face folder in NF4 (QLoRA), a bitsandbytes folder in its own NF4.
    #[arg(long, value_enum)]
    pub base: Option<BaseArg>,
    /// Save the adapter and a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Validation loss every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// No progress: neither the bar (on a terminal) nor the plain lines (elsewhere: `nohup`,
    /// CI, a pipe, every --log-every steps or ~10 s). metrics.jsonl has every step anyway.
    #[arg(long)]
    pub quiet: bool,
    /// With `json`, stdout is a stream of JSON objects, one a step, one a validation, and the
    /// summary last (what metrics.jsonl and summary.json hold); the rest goes to stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Where there is no terminal, a progress line every N steps too (besides every ~10 s).
    #[arg(long, default_value_t = 0)]
    pub log_every: u64,
    /// Also write the adapter in this format at every save: `gguf-lora` is llama.cpp's
    /// (OUTPUT/adapter.gguf, f32; `webqlora export` writes other precisions); `ollama` adds
    /// OUTPUT/Modelfile (a GGUF base only).
    #[arg(long, value_enum)]
    pub export: Vec<super::export::ExportFormat>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

impl TrainArgs {
    pub fn rank(&self) -> usize {
        self.rank.unwrap_or(16)
    }
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(4)
    }
    pub fn accumulation(&self) -> usize {
        self.accumulation.unwrap_or(1)
    }
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(42)
    }
}

/// How `train` reports on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// A header, progress (a bar on a terminal, lines elsewhere) and a closing summary.
    Text,
    /// JSON objects only: a step, a validation, the summary.
    Json,
}

/// The files a run writes into its output folder (besides `checkpoint/`).
const RUN_FILES: [&str; 7] = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "metrics.jsonl",
    "loss.svg",
    "summary.json",
    super::export::GGUF_LORA_FILE,
    super::export::MODELFILE,
];

/// Before anything is loaded: the run's files must not be any input, and a folder holding a
/// run is continued (`--resume`) or replaced (`--force`), never overwritten unasked.
fn check_output(args: &TrainArgs, model: &Path) -> anyhow::Result<()> {
    let out = &args.output;
    // The files the run writes, and the checkpoint folder it replaces; the folder itself is
    // written into, not replaced, so data kept beside a run is fine (but not the model's own
    // folder).
    let written: Vec<PathBuf> = std::iter::once(out.join(checkpoint::DIR))
        .chain(RUN_FILES.iter().map(|f| out.join(f)))
        .collect();
    let outputs: Vec<(&str, &Path)> = written.iter().map(|p| ("--output", p.as_path())).collect();
    let mut inputs: Vec<(&str, &Path)> = vec![("--model", model), ("--data", &args.data)];
    if let Some(valid) = &args.valid {
        inputs.push(("--valid", valid));
    }
    if let Some(adapter) = &args.adapter {
        inputs.push(("--adapter", adapter));
    }
    webqlora::io::refuse_overwriting_inputs(&outputs, &inputs)?;
    if let Some((flag, input)) = inputs
        .iter()
        .find(|(_, input)| webqlora::io::same_path(out, input))
    {
        bail!(
            "--output {} is {flag} {}: a run's files never go into an input",
            out.display(),
            input.display()
        );
    }
    if out.exists() && !out.is_dir() {
        bail!("--output {}: exists and is not a folder", out.display());
    }
    if args.resume || args.force {
        return Ok(());
    }
    let held: Vec<&str> = std::iter::once(checkpoint::DIR)
        .chain(RUN_FILES)
        .filter(|f| out.join(f).exists())
        .collect();
    if !held.is_empty() {
        bail!(
            "--output {}: holds a training run ({}); add --resume to continue it, --force to \
             replace it with a fresh run, or choose another --output",
            out.display(),
            held.join(", ")
        );
    }
    Ok(())
}

/// Sizes from flags against the data, before any work: a step of more micro-batches than there
/// are training rows holds every row more than once (and a huge count would only loop).
fn check_step_size(args: &TrainArgs, rows: usize, seq: usize, hidden: usize) -> anyhow::Result<()> {
    let accumulation = args.accumulation();
    if accumulation > rows.max(1) {
        bail!(
            "--accumulation {accumulation}: more micro-batches a step than the {rows} training rows (each row would be seen more than once a step); at most {rows}",
        );
    }
    // No device holds a micro-batch whose hidden states alone pass 2^48 bytes; the exact bound
    // (the GPU's largest buffer) is checked once the device is open.
    let bytes = [args.batch(), seq, hidden, 4]
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b));
    if bytes.is_none_or(|b| b > 1 << 48) {
        bail!(
            "--batch {}: a micro-batch of {} x {seq} tokens is larger than any GPU holds; use --accumulation for more examples a step",
            args.batch(),
            args.batch()
        );
    }
    Ok(())
}

/// The micro-batch's hidden states (batch x seq x hidden f32 values, the smallest of its
/// activations) must fit the device's largest buffer.
fn check_micro_batch(gpu: &Gpu, batch: usize, seq: usize, hidden: usize) -> anyhow::Result<()> {
    let bytes = (batch * seq * hidden * 4) as u64;
    let largest = gpu.limits.max_buffer_size;
    if bytes > largest {
        bail!(
            "--batch {batch}: a micro-batch of {batch} x {seq} tokens needs {:.1} GiB for its hidden states alone, past this GPU's largest buffer ({:.1} GiB); use a smaller --batch with --accumulation for as many examples a step",
            bytes as f64 / (1u64 << 30) as f64,
            largest as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// `--force`, once the model and data have loaded: the earlier run's files go (only those), so
/// the folder never mixes two runs' adapter, checkpoint and metrics.
fn remove_run(out: &Path) -> anyhow::Result<()> {
    for f in RUN_FILES {
        let p = out.join(f);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("--force: {}", p.display()))?;
        }
    }
    let ck = out.join(checkpoint::DIR);
    if ck.exists() {
        std::fs::remove_dir_all(&ck).with_context(|| format!("--force: {}", ck.display()))?;
    }
    Ok(())
}

/// `--resume`: the settings given must be the checkpoint's (each difference named), and those
/// not given are taken from it.
fn take_checkpoint_settings(
    args: &mut TrainArgs,
    adapter: &LoraConfig,
    state: &checkpoint::TrainerState,
) -> anyhow::Result<()> {
    let mut differences = Vec::new();
    if let Some(a) = &args.adapter {
        differences.push(format!(
            "--adapter {} (a resumed run trains on its checkpoint's adapter)",
            a.display()
        ));
    }
    let mut targets = args.target_modules.clone();
    if let Some(t) = &mut targets {
        t.sort();
        t.dedup();
    }
    // A checkpoint from before the base was recorded was made on the then default, NF4.
    let state_base = state.base.clone().unwrap_or_else(|| "nf4".into());
    fn shown<T: ToString>(v: Option<T>) -> Option<String> {
        v.map(|v| v.to_string())
    }
    let given_and_recorded = [
        ("--rank", shown(args.rank), adapter.r.to_string()),
        ("--alpha", shown(args.alpha), adapter.alpha.to_string()),
        (
            "--target-modules",
            targets.map(|t| t.join(",")),
            adapter.target_modules.join(","),
        ),
        ("--batch", shown(args.batch), state.batch.to_string()),
        (
            "--accumulation",
            shown(args.accumulation),
            state.accumulation.to_string(),
        ),
        ("--seed", shown(args.seed), state.seed.to_string()),
        ("--base", shown(args.base.map(base_key)), state_base.clone()),
    ];
    for (flag, given, recorded) in given_and_recorded {
        match given {
            Some(given) if given != recorded => {
                differences.push(format!("{flag} {given} (the checkpoint's: {recorded})"))
            }
            _ => {}
        }
    }
    if args.dora && !adapter.use_dora {
        differences.push("--dora (the checkpoint's adapter is LoRA)".into());
    }
    if args.rslora && !adapter.use_rslora {
        differences.push("--rslora (the checkpoint's adapter does not use it)".into());
    }
    // A switch cannot be told apart from one left out: packing must be said as it was.
    match (args.packing, state.packing) {
        (false, true) => differences.push(
            "no --packing (the checkpoint was made with packing; resume it with --packing)".into(),
        ),
        (true, false) => {
            differences.push("--packing (the checkpoint was made without packing)".into())
        }
        _ => {}
    }
    if !differences.is_empty() {
        bail!(
            "--resume: these settings differ from the checkpoint's: {}; resume with the \
             checkpoint's settings (leave them out), or start a fresh run with --force",
            differences.join("; ")
        );
    }
    args.batch = Some(state.batch);
    args.accumulation = Some(state.accumulation);
    args.seed = Some(state.seed);
    args.base = [BaseArg::F32, BaseArg::Nf4, BaseArg::Gguf]
        .into_iter()
        .find(|b| base_key(*b) == state_base);
    Ok(())
}

/// How a checkpoint names the base format (`--base`'s value).
fn base_key(b: BaseArg) -> &'static str {
    match b {
        BaseArg::F32 => "f32",
        BaseArg::Nf4 => "nf4",
        BaseArg::Gguf => "gguf",
    }
}

/// The datasets as examples.
struct Datasets {
    train: Vec<Example>,
    valid: Vec<Example>,
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
        None => split_validation(train, args.valid_split, args.seed())
            .map_err(|e| anyhow::anyhow!("--valid-split: {e}"))?,
    };
    Ok(Datasets { train, valid })
}

fn lora_settings(
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
    lora_config(
        args.rank(),
        args.alpha,
        args.lora_dropout,
        args.target_modules.as_deref(),
        args.rslora,
        args.dora,
        &model.display().to_string(),
        "--target-modules",
    )
    .map_err(|e| anyhow::anyhow!(e))
}

struct Outputs {
    metrics: std::fs::File,
    /// Each line on stdout too (`--log-format json`).
    echo: bool,
}

impl Outputs {
    fn log(&mut self, line: serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.metrics, "{line}").context("metrics.jsonl")?;
        if self.echo {
            // A closed stdout does not stop training: metrics.jsonl has the line.
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
        }
        Ok(())
    }
}

/// The formats to write besides PEFT's at each save, and the base model they are for.
struct Exports<'a> {
    formats: &'a [super::export::ExportFormat],
    config: &'a webqlora::model::ModelConfig,
    /// The base model, for the Modelfile's FROM (`--export ollama`).
    model: &'a Path,
    gguf: Option<&'a webqlora::model::gguf::GgufFile>,
}

/// Save the adapter and the checkpoint, unless training has diverged: a NaN or infinity in
/// the adapter or its moments is an error and nothing is written, so the last good save
/// stays.
fn save_all(trainer: &Trainer, gpu: &Gpu, out: &Path, exports: &Exports) -> anyhow::Result<()> {
    let (adapter, moments, state) = pollster::block_on(trainer.checkpoint(gpu))?;
    checkpoint::save(out, &adapter, &moments, &state)?;
    for format in exports.formats {
        match format {
            super::export::ExportFormat::GgufLora | super::export::ExportFormat::Ollama => {
                super::export::write_gguf_lora(
                    &adapter,
                    exports.config,
                    webqlora::lora::gguf_lora::GgufLoraDtype::F32,
                    out,
                    &out.join(super::export::GGUF_LORA_FILE),
                )?;
            }
        }
        if *format == super::export::ExportFormat::Ollama {
            super::export::write_modelfile(exports.gguf, exports.model, out)?;
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

/// What a run trains, decided before a device is opened: the model, the checkpoint it
/// resumes, the adapter it starts from, the LoRA settings and the recipe.
struct Planned {
    model_path: PathBuf,
    resumed: Option<(Adapter, NamedTensors, checkpoint::TrainerState)>,
    source: ModelSource,
    start_adapter: Option<Adapter>,
    lora: LoraConfig,
    recipe: Recipe,
}

/// The run `args` ask for, every setting checked (a resumed run takes its checkpoint's).
fn plan(args: &mut TrainArgs) -> anyhow::Result<Planned> {
    if !(args.max_grad_norm.is_finite() && args.max_grad_norm >= 0.0) {
        bail!(
            "--max-grad-norm {} must be 0 (off) or more",
            args.max_grad_norm
        );
    }
    let model_path = args.model.path()?;
    check_output(args, &model_path)?;
    let resumed = if args.resume {
        let Some(dir) = checkpoint::find(&args.output) else {
            bail!(
                "--resume: no checkpoint at {}",
                args.output.join(checkpoint::DIR).display()
            );
        };
        let (adapter, moments, state) = checkpoint::load(&dir)?;
        take_checkpoint_settings(args, &adapter.config, &state)?;
        Some((adapter, moments, state))
    } else {
        None
    };
    if let Some(b) = args.base {
        b.format(&model_path)?;
    }
    let source = ModelSource::open(&model_path)?;
    let data = load_data(args, &source)?;
    let start_adapter = match (&resumed, &args.adapter) {
        (Some((a, _, _)), _) => Some(a.clone()),
        (None, Some(dir)) => Some(Adapter::load(dir)?),
        (None, None) => None,
    };
    // The targets as the model's family names them (Phi-3 fuses q|k|v and gate|up).
    let lora = lora_settings(args, &model_path, start_adapter.as_ref())?
        .for_family(source.config.family())
        .map_err(|e| anyhow::anyhow!("--target-modules: {e}"))?;
    if args.export.contains(&super::export::ExportFormat::Ollama)
        && source.weights.as_gguf().is_none()
    {
        bail!(
            "--export ollama: Ollama's FROM needs the base as a GGUF file, and {} is a folder \
             (merge instead: webqlora merge --format gguf)",
            model_path.display()
        );
    }
    if lora.use_dora && !args.export.is_empty() {
        // Refused before training, not after.
        bail!(
            "--export gguf-lora: a DoRA adapter has no GGUF LoRA form (llama.cpp's adapters hold \
             no magnitudes); merge it instead (webqlora merge --format gguf)"
        );
    }
    let batch = args.batch();
    let recipe = Recipe::new(
        data.train,
        data.valid,
        &RunSettings {
            lora: lora.clone(),
            // Decided below, once the device says which kernels run (`choose_base`).
            base: BaseFormat::F32,
            batch,
            accumulation: args.accumulation(),
            max_len: args.max_seq_len,
            steps: args.steps,
            epochs: args.epochs,
            schedule: args.schedule,
            lr: args.lr,
            warmup: args.warmup_steps,
            weight_decay: args.weight_decay,
            max_grad_norm: args.max_grad_norm,
            seed: args.seed(),
            packing: args.packing,
            checkpointing: !args.no_checkpointing,
        },
    )
    .map_err(|e| anyhow::anyhow!("--batch / --accumulation / --epochs: {e}"))?;
    Ok(Planned {
        model_path,
        resumed,
        source,
        start_adapter,
        lora,
        recipe,
    })
}

/// The output folder (emptied of a previous run's files with --force) and its metrics file,
/// appended to from `first_step` on when resuming.
fn open_outputs(args: &TrainArgs, first_step: usize) -> anyhow::Result<(Outputs, PathBuf)> {
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    if args.force {
        remove_run(&args.output)?;
    }
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
    let out = Outputs {
        metrics,
        echo: args.log_format == LogFormat::Json,
    };
    Ok((out, metrics_path))
}

/// A Ctrl-C asks the loop to stop after the step in progress (the returned flag); a second
/// one exits at once, saying which save is kept (`saved_step`: the last completed one).
fn stop_on_ctrl_c(output: &Path, saved_step: Arc<AtomicUsize>) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let out = output.to_path_buf();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A save in progress writes temporary files renamed into place as a pair:
                // stopping now abandons it and keeps the last whole pair.
                // Not in the middle of renaming a save into place (microseconds).
                let _renames = webqlora::io::RENAMING
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // What is on disk says which step is kept (a save may have just completed).
                let step = checkpoint::find(&out)
                    .and_then(|dir| {
                        let path = dir.join("trainer_state.json");
                        let text = std::fs::read_to_string(&path).ok()?;
                        checkpoint::TrainerState::parse(&text, &path).ok()
                    })
                    .map_or(saved_step.load(Ordering::SeqCst), |s| s.step);
                eprintln!(
                    "\ninterrupted again: stopped without finishing the save; {}",
                    kept(&out, (step > 0).then_some(step))
                );
                std::process::exit(130);
            }
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    Ok(stop)
}

/// A line for the person at the terminal: on stdout, or on stderr when `json` (with
/// --log-format json, stdout carries JSON objects only).
macro_rules! say {
    ($json:expr, $($arg:tt)*) => {
        if $json {
            eprintln!($($arg)*);
        } else {
            println!($($arg)*);
        }
    };
}

/// How a run went, for its summary.
struct Done<'a> {
    losses: &'a [(usize, f64)],
    val_losses: &'a [(usize, f64)],
    final_val: Option<f64>,
    best_val: f64,
    tokens: usize,
    /// The first step this process took and the last.
    steps: (usize, usize),
    elapsed: f64,
}

/// The loss plot, summary.json (also on stdout with --log-format json) and the closing lines.
fn report_done(
    args: &TrainArgs,
    trainer: &Trainer,
    gpu: &Gpu,
    base: &BaseChoice,
    done: &Done,
    metrics_path: &Path,
) -> anyhow::Result<()> {
    let json_log = args.log_format == LogFormat::Json;
    let plot_path = args.output.join("loss.svg");
    plot::loss_svg(&plot_path, done.losses, done.val_losses)?;
    let (elapsed, losses, tokens_total) = (done.elapsed, done.losses, done.tokens);
    let (first_step, last_step) = done.steps;
    let (final_val, best_val) = (done.final_val, done.best_val);
    let summary = json!({
        "steps": last_step, "time_s": elapsed, "tokens": tokens_total,
        "tokens_per_s": tokens_total as f64 / elapsed.max(1e-9),
        "planned_peak_gpu_bytes": trainer.session.compiled.peak_bytes(),
        "final_loss": losses.last().map(|l| l.1),
        "final_val_loss": final_val,
        "best_val_loss": best_val.is_finite().then_some(best_val),
        "adapter": args.output.display().to_string(),
        "device": gpu.info.name,
        "base": base.format.key(),
        "base_why": base.why,
    });
    webqlora::io::write_atomic(
        &args.output.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    if json_log {
        println!("{summary}");
    }
    say!(
        json_log,
        "done: {} steps in {:.1} s, {} tokens ({:.1} tokens/s); planned peak GPU memory {:.1} MiB",
        last_step.saturating_sub(first_step - 1),
        elapsed,
        tokens_total,
        tokens_total as f64 / elapsed.max(1e-9),
        trainer.session.compiled.peak_bytes() as f64 / (1 << 20) as f64
    );
    if let Some(v) = final_val {
        say!(json_log, "validation loss {v:.4} (best {best_val:.4})");
    }
    say!(json_log, "metrics: {}", metrics_path.display());
    say!(json_log, "plot: {}", plot_path.display());
    say!(json_log, "adapter: {}", args.output.display());
    if !args.export.is_empty() {
        say!(
            json_log,
            "llama.cpp adapter: {}",
            args.output.join(super::export::GGUF_LORA_FILE).display()
        );
    }
    if args.export.contains(&super::export::ExportFormat::Ollama) {
        say!(
            json_log,
            "Ollama: ollama create NAME -f {}",
            args.output.join(super::export::MODELFILE).display()
        );
    }
    Ok(())
}

/// The sizes a run's header gives beside the trainer's: examples, rows (packed or not),
/// validation examples, and the seconds loading took.
struct Sizes {
    examples: usize,
    rows: usize,
    valid: usize,
    load_s: f64,
}

/// The run's header: device, model, base, data and LoRA.
fn print_header(
    args: &TrainArgs,
    gpu: &Gpu,
    (model_path, source, lora): (&Path, &ModelSource, &LoraConfig),
    base: &BaseChoice,
    trainer: &Trainer,
    sizes: &Sizes,
) {
    let json_log = args.log_format == LogFormat::Json;
    let session = &trainer.session;
    let trainable: usize = session
        .trainable()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    say!(
        json_log,
        "device: {} ({:?})",
        gpu.info.name,
        gpu.info.backend
    );
    say!(
        json_log,
        "model: {} ({} layers, hidden {})",
        model_path.display(),
        source.config.num_layers,
        source.config.hidden_size,
    );
    say!(json_log, "base: {}", base.describe());
    let packed = match args.packing {
        true => format!(" packed into {} rows", sizes.rows),
        false => String::new(),
    };
    say!(
        json_log,
        "data: {} training examples{packed}, {} validation; batches {} x {} tokens, {} per step; {} steps",
        sizes.examples,
        sizes.valid,
        args.batch(),
        session.settings.seq,
        args.accumulation(),
        trainer.schedule.total
    );
    say!(
        json_log,
        "LoRA r {} alpha {} on {} ({} trainable values); planned peak GPU memory {:.1} MiB; loaded in {:.1} s",
        lora.r,
        lora.alpha,
        lora.target_modules.join(","),
        trainable,
        session.compiled.peak_bytes() as f64 / (1 << 20) as f64,
        sizes.load_s
    );
}

/// The device, the base it holds the model in, and the trainer: compiled, loaded, and resumed
/// from the checkpoint where asked.
fn load_trainer(
    args: &TrainArgs,
    (model_path, source): (&Path, &ModelSource),
    start_adapter: Option<&Adapter>,
    resumed: Option<&(Adapter, NamedTensors, checkpoint::TrainerState)>,
    recipe: Recipe,
) -> anyhow::Result<(Gpu, BaseChoice, Trainer, Sizes)> {
    let batch = args.batch();
    let Recipe {
        mut settings,
        schedule,
        train,
        starts,
        valid,
        examples,
    } = recipe;
    let seq = settings.seq;
    check_step_size(args, train.len(), seq, source.config.hidden_size)?;
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    check_micro_batch(&gpu, batch, seq, source.config.hidden_size)?;
    let base = choose_base(args.base, model_path, source.kind(), &gpu.kernels)?;
    settings.base = base.format;
    let loading = Instant::now();
    let mut load = load_bar(args.quiet || args.log_format == LogFormat::Json);
    let (rows, valid_count) = (train.len(), valid.len());
    let mut trainer = Trainer::new(
        &gpu,
        &source.config,
        source.weights.as_ref(),
        settings,
        schedule,
        train,
        starts,
        valid,
        source.pad_id(),
        start_adapter,
        &mut |done, total| load.counts(done, total),
    )?;
    load.finish(false);
    if let Some((_, moments, state)) = resumed {
        trainer
            .resume(&gpu, moments, state)
            .map_err(|e| anyhow::anyhow!("--resume: {e}"))?;
    }
    let sizes = Sizes {
        examples,
        rows,
        valid: valid_count,
        load_s: loading.elapsed().as_secs_f64(),
    };
    Ok((gpu, base, trainer, sizes))
}

pub fn run(mut args: TrainArgs) -> anyhow::Result<()> {
    let Planned {
        model_path,
        resumed,
        source,
        start_adapter,
        lora,
        recipe,
    } = plan(&mut args)?;
    let (gpu, base, mut trainer, sizes) = load_trainer(
        &args,
        (&model_path, &source),
        start_adapter.as_ref(),
        resumed.as_ref(),
        recipe,
    )?;
    let total_steps = trainer.schedule.total;
    let first_step = trainer.step + 1;

    let (mut out, metrics_path) = open_outputs(&args, first_step)?;

    // With --log-format json stdout carries JSON objects only; the words go to stderr.
    let json_log = args.log_format == LogFormat::Json;
    print_header(
        &args,
        &gpu,
        (&model_path, &source, &lora),
        &base,
        &trainer,
        &sizes,
    );

    // The step of the last completed save (0: none yet), for what a second Ctrl-C says.
    let saved_step = Arc::new(AtomicUsize::new(
        resumed.as_ref().map_or(0, |_| first_step - 1),
    ));
    let stop = stop_on_ctrl_c(&args.output, saved_step.clone())?;

    let mut bar = Progress::new(
        "step",
        total_steps as u64,
        args.quiet || json_log,
        Stream::Stdout,
        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
    )
    .every(args.log_every);
    bar.start_at(first_step as u64 - 1);
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
            model: &model_path,
            gguf: source.weights.as_gguf(),
        };
        save_all(trainer, &gpu, &args.output, &exports)
            .map_err(|e| anyhow::anyhow!("{e:#}; {}", kept(&args.output, *last_saved)))?;
        *last_saved = Some(trainer.step);
        saved_step.store(trainer.step, Ordering::SeqCst);
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
        bar.set(step as u64, &msg);
        if args.eval_every > 0 && step % args.eval_every == 0 && step < total_steps {
            if let Some(v) = validate(&trainer, &mut out, &mut best_val, &mut val_losses)? {
                bar.println(&format!("step {step}: validation loss {v:.4}"));
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
            say!(
        json_log,
                "stopped at step {step}: adapter and checkpoint saved in {} (continue with --resume)",
                args.output.display()
            );
            return Ok(());
        }
    }
    bar.finish(true);
    let final_val = validate(&trainer, &mut out, &mut best_val, &mut val_losses)?;
    if last_saved != Some(last_step) {
        save(&trainer, &mut last_saved)?;
    }
    let done = Done {
        losses: &losses,
        val_losses: &val_losses,
        final_val,
        best_val,
        tokens: tokens_total,
        steps: (first_step, last_step),
        elapsed: started.elapsed().as_secs_f64(),
    };
    report_done(&args, &trainer, &gpu, &base, &done, &metrics_path)?;
    Ok(())
}
