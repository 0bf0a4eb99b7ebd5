//! `webqlora eval`: validation loss and perplexity of a model (with or without an adapter)
//! on a JSONL dataset; for multiple-choice data also accuracy (`acc`) and per-character
//! accuracy (`acc_norm`).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;
use webqlora::data::records::read_jsonl;
use webqlora::data::{check_vocab, encode_records, DataError, EncodeOptions, Example, Mcq, Record};
use webqlora::gpu::Gpu;
use webqlora::lora::peft::Adapter;
use webqlora::model::load::upload_model_with_progress;
use webqlora::train::evaluate::{
    example_items, question_items, Item, LossScore, QuestionItems, Scorer, ScorerShape, PASS_TOKENS,
};
use webqlora::train::model_source::ModelSource;

use super::common::{at_least_one, choose_base, load_bar, BaseArg, McqScoreArg, ModelArg};
use super::progress::{Progress, Stream};
use super::GpuArgs;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A PEFT adapter folder to evaluate with (default: the base model alone).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// JSONL data in any format `train` takes.
    #[arg(long)]
    pub data: PathBuf,
    /// Only the first N records.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Score a multiple-choice answer by its text (lm-evaluation-harness) or by its letter.
    #[arg(long, value_enum, default_value = "text")]
    pub mcq_score: McqScoreArg,
    /// How the frozen base weights are held (default: a GGUF's own weights, a folder's NF4;
    /// see `webqlora train --help`).
    #[arg(long, value_enum)]
    pub base: Option<BaseArg>,
    #[arg(long, default_value_t = 2048, value_parser = at_least_one)]
    pub max_seq_len: usize,
    /// Print one JSON object (loss, perplexity, accuracy, acc_norm, n) instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress (a bar on a terminal, else a line on stderr every ~10 s).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub gpu: GpuArgs,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let model_path = args.model.path()?;
    if let Some(b) = args.base {
        b.format(&model_path)?;
    }
    let source = ModelSource::open(&model_path)?;
    let adapter = args.adapter.as_deref().map(Adapter::load).transpose()?;
    let EvalData {
        other,
        example_items,
        questions,
        mcq_items,
    } = read_data(&args, &source)?;
    let n = other.len() + questions.len();

    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let base = choose_base(args.base, &model_path, source.kind(), &gpu.kernels)?;
    let shape = ScorerShape::for_items(
        &[
            example_items.as_slice(),
            mcq_items.as_ref().map_or(&[], |q| q.items.as_slice()),
        ],
        PASS_TOKENS,
        source.config.vocab_size,
        gpu.limits.max_storage_buffer_binding_size,
    );
    let scorer = Scorer::new(
        &gpu,
        &source.config,
        base.format,
        adapter.as_ref().map(|a| &a.config),
        shape,
    )?;
    let mut load = load_bar(args.quiet);
    let missing = upload_model_with_progress(
        &gpu,
        &scorer.compiled,
        &scorer.model,
        source.weights.as_ref(),
        base.format,
        adapter.as_ref(),
        &mut |done, total| load.counts(done, total),
    )?;
    load.finish(false);
    if let Some(name) = missing.first() {
        anyhow::bail!("'{name}' is in neither the model nor the adapter");
    }
    let started = Instant::now();
    let (other_logprob, other_tokens) = pollster::block_on(scorer.logprob_sum(&gpu, &other))?;
    let mcq = match &mcq_items {
        Some(items) => {
            let mut bar = Progress::new(
                "eval: question",
                questions.len() as u64,
                args.quiet,
                Stream::Stderr,
                "{bar:30} {pos}/{len} questions [{elapsed_precise}, ETA {eta}]",
            );
            let score =
                pollster::block_on(scorer.mcq(&gpu, &questions, items, |i| bar.set(i as u64, "")))?;
            bar.finish(false);
            Some(score)
        }
        None => None,
    };
    let loss = match mcq {
        Some(m) => LossScore::of(
            other_logprob + m.answer_logprob,
            other_tokens + m.answer_tokens,
        ),
        None => LossScore::of(other_logprob, other_tokens),
    };
    let secs = started.elapsed().as_secs_f64();
    if !loss.loss.is_finite() {
        anyhow::bail!(
            "the loss over {} is {}: the model{} gives non-finite logits",
            args.data.display(),
            loss.loss,
            if args.adapter.is_some() {
                " with this adapter"
            } else {
                ""
            }
        );
    }
    if args.json {
        println!(
            "{}",
            json!({
                "loss": loss.loss,
                "perplexity": loss.perplexity,
                "accuracy": mcq.map(|m| m.accuracy),
                "acc_norm": mcq.map(|m| m.acc_norm),
                "n": n,
                "tokens": loss.tokens,
                "seconds": secs,
                "base": base.format.key(),
                "base_why": base.why,
            })
        );
    } else {
        println!(
            "{}{}: {} examples, {} scored tokens",
            model_path.display(),
            args.adapter
                .as_ref()
                .map(|a| format!(" + {}", a.display()))
                .unwrap_or_default(),
            n,
            loss.tokens
        );
        println!("base: {}", base.describe());
        println!("loss {:.4}, perplexity {:.3}", loss.loss, loss.perplexity);
        if let Some(m) = mcq {
            println!(
                "accuracy {:.1}% (acc_norm {:.1}%) over {} questions",
                100.0 * m.accuracy,
                100.0 * m.acc_norm,
                m.n
            );
        }
        println!("{secs:.1} s on {}", gpu.info.name);
    }
    Ok(())
}

/// The records of `--data`, tokenized once (for sizing the scorer and for scoring).
struct EvalData {
    /// Every record that is not a question, scored whole.
    other: Vec<Example>,
    example_items: Vec<Item>,
    /// Questions, scored choice by choice (their loss is that of the right answers).
    questions: Vec<Mcq>,
    mcq_items: Option<QuestionItems>,
}

fn read_data(args: &EvalArgs, source: &ModelSource) -> anyhow::Result<EvalData> {
    let mut records = read_jsonl(&args.data)?;
    if let Some(limit) = args.limit {
        records.truncate(limit);
    }
    let by_letter = args.mcq_score == McqScoreArg::Letter;
    let opts = EncodeOptions {
        train_on_inputs: false,
        max_len: args.max_seq_len,
        mcq_by_letter: by_letter,
    };
    let needs_tokenizer = records
        .iter()
        .any(|(_, r)| !matches!(r, Record::Tokens { .. }));
    let tok = if needs_tokenizer {
        Some(source.tokenizer()?)
    } else {
        None
    };
    let shown = args.data.display().to_string();
    // Questions are scored choice by choice (their loss is that of the right answers); every
    // other record is an example, scored whole.
    let (lines, questions): (Vec<usize>, Vec<Mcq>) = records
        .iter()
        .filter_map(|(line, r)| match r {
            Record::Mcq(q) => Some((*line, q.clone())),
            _ => None,
        })
        .unzip();
    records.retain(|(_, r)| !matches!(r, Record::Mcq(_)));
    let other = encode_records(&records, tok, source.config.vocab_size, &opts, &shown)?;
    let example_items = example_items(&other);
    // Tokenized once, for sizing the scorer and for scoring.
    let mcq_items = match tok {
        Some(tok) if !questions.is_empty() => {
            let items = question_items(tok, &questions, by_letter)?;
            check_questions(&items, &lines, &opts, source.config.vocab_size, &shown)?;
            Some(items)
        }
        _ => None,
    };

    Ok(EvalData {
        other,
        example_items,
        questions,
        mcq_items,
    })
}

/// `encode_records`' checks for questions (whose line numbers are `lines`): the prompt with
/// its longest choice within the maximum sequence length, every id within the vocabulary.
fn check_questions(
    items: &QuestionItems,
    lines: &[usize],
    opts: &EncodeOptions,
    vocab: usize,
    path: &str,
) -> Result<(), DataError> {
    for (item, &line) in items.items.iter().zip(lines) {
        let err = |msg: String| DataError {
            path: path.into(),
            line: Some(line),
            msg,
        };
        check_vocab(&item.ids, vocab).map_err(err)?;
        let needed = item.positions_needed();
        if needed > opts.max_len {
            return Err(err(format!(
                "the prompt and its longest choice are {needed} tokens, longer than the maximum \
                 sequence length {} (--max-seq-len)",
                opts.max_len
            )));
        }
    }
    Ok(())
}
