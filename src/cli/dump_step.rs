//! `webqlora dump-step`: one training step on a given batch, everything written out.

use std::path::PathBuf;

use clap::Args;
use webqlora::gpu::Gpu;
use webqlora::model::transformer::BaseFormat;
use webqlora::quant::bnb_cpu::BnbCpuEffects;
use webqlora::train::dump_step::{dump_step, write_tensors, Batch};
use webqlora::train::model_source::ModelSource;

use super::common::{choose_base, BaseArg};
use super::GpuArgs;

#[derive(Args)]
pub struct DumpStepArgs {
    /// A GGUF file or a Hugging Face model folder (f32/f16/bf16 or bitsandbytes 4-bit).
    #[arg(long)]
    model: PathBuf,
    /// PEFT adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// safetensors with `input_ids` and `labels` [batch, seq] (labels -100: no loss).
    #[arg(long)]
    batch: PathBuf,
    /// Where to write logits, loss, grad.<name> (and after_adamw.<name>).
    #[arg(long)]
    out: PathBuf,
    /// How the frozen base weights are held on the GPU (default: what `train` holds this model
    /// in on this device: a GGUF's own weights, a folder's NF4).
    #[arg(long, value_enum)]
    base: Option<BaseArg>,
    /// Also take one AdamW step at this learning rate and write the adapter after it.
    #[arg(long)]
    adamw_lr: Option<f32>,
    /// Reproduce bitsandbytes' eval-mode kernel on CPUs with AVX512-BF16: the NF4 products of
    /// modules whose input carries no gradient in bf16 (for references made on such a CPU).
    #[arg(long)]
    bnb_cpu_bf16: bool,
    /// Reproduce the absmax bitsandbytes holds after converting its weights to that CPU layout
    /// and back (any eval pass and then a save): rounded to bf16 and double-quantized again.
    #[arg(long)]
    bnb_cpu_repacked: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: DumpStepArgs) -> anyhow::Result<()> {
    webqlora::io::refuse_overwriting_inputs(
        &[("--out", &args.out)],
        &[
            ("--model", &args.model),
            ("--adapter", &args.adapter),
            ("--batch", &args.batch),
        ],
    )?;
    if let Some(b) = args.base {
        b.format(&args.model)?;
    }
    let source = ModelSource::open(&args.model)?;
    let batch = Batch::load(&args.batch, source.config.vocab_size)?;
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let base = choose_base(args.base, &args.model, source.kind(), &gpu.kernels)?.format;
    drop(source);
    if !matches!(base, BaseFormat::Nf4 { .. }) && (args.bnb_cpu_bf16 || args.bnb_cpu_repacked) {
        anyhow::bail!(
            "--bnb-cpu-bf16 and --bnb-cpu-repacked apply to an NF4 base (--base nf4; this run's \
             base is {})",
            base.name()
        );
    }
    let tensors = dump_step(
        &gpu,
        &args.model,
        &args.adapter,
        &batch,
        base,
        args.adamw_lr,
        BnbCpuEffects {
            bf16: args.bnb_cpu_bf16,
            repacked: args.bnb_cpu_repacked,
        },
    )?;
    write_tensors(&args.out, &tensors)?;
    let loss = tensors
        .iter()
        .find(|t| t.0 == "loss")
        .map_or(f32::NAN, |t| t.2[0]);
    println!(
        "loss {loss:.6}; {} tensors written to {}",
        tensors.len(),
        args.out.display()
    );
    Ok(())
}
