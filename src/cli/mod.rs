//! Subcommands of the `webqlora` binary (native only).

mod bench;
mod bench_step;
mod common;
mod devices;
mod dump_step;
mod eval;
mod export;
mod generate;
mod graph;
mod merge;
mod models;
mod plot;
mod progress;
mod train;

use clap::{Args, Parser, Subcommand};
use webqlora::gpu::{AdapterRequest, BackendChoice};

#[derive(Parser)]
#[command(
    name = "webqlora",
    version,
    about = "QLoRA fine-tuning of small language models on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which GPU to run on; shared by every subcommand that uses one. (`--adapter` names the LoRA
/// adapter folder in the training commands, so the GPU adapter is `--gpu`; `devices` takes
/// `--adapter N` too.)
#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// GPU adapter index as listed by `webqlora devices` (default: the best device class).
    #[arg(long = "gpu", global = true)]
    gpu_index: Option<usize>,
    /// Restrict to one backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else all).
    #[arg(long, global = true)]
    backend: Option<BackendChoice>,
}

impl GpuArgs {
    pub fn request(&self) -> AdapterRequest {
        AdapterRequest {
            index: self.gpu_index,
            backend: self.backend,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters, the one that would be used, and the limits and features we rely on.
    Devices(devices::DevicesArgs),
    /// One training step on a given batch: logits, loss, LoRA gradients (and the adapter after
    /// one AdamW step) written to a safetensors file, to compare with PyTorch + PEFT.
    DumpStep(dump_step::DumpStepArgs),
    /// Fine-tune a LoRA adapter on a JSONL dataset (a GGUF as downloaded, a folder in NF4).
    Train(Box<train::TrainArgs>),
    /// Validation loss, perplexity and multiple-choice accuracy, with or without an adapter.
    Eval(eval::EvalArgs),
    /// Merge an adapter into its base model: a Hugging Face folder (f16 or f32).
    Merge(merge::MergeArgs),
    /// Write an adapter in another runtime's format: llama.cpp's GGUF LoRA (`--lora`).
    Export(export::ExportArgs),
    /// Generate text from a prompt (KV cache; greedy, temperature, top-p), streamed.
    Generate(generate::GenerateArgs),
    /// Kernel throughput tables (`bench kernels`) and one training step's memory and speed
    /// (`bench step`).
    Bench(bench::BenchArgs),
    /// The catalog's models (names for --model) and what the cache holds; --fetch NAME.
    Models(models::ModelsArgs),
    /// Build a graph, print its nodes, buffer plan and planned peak bytes; optionally run it.
    Graph(graph::GraphArgs),
}

pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devices(args) => devices::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Bench(args) => bench::run(args),
        Command::DumpStep(args) => dump_step::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Models(args) => models::run(args),
    }
}
