//! The lm-head fused with cross-entropy over vocabulary chunks: loss and d hidden without ever
//! storing [rows, vocab] logits (SmolLM2's 1024 × 49152 would be 192 MiB, over WebGPU's
//! 128 MiB binding limit).
//!
//! Forward, per chunk of the vocabulary: logits = hidden · W[v0..v1]ᵀ, folded into each row's
//! online-softmax statistics; then the mean loss over counted rows. Backward, per chunk: the
//! logits are recomputed, turned into d loss / d logits in place, and d hidden += dlogits ·
//! W[v0..v1]. The loss is the graph's end, so its upstream gradient is 1.

use super::matmul::{matmul, matmul_into, Operand};
use crate::graph::{
    shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

/// A target that carries no loss (transformers' -100).
pub const IGNORE: u32 = u32::MAX;

const fn stats_bindings(stats: Access) -> [Binding; 3] {
    [
        Binding {
            name: "logits",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "targets",
            access: Access::Read,
            dtype: DType::U32,
        },
        Binding {
            name: "stats",
            access: stats,
            dtype: DType::F32,
        },
    ]
}

static STATS_START: [Binding; 3] = stats_bindings(Access::Write);
static STATS_FOLD: [Binding; 3] = stats_bindings(Access::ReadWrite);

/// The first chunk: starts the statistics.
pub static STATS_FIRST: Kernel = Kernel {
    name: "ce_stats_first",
    shader: &shaders::CROSS_ENTROPY_STATS,
    entry: "ce_stats",
    variants: &[],
    textures: &[],
    bindings: &STATS_START,
};

/// Later chunks: fold into the statistics.
pub static STATS: Kernel = Kernel {
    name: "ce_stats",
    shader: &shaders::CROSS_ENTROPY_STATS,
    entry: "ce_stats",
    variants: &[],
    textures: &[],
    bindings: &STATS_FOLD,
};

pub static LOSS: Kernel = Kernel {
    name: "ce_loss",
    shader: &shaders::CROSS_ENTROPY_LOSS,
    entry: "ce_loss",
    variants: &[],
    textures: &[],
    bindings: &[
        Binding {
            name: "stats",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "targets",
            access: Access::Read,
            dtype: DType::U32,
        },
        Binding {
            name: "loss",
            access: Access::Write,
            dtype: DType::F32,
        },
    ],
};

pub static GRAD: Kernel = Kernel {
    name: "ce_grad",
    shader: &shaders::CROSS_ENTROPY_GRAD,
    entry: "ce_grad",
    variants: &[],
    textures: &[],
    bindings: &[
        Binding {
            name: "logits",
            access: Access::ReadWrite,
            dtype: DType::F32,
        },
        Binding {
            name: "targets",
            access: Access::Read,
            dtype: DType::U32,
        },
        Binding {
            name: "stats",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "loss",
            access: Access::Read,
            dtype: DType::F32,
        },
    ],
};

/// What the fused loss adds to a graph.
#[derive(Clone, Copy, Debug)]
pub struct LmHeadLoss {
    /// [2]: the mean loss over counted rows, and how many rows counted.
    pub loss: TensorId,
    /// d loss / d hidden, [rows, dim].
    pub d_hidden: TensorId,
}

/// Bytes of one chunk of logits [rows, chunk] by default: small enough that two of them
/// (logits and the next chunk's) stay well under the memory a step needs otherwise.
pub const DEFAULT_CHUNK_BYTES: u64 = 16 << 20;

/// ce_stats loops over a chunk twice in one invocation; llvmpipe ends an invocation's loops
/// after 65,535 iterations, so a chunk stays well below half of that.
pub const MAX_CHUNK: usize = 16384;

/// Logits bytes a chunk may take on graphs with texture kernels: there each chunk's logits
/// gradient is also packed into a texture and its weight rows twice, so smaller chunks keep the
/// planned peak down (the work is the same).
pub const TEXTURE_CHUNK_BYTES: u64 = 1 << 20;

/// The chunk budget for `g`.
pub fn chunk_bytes(g: &Graph) -> u64 {
    if g.texture_kernels.is_some() {
        TEXTURE_CHUNK_BYTES
    } else {
        DEFAULT_CHUNK_BYTES
    }
}

/// Bytes of lm-head weight rows a chunk may take on graphs with texture kernels, where they
/// are packed into a texture (twice a step): with few rows (training on the scored rows only)
/// the logits budget alone would allow chunks of thousands of weight rows.
pub const TEXTURE_WEIGHT_CHUNK_BYTES: u64 = 4 << 20;

/// The chunk for an lm-head of [vocab, dim] over `rows` on `g`: logits under `chunk_bytes(g)`
/// and, on texture graphs, weight rows under TEXTURE_WEIGHT_CHUNK_BYTES.
pub fn chunk_for_graph(g: &Graph, rows: usize, vocab: usize, dim: usize) -> usize {
    let chunk = chunk_for(rows, vocab, chunk_bytes(g));
    if g.texture_kernels.is_some() {
        chunk.min(chunk_for(dim, vocab, TEXTURE_WEIGHT_CHUNK_BYTES))
    } else {
        chunk
    }
}

/// The largest chunk of vocabulary rows whose logits [rows, chunk] fit in `max_bytes`
/// (a multiple of 64 where possible), at most MAX_CHUNK.
pub fn chunk_for(rows: usize, vocab: usize, max_bytes: u64) -> usize {
    let fit = (max_bytes / (4 * rows.max(1) as u64)) as usize;
    let chunk = if fit >= 64 { fit / 64 * 64 } else { fit.max(1) };
    chunk.min(vocab).min(MAX_CHUNK)
}

/// Mean cross-entropy of `hidden` [rows, dim] through the lm-head `weight` [vocab, dim]
/// against `targets` [rows] (u32 ids, IGNORE for none), `chunk` vocabulary rows at a time.
pub fn lm_head_loss(
    g: &mut Graph,
    name: &str,
    hidden: TensorId,
    weight: TensorId,
    targets: TensorId,
    chunk: usize,
) -> Result<LmHeadLoss, GraphError> {
    let hs = g.tensor(hidden).shape.clone();
    let ws = g.tensor(weight).shape.clone();
    let rows = g.tensor(targets).numel();
    let bad = |detail: String| GraphError::ShapeMismatch {
        op: name.into(),
        detail,
    };
    let (&[h_rows, dim], &[vocab, w_dim]) = (&hs[..], &ws[..]) else {
        return Err(bad(format!(
            "hidden {} and weight {} must be matrices",
            shape_str(&hs),
            shape_str(&ws)
        )));
    };
    if dim != w_dim || h_rows != rows || chunk == 0 || chunk > MAX_CHUNK {
        return Err(bad(format!(
            "hidden {}, lm-head weight {} and {rows} targets (chunk {chunk}, at most {MAX_CHUNK}) do not agree",
            shape_str(&hs),
            shape_str(&ws)
        )));
    }
    let starts: Vec<usize> = (0..vocab).step_by(chunk).collect();
    let width = |v0: usize| chunk.min(vocab - v0);
    let logits_of = |g: &mut Graph, label: String, v0: usize| {
        let w_chunk = Operand::transposed(weight).rows(v0, width(v0));
        matmul(g, &label, Operand::plain(hidden), w_chunk, 1.0)
    };

    let stats = g.temp(&format!("{name}.stats"), &[rows, 3], DType::F32);
    for (c, &v0) in starts.iter().enumerate() {
        let logits = logits_of(g, format!("{name}.logits[{v0}..]"), v0)?;
        let params = Params::new()
            .u32(rows as u32)
            .u32(width(v0) as u32)
            .u32(v0 as u32)
            .u32((c == 0) as u32);
        let kernel = if c == 0 { &STATS_FIRST } else { &STATS };
        let label = format!("{name}.stats[{v0}..]");
        g.push(
            label,
            kernel,
            &[logits, targets, stats],
            params,
            Dispatch::linear(rows, 64),
        )?;
    }
    let loss = g.temp(name, &[2], DType::F32);
    let params = Params::new().u32(rows as u32);
    g.push(
        name,
        &LOSS,
        &[stats, targets, loss],
        params,
        Dispatch::Grid([1, 1, 1]),
    )?;

    let mut d_hidden = None;
    for &v0 in &starts {
        let dlogits = logits_of(g, format!("{name}.dlogits[{v0}..]"), v0)?;
        let params = Params::new()
            .u32(rows as u32)
            .u32(width(v0) as u32)
            .u32(v0 as u32);
        let label = format!("{name}.grad[{v0}..]");
        let dispatch = Dispatch::linear(rows * width(v0), 64);
        g.push(
            label,
            &GRAD,
            &[dlogits, targets, stats, loss],
            params,
            dispatch,
        )?;
        let w_chunk = Operand::plain(weight).rows(v0, width(v0));
        let label = format!("{name}.d_hidden[{v0}..]");
        match d_hidden {
            None => {
                d_hidden = Some(matmul(
                    g,
                    &format!("{name}.d_hidden"),
                    Operand::plain(dlogits),
                    w_chunk,
                    1.0,
                )?)
            }
            Some(dh) => matmul_into(g, &label, dh, Operand::plain(dlogits), w_chunk, 1.0)?,
        }
    }
    Ok(LmHeadLoss {
        loss,
        d_hidden: d_hidden.expect("vocab > 0"),
    })
}

/// CPU reference in f64: (mean loss, counted rows, d hidden).
pub fn cpu_lm_head_loss(
    hidden: &[f64],
    weight: &[f64],
    targets: &[u32],
    dim: usize,
) -> (f64, usize, Vec<f64>) {
    let vocab = weight.len() / dim;
    let counted = targets.iter().filter(|&&t| t != IGNORE).count();
    let mut loss = 0.0;
    let mut dh = vec![0.0; hidden.len()];
    for (row, &t) in targets.iter().enumerate() {
        if t == IGNORE {
            continue;
        }
        let h = &hidden[row * dim..(row + 1) * dim];
        let logits: Vec<f64> = weight
            .chunks_exact(dim)
            .map(|w| w.iter().zip(h).map(|(a, b)| a * b).sum())
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        loss += lse - logits[t as usize];
        for v in 0..vocab {
            let d = ((logits[v] - lse).exp() - if v == t as usize { 1.0 } else { 0.0 })
                / counted as f64;
            for c in 0..dim {
                dh[row * dim + c] += d * weight[v * dim + c];
            }
        }
    }
    let mean = if counted > 0 {
        loss / counted as f64
    } else {
        0.0
    };
    (mean, counted, dh)
}
