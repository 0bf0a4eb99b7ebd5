//! `webqlora merge`: base model + PEFT adapter into a plain Hugging Face folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use webqlora::lora::gguf_merge::{merged_gguf_bytes, GgufDtype};
use webqlora::lora::merge::{
    check_output_folder, merged_tensors, write_model_folder, MergeBase, MergeDtype,
    MODEL_FOLDER_FILES,
};
use webqlora::lora::peft::Adapter;
use webqlora::model::gguf::GgufFile;
use webqlora::tokenizer::tokenizer_json_from_gguf;
use webqlora::train::model_source::ModelSource;

use super::common::ModelArg;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    F16,
    F32,
    /// 8-bit blocks (`--format gguf` only).
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A Hugging Face folder (config.json, model.safetensors, the tokenizer files).
    Folder,
    /// One GGUF file llama.cpp and Ollama run, with the base GGUF's metadata (tokenizer,
    /// chat template) carried over; the base must be a GGUF file.
    Gguf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MergeBaseArg {
    /// The model's own weights (dequantized if stored quantized).
    Original,
    /// Their NF4 round trip: the base the adapter was trained against.
    Nf4,
}

#[derive(Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The PEFT adapter folder to merge in.
    #[arg(long)]
    pub adapter: PathBuf,
    /// The folder to write: new, empty, or an earlier merge's output (with `--format gguf`,
    /// the file, which must not exist yet).
    #[arg(long)]
    pub output: PathBuf,
    /// Write into an existing folder that holds other files too, or a model no merge wrote
    /// (only the merged model's files are replaced; nothing else there is touched); with
    /// `--format gguf`, replace the file. Never over --model or --adapter.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value = "folder")]
    pub format: FormatArg,
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: DtypeArg,
    #[arg(long, value_enum, default_value = "original")]
    pub base: MergeBaseArg,
    /// No progress (a bar on a terminal, else a line on stderr every ~10 s).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    if args.format == FormatArg::Gguf {
        return run_gguf(args);
    }
    if args.dtype == DtypeArg::Q8_0 {
        anyhow::bail!("--dtype q8_0 is for --format gguf (folders: f16, f32)");
    }
    let model_path = args.model.path()?;
    let source = ModelSource::open(&model_path)?;
    if let webqlora::model::RopeScaling::Divisors(_) = source.config.rope_scaling {
        anyhow::bail!(
            "{}: its RoPE scaling (the tensor rope_freqs.weight) has no config.json form that \
             transformers reads; merge from the model's Hugging Face folder instead",
            model_path.display()
        );
    }
    let adapter = Adapter::load(&args.adapter)?;
    // The folder's files as a merge writes them: none may be the model's or the adapter's.
    let written: Vec<PathBuf> = std::iter::once(args.output.clone())
        .chain(MODEL_FOLDER_FILES.iter().map(|f| args.output.join(f)))
        .collect();
    let outputs: Vec<(&str, &std::path::Path)> =
        written.iter().map(|p| ("--output", p.as_path())).collect();
    webqlora::io::refuse_overwriting_inputs(
        &outputs,
        &[("--model", &model_path), ("--adapter", &args.adapter)],
    )?;
    check_output_folder(&args.output, args.force)?;
    let (dtype, torch_dtype) = match args.dtype {
        DtypeArg::F16 => (MergeDtype::F16, "float16"),
        DtypeArg::F32 => (MergeDtype::F32, "float32"),
        DtypeArg::Q8_0 => unreachable!("refused above"),
    };
    let base = match args.base {
        MergeBaseArg::Original => MergeBase::Original,
        MergeBaseArg::Nf4 => MergeBase::Nf4,
    };
    let mut bar = merge_progress(args.quiet);
    let tensors = merged_tensors(
        &source.config,
        source.weights.as_ref(),
        &adapter,
        base,
        |i, n| bar.counts(i, n),
    )?;
    bar.finish(false);

    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    if model_path.is_dir() {
        // The folder's own config (less its quantization), tokenizer and generation files.
        let text = std::fs::read_to_string(model_path.join("config.json"))
            .with_context(|| format!("{}/config.json", model_path.display()))?;
        let mut config: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(obj) = config.as_object_mut() {
            obj.remove("quantization_config");
            obj.insert("torch_dtype".into(), torch_dtype.into());
        }
        files.push(("config.json", serde_json::to_vec_pretty(&config)?));
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
        ] {
            if let Ok(bytes) = std::fs::read(model_path.join(name)) {
                files.push((name, bytes));
            }
        }
    } else {
        let gguf = GgufFile::open(&model_path)?;
        let config = source.config.to_hf_json(torch_dtype);
        files.push(("config.json", serde_json::to_vec_pretty(&config)?));
        let generation = serde_json::json!({
            "bos_token_id": source.config.bos_token_id,
            "eos_token_id": config["eos_token_id"],
        });
        files.push((
            "generation_config.json",
            serde_json::to_vec_pretty(&generation)?,
        ));
        if let Ok(tokenizer) = tokenizer_json_from_gguf(&gguf.metadata) {
            files.push(("tokenizer.json", tokenizer.to_string().into_bytes()));
            let tok = source.tokenizer()?;
            let text_of = |id: Option<u32>| id.and_then(|i| tok.token_text(i));
            let tc = serde_json::json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": text_of(tok.bos_id),
                "eos_token": text_of(tok.eos_ids.first().copied()),
                "chat_template": tok.chat_template,
                "model_max_length": source.config.max_position_embeddings,
            });
            files.push(("tokenizer_config.json", serde_json::to_vec_pretty(&tc)?));
        }
    }
    write_model_folder(&args.output, &tensors, dtype, &files, args.force)?;
    println!(
        "merged {} (r {}, scale {}) into {}: {} tensors, {}",
        args.adapter.display(),
        adapter.config.r,
        adapter.config.scale(),
        args.output.display(),
        tensors.len(),
        torch_dtype
    );
    Ok(())
}

/// `--format gguf`: the base GGUF with the adapter merged in, one file.
fn run_gguf(args: MergeArgs) -> anyhow::Result<()> {
    let model_path = args.model.path()?;
    if !model_path.is_file() {
        anyhow::bail!(
            "{}: --format gguf needs the base model's GGUF file (its tokenizer and metadata are \
             carried over); merge a Hugging Face folder with --format folder, or convert it with \
             llama.cpp's convert_hf_to_gguf.py first",
            model_path.display()
        );
    }
    if args.base == MergeBaseArg::Nf4 {
        anyhow::bail!(
            "--base nf4 is for --format folder (a GGUF merge adds to the file's own weights)"
        );
    }
    let base = GgufFile::open(&model_path)?;
    let adapter = Adapter::load(&args.adapter)?;
    webqlora::io::refuse_overwriting_inputs(
        &[("--output", &args.output)],
        &[("--model", &model_path), ("--adapter", &args.adapter)],
    )?;
    super::common::check_new_file(&args.output, args.force)?;
    let dtype = match args.dtype {
        DtypeArg::F16 => GgufDtype::F16,
        DtypeArg::F32 => GgufDtype::F32,
        DtypeArg::Q8_0 => GgufDtype::Q8_0,
    };
    let mut bar = merge_progress(args.quiet);
    let bytes = merged_gguf_bytes(&base, &adapter, dtype, |i, n| bar.counts(i, n))?;
    bar.finish(false);
    webqlora::io::write_atomic(&args.output, &bytes)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "merged {} (r {}, scale {}) into {}: {:?}, {} bytes",
        args.adapter.display(),
        adapter.config.r,
        adapter.config.scale(),
        args.output.display(),
        dtype,
        bytes.len()
    );
    Ok(())
}

/// Merging's progress on stderr: a bar on a terminal, else a line every ~10 s.
fn merge_progress(quiet: bool) -> super::progress::Progress {
    super::progress::Progress::new(
        "merge: tensor",
        0,
        quiet,
        super::progress::Stream::Stderr,
        "merging {bar:30} {pos}/{len} tensors {elapsed}",
    )
}
