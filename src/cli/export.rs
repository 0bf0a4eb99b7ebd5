//! `webqlora export`: a PEFT adapter in another runtime's format. `gguf-lora` is llama.cpp's
//! LoRA adapter (`llama-cli -m base.gguf --lora adapter.gguf`, Ollama's `ADAPTER`); `ollama`
//! is a folder with that adapter and a Modelfile (`FROM` the base GGUF, `ADAPTER`, the chat
//! template), for `ollama create NAME -f DIR/Modelfile`.

use std::path::{Path, PathBuf};

use anyhow::Context;
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
    /// A folder for Ollama: the GGUF LoRA adapter and a Modelfile (FROM the base GGUF,
    /// ADAPTER, the base's chat template).
    Ollama,
}

/// Where an export (`export --format gguf-lora`, `train --export gguf-lora`) writes the GGUF
/// LoRA in its folder.
pub const GGUF_LORA_FILE: &str = "adapter.gguf";

/// The Modelfile's name in an `ollama` export (and in a run's folder with `--export ollama`).
pub const MODELFILE: &str = "Modelfile";

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
    /// The file to write (an existing file is kept unless --force); for `ollama`, the folder
    /// that gets adapter.gguf and Modelfile.
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
    let dtype = match args.dtype {
        ExportDtype::F32 => GgufLoraDtype::F32,
        ExportDtype::F16 => GgufLoraDtype::F16,
    };
    if args.format == ExportFormat::Ollama {
        return run_ollama(&args, &model, dtype);
    }
    webqlora::io::refuse_overwriting_inputs(
        &[("--output", &args.output)],
        &[("--model", &model), ("--adapter", &args.adapter)],
    )?;
    super::common::check_new_file(&args.output, args.force)?;
    let source = ModelSource::open(&model)?;
    let adapter = Adapter::load(&args.adapter)?;
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

/// `--format ollama`: DIR/adapter.gguf and DIR/Modelfile.
fn run_ollama(args: &ExportArgs, model: &Path, dtype: GgufLoraDtype) -> anyhow::Result<()> {
    let dir = &args.output;
    let adapter_file = dir.join(GGUF_LORA_FILE);
    let modelfile = dir.join(MODELFILE);
    webqlora::io::refuse_overwriting_inputs(
        &[
            ("--output", dir),
            ("--output", &adapter_file),
            ("--output", &modelfile),
        ],
        &[("--model", model), ("--adapter", &args.adapter)],
    )?;
    if dir.is_file() {
        anyhow::bail!(
            "--output {}: a file; --format ollama writes a folder",
            dir.display()
        );
    }
    for f in [&adapter_file, &modelfile] {
        super::common::check_new_file(f, args.force)?;
    }
    let source = ModelSource::open(model)?;
    let adapter = Adapter::load(&args.adapter)?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    write_gguf_lora(
        &adapter,
        &source.config,
        dtype,
        &args.adapter,
        &adapter_file,
    )?;
    let text = write_modelfile(source.weights.as_gguf(), model, dir)?;
    println!(
        "wrote {} and {} (ollama create NAME -f {}){}",
        adapter_file.display(),
        modelfile.display(),
        modelfile.display(),
        if text.contains("TEMPLATE") {
            ""
        } else if text.contains("has no chat template") {
            "; the base has no chat template: prompts are used as given"
        } else {
            "; no TEMPLATE: Ollama reads the chat template from the base GGUF"
        }
    );
    Ok(())
}

/// Write `dir`/Modelfile for the base GGUF at `model` (`gguf`: its parsed file) and the
/// adapter.gguf beside it; the text written.
pub fn write_modelfile(
    gguf: Option<&webqlora::model::gguf::GgufFile>,
    model: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let Some(gguf) = gguf else {
        anyhow::bail!(
            "--model {}: Ollama's FROM needs the base as a GGUF file (the GGUF the adapter was \
             trained on; from a Hugging Face folder, merge instead: webqlora merge --format gguf)",
            model.display()
        );
    };
    let base = std::fs::canonicalize(model).with_context(|| model.display().to_string())?;
    let base = base
        .to_str()
        .filter(|p| webqlora::lora::ollama::path_fits(p))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--model {}: its path cannot be written into a Modelfile (a newline, a quote or \
             surrounding spaces)",
                base.display()
            )
        })?;
    // The chat template as a Go template only where it renders what the base's own does.
    let name = model.display().to_string();
    let tokenizer = webqlora::tokenizer::Tokenizer::from_gguf(&gguf.metadata, &name).ok();
    let chat = tokenizer.as_ref().and_then(|tok| {
        let jinja = tok.chat_template.as_deref()?;
        webqlora::lora::ollama::verified_chat(
            jinja,
            &|m| tok.apply_chat_template(m, true).ok(),
            tok.bos_text().as_deref(),
        )
    });
    let has_template = gguf.metadata.contains_key("tokenizer.chat_template");
    let text = webqlora::lora::ollama::modelfile(
        base,
        &format!("./{}", GGUF_LORA_FILE),
        chat.as_ref(),
        has_template,
    );
    let path = dir.join(MODELFILE);
    webqlora::io::write_atomic(&path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(text)
}
