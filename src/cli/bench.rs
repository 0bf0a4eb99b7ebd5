//! `webqlora bench kernels`: each kernel at SmolLM2-135M shapes (T = 1024 tokens), median GPU
//! time over repeated runs (timestamp queries, else wall clock), GFLOP/s and GB/s.

use std::time::Instant;

use clap::{Args, Subcommand};
use webqlora::gpu::Gpu;
use webqlora::graph::{CompiledGraph, DType, Graph, TensorId};
use webqlora::ops::cross_entropy::{chunk_for, lm_head_loss};
use webqlora::ops::matmul::{matmul, Operand};
use webqlora::ops::nf4_matmul::{self, upload_bytes, Nf4Weight};
use webqlora::quant::nf4::Nf4Tensor;

use super::GpuArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Kernels at SmolLM2-135M shapes.
    Kernels {
        /// Tokens (rows) per matmul.
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        /// Timed runs per kernel (the median is reported).
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Only kernels whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// One JSON object a line instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// One measured kernel.
struct Row {
    kernel: String,
    m: usize,
    k: usize,
    n: usize,
    median_ms: f64,
    flops: f64,
    bytes: f64,
}

/// Deterministic values in [-1, 1) without a random number crate.
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Median GPU milliseconds of the graph's single node over `runs` runs.
fn time_graph(gpu: &Gpu, compiled: &CompiledGraph, runs: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs + 1 {
        let ms = match pollster::block_on(compiled.run_profiled(gpu))? {
            Some(t) => t.iter().map(|(_, _, ms)| ms).sum(),
            None => {
                let start = Instant::now();
                compiled.run(gpu);
                gpu.poll_wait();
                start.elapsed().as_secs_f64() * 1e3
            }
        };
        if run > 0 {
            times.push(ms); // the first run pays for pipeline compilation
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn fill(gpu: &Gpu, compiled: &CompiledGraph, t: TensorId, seed: u64) -> anyhow::Result<()> {
    let n = compiled.graph.tensor(t).numel();
    compiled.write(gpu, t, bytemuck::cast_slice(&pseudo_random(n, seed)))?;
    Ok(())
}

fn bench_matmul(gpu: &Gpu, t: usize, k: usize, n: usize, runs: usize) -> anyhow::Result<Row> {
    let mut g = Graph::new();
    let x = g.input("x", &[t, k], DType::F32);
    let w = g.input("w", &[n, k], DType::F32);
    let y = matmul(&mut g, "y", Operand::plain(x), Operand::transposed(w), 1.0)?;
    g.mark_output(y);
    let compiled = CompiledGraph::new(gpu, g)?;
    fill(gpu, &compiled, x, 1)?;
    fill(gpu, &compiled, w, 2)?;
    Ok(Row {
        kernel: "matmul_f32 (X·Wᵀ)".into(),
        m: t,
        k,
        n,
        median_ms: time_graph(gpu, &compiled, runs)?,
        flops: 2.0 * (t * k * n) as f64,
        bytes: 4.0 * (t * k + n * k + t * n) as f64,
    })
}

fn bench_nf4(
    gpu: &Gpu,
    t: usize,
    n_in: usize,
    out: usize,
    backward: bool,
    runs: usize,
) -> anyhow::Result<Row> {
    let weight = pseudo_random(out * n_in, 3)
        .iter()
        .map(|v| v * 0.05)
        .collect::<Vec<_>>();
    let q = Nf4Tensor::quantize(&weight, &[out, n_in], 64, true)?;
    let mut g = Graph::new();
    let w = Nf4Weight::declare(&mut g, "w", [out, n_in], 64);
    let (x, y, name, (m, k, n)) = if backward {
        let dy = g.input("dy", &[t, out], DType::F32);
        (
            dy,
            nf4_matmul::backward(&mut g, "dx", dy, &w)?,
            "nf4_backward (dY·W)",
            (t, out, n_in),
        )
    } else {
        let x = g.input("x", &[t, n_in], DType::F32);
        (
            x,
            nf4_matmul::forward(&mut g, "y", x, &w)?,
            "nf4_forward (X·Wᵀ)",
            (t, n_in, out),
        )
    };
    g.mark_output(y);
    let compiled = CompiledGraph::new(gpu, g)?;
    fill(gpu, &compiled, x, 4)?;
    let (codes, absmax) = upload_bytes(&q);
    compiled.write(gpu, w.codes, &codes)?;
    compiled.write(gpu, w.absmax, &absmax)?;
    Ok(Row {
        kernel: name.into(),
        m,
        k,
        n,
        median_ms: time_graph(gpu, &compiled, runs)?,
        flops: 2.0 * (t * n_in * out) as f64,
        bytes: 4.0 * (m * k + m * n) as f64 + (codes.len() + absmax.len()) as f64,
    })
}

/// The fused lm-head + cross-entropy forward and backward (three vocabulary-sized products:
/// logits, recomputed logits, d hidden) at `vocab`, logits in 32 MiB chunks.
fn bench_lm_head(
    gpu: &Gpu,
    t: usize,
    dim: usize,
    vocab: usize,
    runs: usize,
) -> anyhow::Result<Row> {
    let mut g = Graph::new();
    let h = g.input("h", &[t, dim], DType::F32);
    let w = g.param("embed_tokens", &[vocab, dim], DType::F32);
    let targets = g.input("targets", &[t], DType::U32);
    let out = lm_head_loss(&mut g, "loss", h, w, targets, chunk_for(t, vocab, 32 << 20))?;
    g.mark_output(out.loss);
    g.mark_output(out.d_hidden);
    let compiled = CompiledGraph::new(gpu, g)?;
    fill(gpu, &compiled, h, 5)?;
    fill(gpu, &compiled, w, 6)?;
    let ids: Vec<u32> = (0..t as u32).map(|i| i * 7919 % vocab as u32).collect();
    compiled.write(gpu, targets, bytemuck::cast_slice(&ids))?;
    Ok(Row {
        kernel: format!(
            "lm_head+ce fwd+bwd (peak {} MiB)",
            compiled.peak_bytes() >> 20
        ),
        m: t,
        k: dim,
        n: vocab,
        median_ms: time_graph(gpu, &compiled, runs)?,
        flops: 3.0 * 2.0 * (t * dim * vocab) as f64,
        bytes: 4.0 * (2 * t * dim + vocab * dim + t) as f64,
    })
}

/// SmolLM2-135M: hidden 576, kv 192, intermediate 1536.
const LINEARS: [(usize, usize); 4] = [(576, 576), (576, 192), (576, 1536), (1536, 576)];

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchWhat::Kernels {
        tokens,
        runs,
        filter,
        json,
    } = args.what;
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let adapter = format!("{} ({:?})", gpu.info.name, gpu.info.backend);
    let wanted = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    let mut rows = Vec::new();
    if wanted("matmul_f32") {
        rows.push(bench_matmul(&gpu, tokens, 576, 1536, runs)?);
        rows.push(bench_matmul(&gpu, tokens, 1536, 576, runs)?);
    }
    for backward in [false, true] {
        let name = if backward {
            "nf4_backward"
        } else {
            "nf4_forward"
        };
        if wanted(name) {
            for (n_in, out) in LINEARS {
                rows.push(bench_nf4(&gpu, tokens, n_in, out, backward, runs)?);
            }
        }
    }
    if wanted("lm_head") {
        // Tens of seconds a run on a software device: two runs are enough for a median.
        rows.push(bench_lm_head(&gpu, tokens, 576, 49152, runs.min(2))?);
    }
    if json {
        for r in &rows {
            println!(
                "{}",
                serde_json::json!({
                    "kernel": r.kernel, "m": r.m, "k": r.k, "n": r.n,
                    "median_ms": r.median_ms,
                    "gflops": r.flops / r.median_ms / 1e6,
                    "gbps": r.bytes / r.median_ms / 1e6,
                    "adapter": adapter,
                })
            );
        }
        return Ok(());
    }
    println!("adapter: {adapter}");
    println!("| kernel | M | K | N | median ms | GFLOP/s | GB/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.2} | {:.2} |",
            r.kernel,
            r.m,
            r.k,
            r.n,
            r.median_ms,
            r.flops / r.median_ms / 1e6,
            r.bytes / r.median_ms / 1e6
        );
    }
    Ok(())
}
