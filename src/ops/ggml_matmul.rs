//! Dequant-matmuls on a GGUF file's own codes (`--base gguf`): Y = X·Wᵀ, dX = dY·W and the
//! one-token matvec with W in any ggml block type (Q4_0 … Q8_0, Q2_K … Q6_K), decoded 32
//! values at a time into workgroup memory once per tile and never written to memory in f32.
//! A user trains on exactly the weights they downloaded, with no second quantization.
//! A LoRA adapter's term (s·x_a·Bᵀ forward, s·dy_b·A backward) rides in the same kernels as
//! more k steps of their tiles (`forward_lora`, `backward_lora`), as in the NF4 products.
//!
//! W's GPU layout is the file's blocks, each padded to whole u32 words (`upload_bytes`): the
//! padding keeps every block's words aligned for the kernels' byte reads; the codes and scales
//! are the file's bytes. The CPU reference is `quant::ggml::dequantize` (bit-identical to
//! gguf-py) followed by a plain product.

use super::nf4_matmul::{rows_of, LowRank};
use crate::graph::TensorId;
use crate::graph::{
    accumulating, shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params,
};
use crate::quant::ggml::GgmlType;
use crate::shaders;

const fn bindings(out_access: Access) -> [Binding; 5] {
    [
        Binding::read("x", DType::F32),
        Binding::read("w", DType::U32),
        Binding::read("lora_lhs", DType::F32),
        Binding::read("factor", DType::F32),
        Binding {
            name: "y",
            access: out_access,
            dtype: DType::F32,
        },
    ]
}

static WRITE: [Binding; 5] = bindings(Access::Write);

const fn kernel(name: &'static str, entry: &'static str, bindings: &'static [Binding]) -> Kernel {
    Kernel {
        name,
        shader: &shaders::GGML_MATMUL,
        entry,
        textures: &[],
        bindings,
    }
}

/// y = x · Wᵀ (+ s · x_a · Bᵀ)
pub static FORWARD: Kernel = kernel("ggml_matmul_forward", "ggml_matmul_forward", &WRITE);
/// dx = dy · W (+ s · dy_b · A) (added into dx with the ACCUMULATE constant)
pub static BACKWARD: Kernel = kernel("ggml_matmul_backward", "ggml_matmul_backward", &WRITE);
/// y = W · x (+ s · B · x_a) for one token.
pub static MATVEC: Kernel = kernel("ggml_matvec", "ggml_matvec", &WRITE);

/// A base weight [out, in] kept in its GGUF block type.
#[derive(Clone, Copy, Debug)]
pub struct GgmlWeight {
    /// The padded blocks, u32 [out, words a row].
    pub codes: TensorId,
    pub ty: GgmlType,
    /// [out, in]
    pub shape: [usize; 2],
}

/// u32 words a block of `ty` takes on the GPU (its bytes rounded up to whole words).
pub fn block_words(ty: GgmlType) -> usize {
    ty.block().1.div_ceil(4)
}

impl GgmlWeight {
    /// Declare the codes of a weight of `shape` [out, in] in block type `ty`, as param `name`.
    pub fn declare(
        g: &mut Graph,
        name: &str,
        shape: [usize; 2],
        ty: GgmlType,
    ) -> Result<GgmlWeight, GraphError> {
        let values = ty.block().0;
        if !ty.is_quantized() || !shape[1].is_multiple_of(values) {
            return Err(GraphError::ShapeMismatch {
                op: name.into(),
                detail: format!(
                    "a {} weight of {} needs rows of whole {values}-value blocks",
                    ty.name(),
                    shape_str(&shape)
                ),
            });
        }
        let words = shape[1] / values * block_words(ty);
        Ok(GgmlWeight {
            codes: g.param(name, &[shape[0], words], DType::U32),
            ty,
            shape,
        })
    }
}

/// The GPU bytes of `data`, whole blocks of `ty` as a GGUF file stores them: each block
/// padded with zeros to whole words.
pub fn upload_bytes(ty: GgmlType, data: &[u8]) -> Vec<u8> {
    let bytes = ty.block().1;
    let padded = block_words(ty) * 4;
    let mut out = Vec::with_capacity(data.len() / bytes * padded);
    for block in data.chunks_exact(bytes) {
        out.extend_from_slice(block);
        out.resize(out.len() + padded - bytes, 0);
    }
    out
}

/// The node's tensors and params: `lora`'s lhs, factor, rank and scale where given, else
/// `x` bound in their place and r = 0.
fn node(
    g: &Graph,
    rows: usize,
    w: &GgmlWeight,
    [x, out]: [TensorId; 2],
    lora: Option<LowRank>,
) -> ([TensorId; 5], Params) {
    let p = Params::new()
        .u32(rows as u32)
        .u32(w.shape[1] as u32)
        .u32(w.shape[0] as u32)
        .u32(block_words(w.ty) as u32)
        .u32(w.ty.block().0 as u32);
    match lora {
        None => ([x, w.codes, x, x, out], p.u32(0).f32(0.0)),
        Some(l) => {
            let r = *g.tensor(l.lhs).shape.last().unwrap_or(&0);
            (
                [x, w.codes, l.lhs, l.factor, out],
                p.u32(r as u32).f32(l.scale),
            )
        }
    }
}

/// Whether `lora`'s term fits the tile kernels: lhs [rows, r] and its factor of
/// `factor_shape` (B [out, r] forward, A [r, in] backward), r ≥ 1.
fn takes(g: &Graph, lora: &LowRank, rows: usize, factor_shape: [usize; 2], r: usize) -> bool {
    r >= 1 && g.tensor(lora.lhs).shape == [rows, r] && g.tensor(lora.factor).shape == factor_shape
}

/// The block type as the kernels' override constant: one pipeline a type.
fn constants(w: &GgmlWeight) -> [(&'static str, f64); 1] {
    [("BLOCK_TYPE", w.ty.id() as f64)]
}

/// A new temporary `name` = x · Wᵀ, [rows, out] (x: [.., in]).
pub fn forward(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &GgmlWeight,
) -> Result<TensorId, GraphError> {
    forward_node(g, name, x, w, None)
}

/// The forward product with an adapter's term: a new temporary `name` = x·Wᵀ + s·x_a·Bᵀ
/// (`lora`: lhs x_a [rows, r], factor B [out, r]) in one kernel (the tiles, or for one token
/// the matvec).
pub fn forward_lora(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &GgmlWeight,
    lora: LowRank,
) -> Result<TensorId, GraphError> {
    let [n_out, n_in] = w.shape;
    let rows = rows_of(g, name, x, n_in)?;
    let r = *g.tensor(lora.lhs).shape.last().unwrap_or(&0);
    if takes(g, &lora, rows, [n_out, r], r) {
        return forward_node(g, name, x, w, Some(lora));
    }
    let y = forward_node(g, name, x, w, None)?;
    lora.add_into(g, name, y, true)?;
    Ok(y)
}

fn forward_node(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &GgmlWeight,
    lora: Option<LowRank>,
) -> Result<TensorId, GraphError> {
    let [n_out, n_in] = w.shape;
    let rows = rows_of(g, name, x, n_in)?;
    let y = g.temp(name, &[rows, n_out], DType::F32);
    let (tensors, p) = node(g, rows, w, [x, y], lora);
    // One token (decoding): one output an invocation instead of tiles of 32 rows.
    let (kernel, dispatch) = if rows == 1 {
        (&MATVEC, Dispatch::linear(n_out, 64))
    } else {
        let grid = [n_out.div_ceil(64) as u32, rows.div_ceil(32) as u32, 1];
        (&FORWARD, Dispatch::Grid(grid))
    };
    g.push_specialized(name, kernel, &tensors, p, dispatch, &constants(w))?;
    Ok(y)
}

fn backward_node(
    g: &mut Graph,
    label: &str,
    dy: TensorId,
    w: &GgmlWeight,
    dx: TensorId,
    accumulate: bool,
    lora: Option<LowRank>,
) -> Result<(), GraphError> {
    let [n_out, n_in] = w.shape;
    let rows = rows_of(g, label, dy, n_out)?;
    let grid = [n_in.div_ceil(64) as u32, rows.div_ceil(32) as u32, 1];
    let (tensors, p) = node(g, rows, w, [dy, dx], lora);
    let mut constants = constants(w).to_vec();
    constants.extend_from_slice(accumulating(accumulate));
    g.push_specialized(
        label,
        &BACKWARD,
        &tensors,
        p,
        Dispatch::Grid(grid),
        &constants,
    )
}

/// A new temporary `name` = dy · W, [rows, in].
pub fn backward(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    w: &GgmlWeight,
) -> Result<TensorId, GraphError> {
    let [n_out, n_in] = w.shape;
    let rows = rows_of(g, name, dy, n_out)?;
    let dx = g.temp(name, &[rows, n_in], DType::F32);
    backward_node(g, name, dy, w, dx, false, None)?;
    Ok(dx)
}

/// The backward product with an adapter's term (no dropout on the adapter's input):
/// dx = dy·W + s·dy_b·A (`lora`: lhs dy_b = dy·B [rows, r], factor A [r, in]) in one kernel,
/// added into `dx_into` when given, else a new temporary `name`.
pub fn backward_lora(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    w: &GgmlWeight,
    dx_into: Option<TensorId>,
    lora: LowRank,
) -> Result<TensorId, GraphError> {
    let [n_out, n_in] = w.shape;
    let rows = rows_of(g, name, dy, n_out)?;
    let r = *g.tensor(lora.lhs).shape.last().unwrap_or(&0);
    let (dx, label) = match dx_into {
        Some(dx) => (dx, format!("{name} += dy W")),
        None => (g.temp(name, &[rows, n_in], DType::F32), name.to_string()),
    };
    if takes(g, &lora, rows, [r, n_in], r) {
        backward_node(g, &label, dy, w, dx, dx_into.is_some(), Some(lora))?;
    } else {
        backward_node(g, &label, dy, w, dx, dx_into.is_some(), None)?;
        lora.add_into(g, name, dx, false)?;
    }
    Ok(dx)
}

/// dx += dy · W into an existing [rows, in] tensor.
pub fn backward_into(
    g: &mut Graph,
    label: &str,
    dx: TensorId,
    dy: TensorId,
    w: &GgmlWeight,
) -> Result<(), GraphError> {
    backward_node(g, label, dy, w, dx, true, None)
}
