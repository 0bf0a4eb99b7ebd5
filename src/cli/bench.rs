//! `webqlora bench kernels`: each kernel at SmolLM2-135M shapes (T = 1024 tokens), median GPU
//! time over repeated runs (timestamp queries, else wall clock), GFLOP/s and GB/s.

use std::time::Instant;

use clap::{Args, Subcommand};
use webqlora::gpu::Gpu;
use webqlora::graph::{CompiledGraph, DType, Graph, TensorId};
use webqlora::ops::adamw::AdamW;
use webqlora::ops::attention::{Scores, TokenMask};
use webqlora::ops::cross_entropy::{chunk_for_graph, lm_head_loss};
use webqlora::ops::matmul::{matmul, Operand};
use webqlora::ops::nf4_matmul::{self, upload_bytes, Nf4Weight};
use webqlora::ops::swiglu::Activation;
use webqlora::ops::{attention, embedding, grad_norm, residual, rmsnorm, rope, swiglu};
use webqlora::quant::nf4::Nf4Tensor;

use super::common::median;
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
    /// One QLoRA training step of a real model: planned peak memory and tokens/s.
    Step(super::bench_step::StepArgs),
    /// Kernels at SmolLM2-135M shapes.
    Kernels {
        /// Tokens (rows) per matmul.
        #[arg(long, default_value_t = 1024, value_parser = super::common::at_least_one)]
        tokens: usize,
        /// Timed runs per kernel (the median is reported).
        #[arg(long, default_value_t = 7, value_parser = super::common::at_least_one)]
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

/// Median milliseconds of the graph (its product and the packs before it) over `runs` runs:
/// GPU time from timestamp queries, except on software devices, where lavapipe's timestamps
/// proved unreliable (passes overlap their neighbours' stamps): there the wall time of a
/// submission and its wait.
fn time_graph(gpu: &Gpu, compiled: &CompiledGraph, runs: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(runs);
    let wall_clock = gpu.class == webqlora::gpu::DeviceClass::Software;
    for run in 0..runs + 1 {
        let profiled = if wall_clock {
            None
        } else {
            pollster::block_on(compiled.run_profiled(gpu))?
        };
        let ms = match profiled {
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
    Ok(median(&mut times))
}

/// Build a graph, fill every input and param (f32: values in [-1, 1); u32: ids below 1000;
/// NF4: arbitrary codes) unless `overrides` gives the bytes, and time it.
#[allow(clippy::too_many_arguments)]
fn bench_graph(
    gpu: &Gpu,
    kernel: &str,
    (m, k, n): (usize, usize, usize),
    flops: f64,
    bytes: f64,
    runs: usize,
    build: impl FnOnce(&mut Graph) -> anyhow::Result<Vec<(TensorId, Vec<u8>)>>,
) -> anyhow::Result<Row> {
    let mut g = Graph::for_device(gpu);
    let overrides = build(&mut g)?;
    // Whatever the last node writes is the result: keep it so nothing is dead.
    let last = g.nodes.last().expect("a graph to time").clone();
    for (t, access) in last.uses() {
        if access.writes() && !g.tensor(t).role.defined_at_start() {
            g.mark_output(t);
        }
    }
    let compiled = CompiledGraph::new(gpu, g)?;
    for (i, desc) in compiled.graph.tensors.iter().enumerate() {
        let t = TensorId::from_index(i);
        if !desc.role.defined_at_start() {
            continue;
        }
        let data: Vec<u8> = match overrides.iter().find(|(o, _)| *o == t) {
            Some((_, bytes)) => bytes.clone(),
            None => match desc.dtype {
                DType::U32 => (0..desc.numel() as u32)
                    .flat_map(|i| (i * 7919 % 1000).to_le_bytes())
                    .collect(),
                DType::F32 => bytemuck::cast_slice(&pseudo_random(desc.numel(), i as u64)).to_vec(),
                DType::Nf4 | DType::F16 => {
                    let words = desc.bytes() as usize / 4;
                    bytemuck::cast_slice(&pseudo_random(words, i as u64)).to_vec()
                }
            },
        };
        compiled.write(gpu, t, &data)?;
    }
    Ok(Row {
        kernel: kernel.into(),
        m,
        k,
        n,
        median_ms: time_graph(gpu, &compiled, runs)?,
        flops,
        bytes,
    })
}

/// SmolLM2-135M's shapes in a training step at `t` tokens (4 sequences when t allows): hidden
/// 576, 9 heads of 64 with 3 kv heads, MLP 1536, vocabulary 49152, LoRA r 16 on all seven
/// linear modules of 30 layers (4.88M trainable values).
struct StepShapes {
    runs: usize,
    t: usize,
    c: usize,
    heads: usize,
    kv: usize,
    d: usize,
    mlp: usize,
    vocab: usize,
    seq: usize,
    lora_values: usize,
}

/// Bytes of an f32.
const F: f64 = 4.0;

/// The kernel groups of a training step besides the products, each with the names `--filter`
/// matches it by.
const STEP_GROUPS: [(&[&str], StepGroup); 8] = [
    (&["rmsnorm"], norm_rows),
    (&["rope"], rope_rows),
    (&["attention"], attention_rows),
    (&["swiglu"], swiglu_rows),
    (&["residual"], residual_rows),
    (&["embedding"], embedding_rows),
    (&["nf4_matvec"], nf4_matvec_rows),
    (&["adamw", "grad_norm"], optimizer_rows),
];

type StepGroup = fn(&Gpu, &StepShapes) -> anyhow::Result<Vec<Row>>;

/// The other kernels of a SmolLM2-135M training step at `t` tokens: the groups `wanted` asks for.
fn bench_step_kernels(
    gpu: &Gpu,
    t: usize,
    runs: usize,
    wanted: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<Row>> {
    let s = StepShapes {
        runs,
        t,
        c: 576,
        heads: 9,
        kv: 3,
        d: 64,
        mlp: 1536,
        vocab: 49152,
        seq: if t.is_multiple_of(4) { t / 4 } else { t },
        lora_values: 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536)),
    };
    let mut rows = Vec::new();
    for (names, group) in STEP_GROUPS {
        if names.iter().any(|n| wanted(n)) {
            rows.extend(group(gpu, &s)?);
        }
    }
    Ok(rows)
}

fn norm_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes { runs, t, c, .. } = s;
    let mut rows = Vec::new();
    rows.push(bench_graph(
        gpu,
        "rmsnorm_forward",
        (t, c, 1),
        4.0 * (t * c) as f64,
        F * (2 * t * c) as f64,
        runs,
        |g| {
            let x = g.input("x", &[t, c], DType::F32);
            let w = g.param("w", &[c], DType::F32);
            rmsnorm::forward(g, "y", x, w, 1e-5)?;
            Ok(vec![])
        },
    )?);
    rows.push(bench_graph(
        gpu,
        "rmsnorm_backward",
        (t, c, 1),
        7.0 * (t * c) as f64,
        F * (3 * t * c) as f64,
        runs,
        |g| {
            let x = g.input("x", &[t, c], DType::F32);
            let dy = g.input("dy", &[t, c], DType::F32);
            let w = g.param("w", &[c], DType::F32);
            let rstd = g.input("rstd", &[t], DType::F32);
            rmsnorm::backward(g, "dx", dy, x, w, rstd)?;
            Ok(vec![])
        },
    )?);
    Ok(rows)
}

fn rope_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes {
        runs,
        t,
        heads,
        d,
        seq,
        ..
    } = s;
    let mut rows = Vec::new();
    rows.push(bench_graph(
        gpu,
        "rope",
        (t, heads, d),
        6.0 * (t * heads * d / 2) as f64,
        F * (2 * t * heads * d) as f64,
        runs,
        |g| {
            let q = g.input("q", &[t, heads, d], DType::F32);
            let table = g.param("cos_sin", &[seq, d / 2, 2], DType::F32);
            rope::rope(
                g,
                "q_rot",
                q,
                table,
                rope::Positions {
                    seq_len: seq,
                    pos_offset: 0,
                },
                false,
            )?;
            Ok(vec![])
        },
    )?);
    Ok(rows)
}

fn attention_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes {
        runs,
        t,
        heads,
        kv,
        d,
        seq,
        ..
    } = s;
    let mut rows = Vec::new();
    // Causal: about half the score matrix, q·k and p·v (2 × 2 × head_dim flops each).
    let pairs = (t / seq) * seq * (seq + 1) / 2 * heads;
    let bytes = F * (2 * t * heads * d + 2 * t * kv * d) as f64;
    let qkv = |g: &mut Graph| attention::Qkv {
        q: g.input("q", &[t, heads, d], DType::F32),
        k: g.input("k", &[t, kv, d], DType::F32),
        v: g.input("v", &[t, kv, d], DType::F32),
    };
    let name = format!("attention_forward ({} x {seq})", t / seq);
    rows.push(bench_graph(
        gpu,
        &name,
        (t, seq, d),
        4.0 * (pairs * d) as f64,
        bytes,
        runs,
        |g| {
            let qkv = qkv(g);
            attention::forward(g, "attn", qkv, seq, Scores::standard(d))?;
            Ok(vec![])
        },
    )?);
    let name = format!("attention_backward ({} x {seq})", t / seq);
    rows.push(bench_graph(
        gpu,
        &name,
        (t, seq, d),
        2.0 * 8.0 * (pairs * d) as f64,
        2.0 * bytes,
        runs,
        |g| {
            let qkv = qkv(g);
            let saved = attention::Saved {
                out: g.input("out", &[t, heads, d], DType::F32),
                lse: g.input("lse", &[t, heads], DType::F32),
            };
            let d_out = g.input("d_out", &[t, heads, d], DType::F32);
            attention::backward(g, "d_attn", qkv, saved, d_out, seq, Scores::standard(d))?;
            Ok(vec![])
        },
    )?);
    // The same examples packed end to end in one row (`--packing`): the masked kernels
    // over the same pairs of tokens.
    let mask_values = TokenMask::values(&TokenMask::sequences(t, seq));
    let mask = |g: &mut Graph| {
        let m = g.input("mask", &[t, 4], DType::F32);
        (m, vec![(m, bytemuck::cast_slice(&mask_values).to_vec())])
    };
    let name = format!("attention_packed_forward (1 x {t}, examples of {seq})");
    rows.push(bench_graph(
        gpu,
        &name,
        (t, seq, d),
        4.0 * (pairs * d) as f64,
        bytes,
        runs,
        |g| {
            let qkv = qkv(g);
            let (m, values) = mask(g);
            attention::forward_masked(g, "attn", qkv, m, Scores::standard(d))?;
            Ok(values)
        },
    )?);
    let name = format!("attention_packed_backward (1 x {t}, examples of {seq})");
    rows.push(bench_graph(
        gpu,
        &name,
        (t, seq, d),
        2.0 * 8.0 * (pairs * d) as f64,
        2.0 * bytes,
        runs,
        |g| {
            let qkv = qkv(g);
            let (m, values) = mask(g);
            let saved = attention::Saved {
                out: g.input("out", &[t, heads, d], DType::F32),
                lse: g.input("lse", &[t, heads], DType::F32),
            };
            let d_out = g.input("d_out", &[t, heads, d], DType::F32);
            attention::backward_masked(g, "d_attn", qkv, saved, d_out, m, Scores::standard(d))?;
            Ok(values)
        },
    )?);
    Ok(rows)
}

fn swiglu_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes { runs, t, mlp, .. } = s;
    let mut rows = Vec::new();
    rows.push(bench_graph(
        gpu,
        "swiglu_forward",
        (t, mlp, 1),
        5.0 * (t * mlp) as f64,
        F * (3 * t * mlp) as f64,
        runs,
        |g| {
            let gate = g.input("gate", &[t, mlp], DType::F32);
            let up = g.input("up", &[t, mlp], DType::F32);
            swiglu::forward(g, "act", gate, up, Activation::Silu)?;
            Ok(vec![])
        },
    )?);
    rows.push(bench_graph(
        gpu,
        "swiglu_backward",
        (t, mlp, 1),
        10.0 * (t * mlp) as f64,
        F * (5 * t * mlp) as f64,
        runs,
        |g| {
            let gate = g.input("gate", &[t, mlp], DType::F32);
            let up = g.input("up", &[t, mlp], DType::F32);
            let d_out = g.input("d_act", &[t, mlp], DType::F32);
            swiglu::backward(g, "d", d_out, gate, up, Activation::Silu)?;
            Ok(vec![])
        },
    )?);
    Ok(rows)
}

fn residual_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes { runs, t, c, .. } = s;
    let mut rows = Vec::new();
    rows.push(bench_graph(
        gpu,
        "residual_add",
        (t, c, 1),
        (t * c) as f64,
        F * (3 * t * c) as f64,
        runs,
        |g| {
            let a = g.input("a", &[t, c], DType::F32);
            let b = g.input("b", &[t, c], DType::F32);
            residual::add(g, "h", a, b)?;
            Ok(vec![])
        },
    )?);
    Ok(rows)
}

fn embedding_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes {
        runs, t, c, vocab, ..
    } = s;
    let mut rows = Vec::new();
    rows.push(bench_graph(
        gpu,
        "embedding",
        (t, c, vocab),
        0.0,
        F * (2 * t * c) as f64,
        runs,
        |g| {
            let ids = g.input("input_ids", &[t], DType::U32);
            let table = g.param("embed_tokens", &[vocab, c], DType::F32);
            embedding::gather(g, "h0", ids, table)?;
            Ok(vec![])
        },
    )?);
    Ok(rows)
}

fn nf4_matvec_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes { runs, .. } = s;
    let mut rows = Vec::new();
    for (n_in, out) in LINEARS {
        let bytes = (out * n_in / 2 + out * n_in / 16 + 4 * (n_in + out)) as f64;
        rows.push(bench_graph(
            gpu,
            "nf4_matvec (decode)",
            (1, n_in, out),
            2.0 * (n_in * out) as f64,
            bytes,
            runs,
            |g| {
                let x = g.input("x", &[n_in], DType::F32);
                let w = Nf4Weight::declare(g, "w", [out, n_in], 64);
                nf4_matmul::matvec(g, "y", x, &w)?;
                Ok(vec![])
            },
        )?);
    }
    Ok(rows)
}

fn optimizer_rows(gpu: &Gpu, s: &StepShapes) -> anyhow::Result<Vec<Row>> {
    let &StepShapes {
        runs, lora_values, ..
    } = s;
    let mut rows = Vec::new();
    let n = lora_values;
    rows.push(bench_graph(
        gpu,
        "grad_norm + clip",
        (n, 1, 1),
        2.0 * n as f64,
        F * n as f64,
        runs,
        |g| {
            let grad = g.input("grad", &[n], DType::F32);
            grad_norm::clip(g, "grad_scale", &[grad], 1.0)?;
            Ok(vec![])
        },
    )?);
    let opt = AdamW::default();
    rows.push(bench_graph(
        gpu,
        "adamw",
        (n, 1, 1),
        12.0 * n as f64,
        F * (7 * n) as f64,
        runs,
        |g| {
            let p = g.param("lora", &[n], DType::F32);
            let grad = g.input("grad", &[n], DType::F32);
            let m = g.param("m", &[n], DType::F32);
            let v = g.param("v", &[n], DType::F32);
            let hyper = g.input("hyper", &[4], DType::F32);
            let scale = g.param("grad_scale", &[1], DType::F32);
            opt.step(g, "adamw", p, grad, m, v, hyper, scale)?;
            let zeros = vec![0u8; 4 * n];
            Ok(vec![
                (hyper, bytemuck::cast_slice(&opt.hyper(1e-3, 1)).to_vec()),
                (scale, bytemuck::cast_slice(&[1.0f32]).to_vec()),
                (v, zeros),
            ])
        },
    )?);
    Ok(rows)
}

fn fill(gpu: &Gpu, compiled: &CompiledGraph, t: TensorId, seed: u64) -> anyhow::Result<()> {
    let n = compiled.graph.tensor(t).numel();
    compiled.write(gpu, t, bytemuck::cast_slice(&pseudo_random(n, seed)))?;
    Ok(())
}

fn bench_matmul(gpu: &Gpu, t: usize, k: usize, n: usize, runs: usize) -> anyhow::Result<Row> {
    bench_graph(
        gpu,
        "matmul_f32 (X·Wᵀ)",
        (t, k, n),
        2.0 * (t * k * n) as f64,
        4.0 * (t * k + n * k + t * n) as f64,
        runs,
        |g| {
            let x = g.input("x", &[t, k], DType::F32);
            let w = g.input("w", &[n, k], DType::F32);
            matmul(g, "y", Operand::plain(x), Operand::transposed(w), 1.0)?;
            Ok(vec![])
        },
    )
}

/// The LoRA products at rank `r`: x·Aᵀ ([t, k] by [r, k]: `lora_narrow`) and a gradient's
/// reduction over the tokens, Xᵀ·G ([t, k] by [t, r]: `lora_tn`).
fn bench_lora(
    gpu: &Gpu,
    t: usize,
    k: usize,
    r: usize,
    tn: bool,
    runs: usize,
) -> anyhow::Result<Row> {
    let (kernel, (m, kk, n)) = match tn {
        true => ("lora_tn (Xᵀ·G)", (k, t, r)),
        false => ("lora_narrow (X·Aᵀ)", (t, k, r)),
    };
    bench_graph(
        gpu,
        kernel,
        (m, kk, n),
        2.0 * (m * kk * n) as f64,
        4.0 * (m * kk + kk * n + m * n) as f64,
        runs,
        |g| {
            let x = g.input("x", &[t, k], DType::F32);
            let (a, b) = match tn {
                true => {
                    let grad = g.input("g", &[t, r], DType::F32);
                    (Operand::transposed(x), Operand::plain(grad))
                }
                false => {
                    let factor = g.input("a", &[r, k], DType::F32);
                    (Operand::plain(x), Operand::transposed(factor))
                }
            };
            matmul(g, "y", a, b, 1.0)?;
            Ok(vec![])
        },
    )
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
    let (codes, absmax) = upload_bytes(&q);
    let (name, (m, k, n)) = match backward {
        true => ("nf4_backward (dY·W)", (t, out, n_in)),
        false => ("nf4_forward (X·Wᵀ)", (t, n_in, out)),
    };
    let bytes = 4.0 * (m * k + m * n) as f64 + (codes.len() + absmax.len()) as f64;
    bench_graph(
        gpu,
        name,
        (m, k, n),
        2.0 * (t * n_in * out) as f64,
        bytes,
        runs,
        |g| {
            let w = Nf4Weight::declare(g, "w", [out, n_in], 64);
            match backward {
                true => {
                    let dy = g.input("dy", &[t, out], DType::F32);
                    nf4_matmul::backward(g, "dx", dy, &w)?;
                }
                false => {
                    let x = g.input("x", &[t, n_in], DType::F32);
                    nf4_matmul::forward(g, "y", x, &w)?;
                }
            }
            Ok(vec![(w.codes, codes), (w.absmax, absmax)])
        },
    )
}

/// The fused lm-head + cross-entropy forward and backward (three vocabulary-sized products:
/// logits, recomputed logits, d hidden) at `vocab`, in the chunks training uses.
fn bench_lm_head(
    gpu: &Gpu,
    t: usize,
    dim: usize,
    vocab: usize,
    runs: usize,
) -> anyhow::Result<Row> {
    let mut g = Graph::for_device(gpu);
    let h = g.input("h", &[t, dim], DType::F32);
    let w = g.param("embed_tokens", &[vocab, dim], DType::F32);
    let targets = g.input("targets", &[t], DType::U32);
    let chunk = chunk_for_graph(&g, t, vocab, dim);
    let out = lm_head_loss(&mut g, "loss", h, w, targets, chunk)?;
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
/// f32 peaks (TFLOP/s, the vendors' figures without sparsity) of GPUs whose adapter names say
/// which one they are; `WEBQLORA_PEAK_TFLOPS` gives any other device's.
const KNOWN_PEAKS: [(&str, f64); 8] = [
    ("H200", 67.0),
    ("H100 PCIe", 51.0),
    ("H100", 67.0),
    ("A100", 19.5),
    ("L4", 30.3),
    ("RTX 4090", 82.6),
    ("RTX 3090", 35.6),
    ("Tesla T4", 8.1),
];

/// The device's f32 peak in GFLOP/s, where known.
fn peak_gflops(adapter_name: &str) -> Option<f64> {
    if let Some(t) = std::env::var("WEBQLORA_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        return Some(t * 1e3);
    }
    KNOWN_PEAKS
        .iter()
        .find(|(name, _)| adapter_name.contains(name))
        .map(|(_, t)| t * 1e3)
}

const LINEARS: [(usize, usize); 4] = [(576, 576), (576, 192), (576, 1536), (1536, 576)];

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (tokens, runs, filter, json) = match args.what {
        BenchWhat::Kernels {
            tokens,
            runs,
            filter,
            json,
        } => (tokens, runs, filter, json),
        BenchWhat::Step(mut step) => {
            step.gpu = args.gpu;
            return super::bench_step::run(step);
        }
    };
    let gpu = Gpu::new_blocking(&args.gpu.request())?;
    let adapter = format!("{} ({:?})", gpu.info.name, gpu.info.backend);
    let wanted = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));
    let mut rows = Vec::new();
    if wanted("matmul_f32") {
        rows.push(bench_matmul(&gpu, tokens, 576, 1536, runs)?);
        rows.push(bench_matmul(&gpu, tokens, 1536, 576, runs)?);
    }
    for (tn, name) in [(false, "lora_narrow"), (true, "lora_tn")] {
        if wanted(name) {
            for k in [576, 1536] {
                rows.push(bench_lora(&gpu, tokens, k, 16, tn, runs)?);
            }
        }
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
    rows.extend(bench_step_kernels(&gpu, tokens, runs, &wanted)?);
    if wanted("lm_head") {
        // Tens of seconds a run on a software device: two runs are enough for a median.
        rows.push(bench_lm_head(&gpu, tokens, 576, 49152, runs.min(2))?);
    }
    let peak = peak_gflops(&gpu.info.name);
    if json {
        for r in &rows {
            let gflops = r.flops / r.median_ms / 1e6;
            println!(
                "{}",
                serde_json::json!({
                    "kernel": r.kernel, "m": r.m, "k": r.k, "n": r.n,
                    "median_ms": r.median_ms,
                    "gflops": gflops,
                    "gbps": r.bytes / r.median_ms / 1e6,
                    "peak_fraction": peak.map(|p| gflops / p),
                    "adapter": adapter,
                    "kernels": gpu.kernels.to_string(),
                })
            );
        }
        return Ok(());
    }
    println!("adapter: {adapter}");
    println!("kernels: {}", gpu.kernels);
    if let Some(p) = peak {
        println!("f32 peak: {:.1} TFLOP/s", p / 1e3);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_of_known_gpus() {
        if std::env::var_os("WEBQLORA_PEAK_TFLOPS").is_some() {
            return;
        }
        assert_eq!(peak_gflops("NVIDIA H200"), Some(67_000.0));
        assert_eq!(peak_gflops("NVIDIA H100 PCIe"), Some(51_000.0));
        assert_eq!(peak_gflops("NVIDIA H100 80GB HBM3"), Some(67_000.0));
        assert_eq!(peak_gflops("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
    }
}
