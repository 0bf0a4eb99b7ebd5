//! `webqlora graph`: build a residual chain of the kernels we have, print its nodes, the buffer
//! plan and the planned peak; with `--run`, run it once and print each kernel's GPU time.

use clap::Args;
use webqlora::gpu::Gpu;
use webqlora::graph::{CompiledGraph, DType, Graph, Plan};
use webqlora::ops::{residual, rmsnorm, swiglu};

use super::GpuArgs;

#[derive(Args)]
pub struct GraphArgs {
    /// Rows (tokens) of the hidden state.
    #[arg(long, default_value_t = 1024)]
    rows: usize,
    /// Columns (hidden size).
    #[arg(long, default_value_t = 576)]
    cols: usize,
    /// How many norm -> gate -> residual blocks to chain.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Run the graph once and print per-kernel GPU times.
    #[arg(long)]
    run: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// h_{l+1} = h_l + silu(rmsnorm(h_l)) * h_l, for each layer.
pub fn residual_chain(rows: usize, cols: usize, layers: usize) -> anyhow::Result<Graph> {
    let mut g = Graph::new();
    let mut h = g.input("h0", &[rows, cols], DType::F32);
    for l in 0..layers {
        let w = g.param(&format!("norm_weight{l}"), &[cols], DType::F32);
        let (h_norm, _rstd) = rmsnorm::forward(&mut g, &format!("h_norm{l}"), h, w, 1e-5)?;
        let act = swiglu::forward(
            &mut g,
            &format!("act{l}"),
            h_norm,
            h,
            swiglu::Activation::Silu,
        )?;
        h = residual::add(&mut g, &format!("h{}", l + 1), h, act)?;
    }
    g.mark_output(h);
    Ok(g)
}

pub fn run(args: GraphArgs) -> anyhow::Result<()> {
    let graph = residual_chain(args.rows, args.cols, args.layers)?;
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    println!("device: {} ({:?})", gpu.info.name, gpu.info.backend);
    println!("nodes:");
    print!("{}", graph.describe());
    let plan = Plan::new(&graph, &(&gpu.limits).into())?;
    println!("tensors:");
    print!("{}", plan.describe(&graph));
    if args.run {
        let compiled = CompiledGraph::new(&gpu, graph)?;
        for (t, desc) in compiled.graph.tensors.iter().enumerate() {
            if desc.role.defined_at_start() {
                let values: Vec<f32> = (0..desc.numel())
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                compiled.write(
                    &gpu,
                    webqlora::graph::TensorId::from_index(t),
                    bytemuck::cast_slice(&values),
                )?;
            }
        }
        match pollster::block_on(compiled.run_profiled(&gpu))? {
            Some(times) => {
                println!("GPU time per node:");
                for (label, kernel, ms) in &times {
                    println!("  {label:<16} {kernel:<18} {ms:>9.3} ms");
                }
                let total: f64 = times.iter().map(|t| t.2).sum();
                println!("  total {total:.3} ms");
            }
            None => {
                compiled.run(&gpu);
                gpu.poll_wait();
                println!("ran (this adapter has no timestamp queries)");
            }
        }
    }
    Ok(())
}
