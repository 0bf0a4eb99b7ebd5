//! The lm-head fused with cross-entropy over vocabulary chunks: loss and d hidden without ever
//! storing [rows, vocab] logits (SmolLM2's 1024 × 49152 would be 192 MiB, over WebGPU's
//! 128 MiB binding limit), each chunk's logits computed once.
//!
//! Per chunk of the vocabulary: logits = hidden · W[v0..v1]ᵀ, folded into each row's
//! online-softmax statistics (max m, sum s of exp(logit - m), target logit) and turned in place
//! into exp(logit - m); d hidden, which holds the sum of those numerators times W for the
//! chunks before (against the old max), is rescaled by exp(m_old - m) where a row's max moved,
//! and gains numerators · W[v0..v1]. At the end: the mean loss over counted rows, and
//! d hidden = (that sum / s - W[target]) / counted. The loss is the graph's end, so its
//! upstream gradient is 1.

use super::embedding;
use super::matmul::{matmul, matmul_into, Operand};
use super::select;
use crate::graph::{
    shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

/// A target that carries no loss (transformers' -100).
pub const IGNORE: u32 = u32::MAX;

const fn online_bindings(stats: Access) -> [Binding; 4] {
    [
        Binding::read_write("logits", DType::F32),
        Binding::read("targets", DType::U32),
        Binding {
            name: "stats",
            access: stats,
            dtype: DType::F32,
        },
        Binding::write("rescale", DType::F32),
    ]
}

static ONLINE_START: [Binding; 4] = online_bindings(Access::Write);
static ONLINE_FOLD: [Binding; 4] = online_bindings(Access::ReadWrite);

/// The first chunk: starts the statistics.
pub static ONLINE_FIRST: Kernel = Kernel {
    name: "ce_online_first",
    shader: &shaders::CROSS_ENTROPY_ONLINE,
    entry: "ce_online",
    textures: &[],
    bindings: &ONLINE_START,
};

/// Later chunks: fold into the statistics.
pub static ONLINE: Kernel = Kernel {
    name: "ce_online",
    shader: &shaders::CROSS_ENTROPY_ONLINE,
    entry: "ce_online",
    textures: &[],
    bindings: &ONLINE_FOLD,
};

/// `ONLINE_FIRST` with a workgroup a row (the portable path; reductions in workgroup memory).
pub static ONLINE_FIRST_ROWS: Kernel = Kernel {
    name: "ce_online_first_rows",
    shader: &shaders::CROSS_ENTROPY_ONLINE,
    entry: "ce_online_rows",
    textures: &[],
    bindings: &ONLINE_START,
};

/// `ONLINE` with a workgroup a row.
pub static ONLINE_ROWS: Kernel = Kernel {
    name: "ce_online_rows",
    shader: &shaders::CROSS_ENTROPY_ONLINE,
    entry: "ce_online_rows",
    textures: &[],
    bindings: &ONLINE_FOLD,
};

/// `RESCALE` an invocation an element (the portable path).
pub static RESCALE_ELEMENTS: Kernel = Kernel {
    name: "ce_rescale_elements",
    shader: &shaders::CROSS_ENTROPY_RESCALE,
    entry: "ce_rescale_elements",
    textures: &[],
    bindings: RESCALE.bindings,
};

pub static RESCALE: Kernel = Kernel {
    name: "ce_rescale",
    shader: &shaders::CROSS_ENTROPY_RESCALE,
    entry: "ce_rescale",
    textures: &[],
    bindings: &[
        Binding::read_write("d_hidden", DType::F32),
        Binding::read("rescale", DType::F32),
    ],
};

pub static LOSS: Kernel = Kernel {
    name: "ce_loss",
    shader: &shaders::CROSS_ENTROPY_LOSS,
    entry: "ce_loss",
    textures: &[],
    bindings: &[
        Binding::read("stats", DType::F32),
        Binding::read("targets", DType::U32),
        Binding::write("loss", DType::F32),
    ],
};

pub static FINISH: Kernel = Kernel {
    name: "ce_finish",
    shader: &shaders::CROSS_ENTROPY_FINISH,
    entry: "ce_finish",
    textures: &[],
    bindings: &[
        Binding::read_write("d_hidden", DType::F32),
        Binding::read("targets", DType::U32),
        Binding::read("stats", DType::F32),
        Binding::read("loss", DType::F32),
        Binding::read("target_w", DType::F32),
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

/// ce_online loops over a chunk twice in one invocation; llvmpipe ends an invocation's loops
/// after 65,535 iterations, so a chunk stays well below half of that.
pub const MAX_CHUNK: usize = 16384;

/// Logits bytes a chunk may take on graphs with texture kernels: there each chunk's softmax
/// numerators are also packed into a texture, and its weight rows twice, so smaller chunks keep
/// the planned peak down; larger ones mean fewer nodes and fewer read-modify-writes of the
/// hidden states' gradient (one a chunk). At 4 MiB (1,024 of SmolLM2's vocabulary over 1,024
/// rows) a 4 × 256 step ran 4-6% faster than at 1 MiB and plans 6.7 MB more.
pub const TEXTURE_CHUNK_BYTES: u64 = 4 << 20;

/// The chunk budget for `g`.
pub fn chunk_bytes(g: &Graph) -> u64 {
    if select::cross_entropy(&g.kernels).packed_products {
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
    if select::cross_entropy(&g.kernels).packed_products {
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
    lm_head_loss_parts(g, name, hidden, &[weight], targets, chunk)
}

/// `lm_head_loss` for an lm-head declared as row parts [rows_i, dim] in order (a vocabulary
/// larger than one binding, `Graph::row_parts`), f32 or f16: the chunks run part by part (f16
/// rows widened to an f32 temporary a chunk at a time), and the target rows of d hidden's
/// last term are gathered from the parts.
pub fn lm_head_loss_parts(
    g: &mut Graph,
    name: &str,
    hidden: TensorId,
    parts: &[TensorId],
    targets: TensorId,
    chunk: usize,
) -> Result<LmHeadLoss, GraphError> {
    let hs = g.tensor(hidden).shape.clone();
    let part_rows: Vec<usize> = parts.iter().map(|&p| g.tensor(p).shape[0]).collect();
    let mut ws = g.tensor(parts[0]).shape.clone();
    if parts.iter().any(|&p| g.tensor(p).shape[1..] != ws[1..]) {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: "lm-head parts must share one width".into(),
        });
    }
    ws[0] = part_rows.iter().sum();
    let rows = g.tensor(targets).numel();
    let bad = |detail: String| GraphError::ShapeMismatch {
        op: name.into(),
        detail,
    };
    let (&[h_rows, dim], &[_, w_dim]) = (&hs[..], &ws[..]) else {
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
    let stats = g.temp(&format!("{name}.stats"), &[rows, 3], DType::F32);
    let rescale = g.temp(&format!("{name}.rescale"), &[rows], DType::F32);
    let mut d_hidden = None;
    // (part, first row of the part, chunk start within the part, chunk width) in order.
    let mut chunks = Vec::new();
    let mut first = 0;
    for (&part, &n) in parts.iter().zip(&part_rows) {
        chunks.extend(
            (0..n)
                .step_by(chunk)
                .map(|c0| (part, first, c0, chunk.min(n - c0))),
        );
        first += n;
    }
    for (part, first, c0, width) in chunks {
        let v0 = first + c0;
        // f16 rows as an f32 block; f32 rows in place.
        let (weight, rows_of) = match g.tensor(part).dtype {
            DType::F16 => {
                let label = format!("{name}.rows[{v0}..]");
                (embedding::widen_rows(g, &label, part, c0, width)?, None)
            }
            _ => (part, Some((c0, width))),
        };
        let w_rows = |op: Operand| match rows_of {
            Some((c0, width)) => op.rows(c0, width),
            None => op,
        };
        let label = format!("{name}.logits[{v0}..]");
        let h = Operand::plain(hidden);
        let numerators = matmul(g, &label, h, w_rows(Operand::transposed(weight)), 1.0)?;
        let first = d_hidden.is_none();
        let params = Params::new()
            .u32(rows as u32)
            .u32(width as u32)
            .u32(v0 as u32)
            .u32(first as u32);
        let portable = select::cross_entropy(&g.kernels).rows_per_workgroup;
        let (kernel, dispatch) = match (portable, first) {
            (true, true) => (&ONLINE_FIRST_ROWS, Dispatch::Linear(rows as u32)),
            (true, false) => (&ONLINE_ROWS, Dispatch::Linear(rows as u32)),
            (false, true) => (&ONLINE_FIRST, Dispatch::linear(rows, 64)),
            (false, false) => (&ONLINE, Dispatch::linear(rows, 64)),
        };
        let io = [numerators, targets, stats, rescale];
        let label = format!("{name}.softmax[{v0}..]");
        g.push(label, kernel, &io, params, dispatch)?;
        let (p, w) = (Operand::plain(numerators), w_rows(Operand::plain(weight)));
        match d_hidden {
            None => d_hidden = Some(matmul(g, &format!("{name}.d_hidden"), p, w, 1.0)?),
            Some(dh) => {
                let params = Params::new().u32(rows as u32).u32(dim as u32);
                let label = format!("{name}.rescale[{v0}..]");
                if portable {
                    let dispatch = Dispatch::linear(rows * dim, 256);
                    g.push(label, &RESCALE_ELEMENTS, &[dh, rescale], params, dispatch)?;
                } else {
                    let by_row = Dispatch::linear(rows, 64);
                    g.push(label, &RESCALE, &[dh, rescale], params, by_row)?;
                }
                matmul_into(g, &format!("{name}.d_hidden[{v0}..]"), dh, p, w, 1.0)?;
            }
        }
    }
    let d_hidden = d_hidden.expect("vocab > 0");

    let loss = g.temp(name, &[2], DType::F32);
    let params = Params::new().u32(rows as u32);
    let one = Dispatch::Grid([1, 1, 1]);
    g.push(name, &LOSS, &[stats, targets, loss], params, one)?;
    // IGNORE is the gather's ZERO_ROW: rows without a target gather zeros.
    let target_w = embedding::gather_parts(g, &format!("{name}.target_w"), targets, parts, 1.0)?;
    let params = Params::new().u32(rows as u32).u32(dim as u32);
    let io = [d_hidden, targets, stats, loss, target_w];
    let dispatch = Dispatch::linear(rows * dim, 64);
    g.push(format!("{name}.finish"), &FINISH, &io, params, dispatch)?;
    Ok(LmHeadLoss { loss, d_hidden })
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
