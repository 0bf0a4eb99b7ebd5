//! Subcommands of the `webqlora` binary (native only).

mod bench;
mod devices;
mod graph;

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

/// Which GPU to run on; shared by every subcommand that uses one.
#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// Adapter index as listed by `webqlora devices` (default: the best device class).
    #[arg(long, global = true)]
    adapter: Option<usize>,
    /// Restrict to one backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else all).
    #[arg(long, global = true)]
    backend: Option<BackendChoice>,
}

impl GpuArgs {
    pub fn request(&self) -> AdapterRequest {
        AdapterRequest {
            index: self.adapter,
            backend: self.backend,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters, the one that would be used, and the limits and features we rely on.
    Devices(devices::DevicesArgs),
    /// Kernel throughput tables (`bench kernels`).
    Bench(bench::BenchArgs),
    /// Build a graph, print its nodes, buffer plan and planned peak bytes; optionally run it.
    Graph(graph::GraphArgs),
}

pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devices(args) => devices::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
