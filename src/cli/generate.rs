//! `webqlora generate`: text from a prompt with the KV-cache decoder, streamed as it comes.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use webqlora::gpu::Gpu;
use webqlora::lora::peft::Adapter;
use webqlora::model::generate::{generate, Sampler};
use webqlora::model::load::upload_model_with_progress;
use webqlora::model::transformer_decode::Decoder;
use webqlora::tokenizer::Message;
use webqlora::train::model_source::ModelSource;

use super::common::{at_least_one, choose_base, load_bar, BaseArg, ModelArg};
use super::GpuArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A PEFT adapter folder.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub max_new_tokens: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub top_p: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// How the frozen base weights are held (default: a GGUF's own weights, a folder's NF4;
    /// see `webqlora train --help`).
    #[arg(long, value_enum)]
    pub base: Option<BaseArg>,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        anyhow::bail!(
            "--temperature {} must be 0 (greedy) or more",
            args.temperature
        );
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        anyhow::bail!("--top-p {} must be in (0, 1]", args.top_p);
    }
    let model_path = args.model.path()?;
    if let Some(b) = args.base {
        b.format(&model_path)?;
    }
    let source = ModelSource::open(&model_path)?;
    let tok = source.tokenizer()?;
    let adapter = args.adapter.as_deref().map(Adapter::load).transpose()?;
    let prompt = if args.chat {
        tok.encode_chat(
            &[Message {
                role: "user".into(),
                content: args.prompt.clone(),
            }],
            true,
        )?
    } else {
        tok.encode(&args.prompt, true)?
    };
    // The model's context bounds the prompt and what follows it, before anything is sized.
    let context = source.config.max_position_embeddings;
    if prompt.len() >= context {
        anyhow::bail!(
            "the prompt is {} tokens, and {} holds {context} (its max_position_embeddings), \
             leaving no room for a new token; shorten the prompt",
            prompt.len(),
            model_path.display()
        );
    }
    let new_tokens = args.max_new_tokens.min(context - prompt.len());
    let max_ctx = prompt.len() + new_tokens;
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let base = choose_base(args.base, &model_path, source.kind(), &gpu.kernels)?;
    let decoder = Decoder::new(
        &gpu,
        &source.config,
        base.format,
        adapter.as_ref().map(|a| &a.config),
        max_ctx,
    )?;
    let mut load = load_bar(!std::io::IsTerminal::is_terminal(&std::io::stderr()));
    upload_model_with_progress(
        &gpu,
        &decoder.compiled,
        &decoder.model,
        source.weights.as_ref(),
        base.format,
        adapter.as_ref(),
        &mut |done, total| load.counts(done, total),
    )?;
    load.finish(false);
    if std::env::var_os("WEBQLORA_PROFILE").is_some() {
        // Per-kernel times of one decoding step (position 0), summed by kernel.
        pollster::block_on(decoder.feed(&gpu, prompt[0], 0, true))?;
        if let Some(nodes) = pollster::block_on(decoder.compiled.run_profiled(&gpu))? {
            let mut by_kernel = std::collections::BTreeMap::<&str, (f64, usize)>::new();
            for (_, kernel, ms) in &nodes {
                let e = by_kernel.entry(kernel).or_default();
                e.0 += ms;
                e.1 += 1;
            }
            for (kernel, (ms, n)) in by_kernel {
                eprintln!("{kernel}: {ms:.2} ms in {n} dispatches");
            }
        }
    }
    let mut sampler = Sampler::new(args.temperature, args.top_p, args.seed);
    let stop = tok.stop_ids();
    // The prompt as the model sees it (a chat prompt with its template's text).
    let text = if args.chat {
        tok.decode(&prompt, false)?
    } else {
        args.prompt.clone()
    };
    print!("{text}");
    std::io::stdout().flush()?;
    let started = Instant::now();
    let mut shown = String::new();
    let mut ids = Vec::new();
    let out = pollster::block_on(generate(
        &decoder,
        &gpu,
        &prompt,
        new_tokens,
        &mut sampler,
        &stop,
        |t| {
            ids.push(t);
            // Decode everything so far and print what is new: byte-level tokens can end
            // mid-character.
            if let Ok(text) = tok.decode(&ids, true) {
                if text.len() > shown.len() && text.starts_with(&shown) {
                    print!("{}", &text[shown.len()..]);
                    let _ = std::io::stdout().flush();
                    shown = text;
                }
            }
            true
        },
    ))?;
    let secs = started.elapsed().as_secs_f64();
    let text = tok.decode(&ids, true)?;
    if text.len() > shown.len() && text.starts_with(&shown) {
        print!("{}", &text[shown.len()..]);
    }
    println!();
    eprintln!(
        "{} prompt + {} new tokens in {secs:.1} s ({:.1} tokens/s) on {}; base: {}",
        prompt.len(),
        out.len(),
        (prompt.len() + out.len()) as f64 / secs.max(1e-9),
        gpu.info.name,
        base.describe()
    );
    if out.len() == new_tokens && new_tokens < args.max_new_tokens {
        eprintln!(
            "stopped at the model's context of {context} tokens (--max-new-tokens {} asked for \
             more)",
            args.max_new_tokens
        );
    }
    Ok(())
}
