//! `webqlora export`: a PEFT adapter in another runtime's format. `gguf-lora` is llama.cpp's
//! LoRA adapter (`llama-cli -m base.gguf --lora adapter.gguf`, Ollama's `ADAPTER`).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use webqlora::lora::gguf_lora::{gguf_lora_bytes, GgufLoraDtype};
use webqlora::lora::peft::Adapter;
use webqlora::model::ModelConfig;
use webqlora::train::model_source::ModelSource;

use super::common::ModelArg;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// llama.cpp's GGUF LoRA adapter, loaded on top of the base model's GGUF.
    GgufLora,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportDtype {
    F32,
    F16,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The base model the adapter was trained on (its GGUF or Hugging Face folder): the
    /// architecture, head counts and module shapes the file must match.
    #[command(flatten)]
    pub model: ModelArg,
    /// The PEFT adapter folder.
    #[arg(long)]
    pub adapter: PathBuf,
    #[arg(long, value_enum, default_value = "gguf-lora")]
    pub format: ExportFormat,
    /// The file to write (an existing file is kept unless --force).
    #[arg(long)]
    pub output: PathBuf,
    /// The factors' precision in the file.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: ExportDtype,
    /// Replace an existing output file (never --model or --adapter).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let model = args.model.path()?;
    webqlora::io::refuse_overwriting_inputs(
        &[("--output", &args.output)],
        &[("--model", &model), ("--adapter", &args.adapter)],
    )?;
    super::common::check_new_file(&args.output, args.force)?;
    let source = ModelSource::open(&model)?;
    let adapter = Adapter::load(&args.adapter)?;
    let dtype = match args.dtype {
        ExportDtype::F32 => GgufLoraDtype::F32,
        ExportDtype::F16 => GgufLoraDtype::F16,
    };
    let bytes = write_gguf_lora(&adapter, &source.config, dtype, &args.adapter, &args.output)?;
    println!(
        "wrote {} ({} bytes; llama.cpp: --lora {})",
        args.output.display(),
        bytes,
        args.output.display()
    );
    Ok(())
}

/// Write `adapter` as a GGUF LoRA file at `output` (through a temporary file renamed into
/// place); the bytes written.
pub fn write_gguf_lora(
    adapter: &Adapter,
    config: &ModelConfig,
    dtype: GgufLoraDtype,
    adapter_dir: &Path,
    output: &Path,
) -> anyhow::Result<usize> {
    let shown = adapter_dir.display().to_string();
    let bytes = gguf_lora_bytes(adapter, config, dtype, &shown)?;
    webqlora::io::write_atomic(output, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
    Ok(bytes.len())
}
