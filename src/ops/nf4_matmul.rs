//! NF4 dequant-matmuls: Y = X·Wᵀ, dX = dY·W and the one-token matvec, with W in NF4 (codes
//! eight a word, see `quant::nf4`) and never materialised in f32. `forward_lora` and
//! `backward_lora` add a LoRA adapter's low-rank term, inside the product's own k loop on the
//! subgroup kernels.

use super::matmul::{matmul_into, Operand};
use super::select::{self, Nf4Key, Nf4Shape};
use super::software::nf4::*;
use super::software::pack::{pack_f32, pack_linear, texels, Strided};
use crate::graph::{
    accumulating, shape_str, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
    TextureId,
};
use crate::quant::nf4::Nf4Tensor;
use crate::shaders;

const fn bindings(out: Binding) -> [Binding; 4] {
    [
        Binding::read("x", DType::F32),
        Binding::read("w", DType::Nf4),
        Binding::read("w_absmax", DType::F32),
        out,
    ]
}

static WRITE: [Binding; 4] = bindings(Binding::write("y", DType::F32));

/// The portable kernels' bindings: the product's operands, then the low-rank term's.
const fn gemm_bindings(out: Binding) -> [Binding; 6] {
    [
        Binding::read("x", DType::F32),
        Binding::read("w", DType::Nf4),
        Binding::read("w_absmax", DType::F32),
        Binding::read("lhs", DType::F32),
        Binding::read("factor", DType::F32),
        out,
    ]
}

static GEMM_WRITE: [Binding; 6] = gemm_bindings(Binding::write("y", DType::F32));

/// y = x · Wᵀ
pub static FORWARD: Kernel = Kernel {
    name: "nf4_matmul_forward",
    shader: &shaders::NF4_MATMUL,
    entry: "nf4_matmul_forward",
    textures: &[],
    bindings: &WRITE,
};

/// dx = dy · W (dx += dy · W with the ACCUMULATE constant, as every backward here)
pub static BACKWARD: Kernel = Kernel {
    name: "nf4_matmul_backward",
    shader: &shaders::NF4_MATMUL,
    entry: "nf4_matmul_backward",
    textures: &[],
    bindings: &WRITE,
};

/// y = x · Wᵀ (+ s · lhs · factorᵀ) through 64 × 64 workgroup-memory tiles, weights decoded
/// once a tile (the portable kernel).
pub static GEMM_FORWARD: Kernel = Kernel {
    name: "nf4_gemm_forward",
    shader: &shaders::NF4_GEMM,
    entry: "nf4_gemm_forward",
    textures: &[],
    bindings: &GEMM_WRITE,
};

/// dx = dy · W (+ s · lhs · factor), portable.
pub static GEMM_BACKWARD: Kernel = Kernel {
    name: "nf4_gemm_backward",
    shader: &shaders::NF4_GEMM,
    entry: "nf4_gemm_backward",
    textures: &[],
    bindings: &GEMM_WRITE,
};

/// `GEMM_FORWARD` with its tiles in f16 (`Kernels::f16_tiles`; sums in f32). The forward
/// only: gradients are small enough to lose bits or underflow in f16, which the backward's
/// products would stage.
pub static GEMM_FORWARD_F16: Kernel = Kernel {
    name: "nf4_gemm_forward_f16",
    shader: &shaders::NF4_GEMM_F16,
    entry: "nf4_gemm_forward",
    textures: &[],
    bindings: &GEMM_WRITE,
};

/// y = W · x for one token, 64 invocations an output (the portable path; inputs a multiple of
/// 8).
pub static MATVEC_ROWS: Kernel = Kernel {
    name: "nf4_matvec_rows",
    shader: &shaders::NF4_MATMUL,
    entry: "nf4_matvec_rows",
    textures: &[],
    bindings: &WRITE,
};

/// y = W · x for one token.
pub static MATVEC: Kernel = Kernel {
    name: "nf4_matvec",
    shader: &shaders::NF4_MATMUL,
    entry: "nf4_matvec",
    textures: &[],
    bindings: &WRITE,
};

/// y = x · Wᵀ as bitsandbytes' CPU bf16 kernel rounds it (`Nf4Compute::BnbCpuBf16`).
pub static FORWARD_BF16: Kernel = Kernel {
    name: "nf4_bnb_cpu_forward",
    shader: &shaders::NF4_BNB_CPU,
    entry: "nf4_bnb_cpu_forward",
    textures: &[],
    bindings: &WRITE,
};

/// A LoRA adapter's term added to an NF4 product: `scale · lhs · factor`, with (forward)
/// lhs = x·Aᵀ [rows, r] and factor = Bᵀ (`factor` holds B [out, r]), or (backward)
/// lhs = dy·B [rows, r] and factor = A [r, in].
#[derive(Clone, Copy, Debug)]
pub struct LowRank {
    pub lhs: TensorId,
    pub factor: TensorId,
    pub scale: f32,
}

impl LowRank {
    /// The term added into `out` by a product of its own (node `{name} += lora`), where the
    /// base product's kernel does not take it: factor B read transposed (`forward`), or A.
    pub fn add_into(
        self,
        g: &mut Graph,
        name: &str,
        out: TensorId,
        forward: bool,
    ) -> Result<(), GraphError> {
        let factor = match forward {
            true => Operand::transposed(self.factor),
            false => Operand::plain(self.factor),
        };
        let (label, lhs) = (format!("{name} += lora"), Operand::plain(self.lhs));
        matmul_into(g, &label, out, lhs, factor, self.scale)
    }
}

/// How the forward product with an NF4 weight rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Nf4Compute {
    /// Exact dequantized weights, f32 activations and sums: bitsandbytes with
    /// `bnb_4bit_compute_dtype=float32` on CUDA, and its training path everywhere.
    #[default]
    F32,
    /// bitsandbytes' CPU kernel on CPUs with AVX512-BF16, which `Linear4bit` runs in eval mode
    /// when its input carries no gradient: activations, NF4 values and absmax rounded to bf16,
    /// f32 sums, outputs rounded to bf16 (see `quant::bnb_cpu`). For reproducing references
    /// made that way; the backward stays f32, as bitsandbytes' own.
    BnbCpuBf16,
}

/// An NF4 weight in a graph: its codes [out, in] and per-block absmax.
#[derive(Clone, Copy, Debug)]
pub struct Nf4Weight {
    pub codes: TensorId,
    pub absmax: TensorId,
    pub blocksize: usize,
    pub compute: Nf4Compute,
}

impl Nf4Weight {
    /// Declare the two params of a weight of `shape` [out, in], named `<name>` and
    /// `<name>.absmax`.
    pub fn declare(g: &mut Graph, name: &str, shape: [usize; 2], blocksize: usize) -> Self {
        let blocks = (shape[0] * shape[1]).div_ceil(blocksize);
        Nf4Weight {
            codes: g.param(name, &shape, DType::Nf4),
            absmax: g.param(&format!("{name}.absmax"), &[blocks], DType::F32),
            blocksize,
            compute: Nf4Compute::F32,
        }
    }

    /// [out, in]
    pub fn shape(&self, g: &Graph) -> (usize, usize) {
        let s = &g.tensor(self.codes).shape;
        (s[0], s[1])
    }
}

/// The bytes to upload for a quantized weight: (codes, absmax).
pub fn upload_bytes(t: &Nf4Tensor) -> (Vec<u8>, Vec<u8>) {
    (
        bytemuck::cast_slice(&t.gpu_words()).to_vec(),
        bytemuck::cast_slice(&t.absmax_f32()).to_vec(),
    )
}

/// The rows of `x` (all dimensions but the last, which must be `cols`), for the weight products.
pub(super) fn rows_of(
    g: &Graph,
    name: &str,
    x: TensorId,
    cols: usize,
) -> Result<usize, GraphError> {
    let shape = &g.tensor(x).shape;
    if shape.last() != Some(&cols) {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "'{}' is {} but the weight needs rows of {cols}",
                g.tensor(x).name,
                shape_str(shape)
            ),
        });
    }
    Ok(shape.iter().product::<usize>() / cols)
}

/// The kernels of a product with this weight over `rows` rows (`select::nf4`), and the
/// shape they were chosen for.
fn key(g: &Graph, w: &Nf4Weight, rows: usize, backward: bool) -> (Nf4Key, Nf4Shape) {
    let (n_out, n_in) = w.shape(g);
    let s = Nf4Shape {
        rows,
        n_in,
        n_out,
        blocksize: w.blocksize,
        backward,
    };
    (select::nf4(&g.kernels, s), s)
}

/// Pack the activations (`x`: [rows, k]) and the weight's codes and scales into textures.
fn pack_operands(
    g: &mut Graph,
    label: &str,
    x: TensorId,
    rows: usize,
    k: usize,
    w: &Nf4Weight,
) -> Result<[crate::graph::TextureId; 3], GraphError> {
    let strided = Strided {
        tensor: x,
        offset: 0,
        rows,
        k,
        row_stride: k,
        k_stride: 1,
    };
    let xt = pack_f32(g, label, strided, 0)?;
    let (_, shape) = key(g, w, rows, false);
    let layouts = select::nf4_weight_layouts(&g.kernels, shape);
    let (codes, scales) = layouts.expect("checked by select::nf4");
    let wt = pack_linear(g, label, w.codes, codes, 1)?;
    let at = pack_linear(g, label, w.absmax, scales, 2)?;
    Ok([xt, wt, at])
}

fn params(rows: usize, w: &Nf4Weight, n_in: usize, n_out: usize) -> Params {
    Params::new()
        .u32(rows as u32)
        .u32(n_in as u32)
        .u32(n_out as u32)
        .u32(w.blocksize as u32)
}

/// The subgroup kernels' textures and params: the three operands' and, with a low-rank term,
/// its lhs [rows, r] and factor (`factor_shape`: B [out, r] forward, A [r, in] backward) in
/// slots 3 and 4 (without one, x's texture stands in, unread at rank 0).
fn sg_operands(
    g: &mut Graph,
    label: &str,
    textures: [TextureId; 3],
    lora: Option<LowRank>,
    p: Params,
) -> Result<(Vec<TextureId>, Params), GraphError> {
    let Some(l) = lora else {
        let [x, w, a] = textures;
        return Ok((vec![x, w, a, x, x], p.u32(0).f32(0.0)));
    };
    let [rows, r] = as_rows(g, l.lhs);
    let [f_rows, f_k] = as_rows(g, l.factor);
    let strided = |tensor, rows, k| Strided {
        tensor,
        offset: 0,
        rows,
        k,
        row_stride: k,
        k_stride: 1,
    };
    let lhs = pack_f32(g, label, strided(l.lhs, rows, r), 3)?;
    let factor = pack_f32(g, label, strided(l.factor, f_rows, f_k), 4)?;
    let [x, w, a] = textures;
    Ok((vec![x, w, a, lhs, factor], p.u32(r as u32).f32(l.scale)))
}

/// A 2-D tensor's [rows, cols].
fn as_rows(g: &Graph, t: TensorId) -> [usize; 2] {
    let shape = &g.tensor(t).shape;
    let cols = shape.last().copied().unwrap_or(1);
    [shape.iter().product::<usize>() / cols.max(1), cols]
}

/// Whether the product's kernel (`key`, chosen for `s`) takes `lora`'s term itself: its factor
/// of `factor_shape` (B [out, r] forward, A [r, in] backward) and `Nf4Key::fuses_lora`.
fn fuses(
    g: &Graph,
    (key, s): (Nf4Key, Nf4Shape),
    lora: &LowRank,
    factor_shape: [usize; 2],
) -> bool {
    let sides = [factor_shape[0], texels(factor_shape[1])];
    g.tensor(lora.factor).shape == factor_shape
        && key.fuses_lora(&g.kernels, s, as_rows(g, lora.lhs).into(), sides)
}

/// The portable tile kernels' constants: the weight's block size (a shift, not a division,
/// in the shader) and `ACCUMULATE` where the product adds into its output.
fn tile_constants(w: &Nf4Weight, accumulate: bool) -> Vec<(&'static str, f64)> {
    let mut constants = vec![("BLOCKSIZE", w.blocksize as f64)];
    constants.extend_from_slice(accumulating(accumulate));
    constants
}

/// The portable kernels' tensors and params for a product with `operands` (x or dy, codes,
/// scales) into `out`, with `lora`'s term or none (x stands in, unread at rank 0).
fn portable_node(
    g: &Graph,
    [x, codes, absmax]: [TensorId; 3],
    out: TensorId,
    lora: Option<LowRank>,
    p: Params,
) -> (Vec<TensorId>, Params) {
    match lora {
        None => (vec![x, codes, absmax, x, x, out], p.u32(0).f32(0.0)),
        Some(l) => {
            let r = as_rows(g, l.lhs)[1];
            let tensors = vec![x, codes, absmax, l.lhs, l.factor, out];
            (tensors, p.u32(r as u32).f32(l.scale))
        }
    }
}

/// The bf16 kernel sums whole scale blocks of a row, as bitsandbytes' CPU layout requires.
fn check_bf16_layout(g: &Graph, name: &str, w: &Nf4Weight) -> Result<(), GraphError> {
    let (_, n_in) = w.shape(g);
    if n_in.is_multiple_of(w.blocksize) {
        return Ok(());
    }
    Err(GraphError::ShapeMismatch {
        op: name.into(),
        detail: format!(
            "bitsandbytes' CPU bf16 kernel needs rows of whole blocks: '{}' has {n_in} inputs, blocksize {}",
            g.tensor(w.codes).name,
            w.blocksize
        ),
    })
}

/// A new temporary `name` = x · Wᵀ, [rows, out].
pub fn forward(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &Nf4Weight,
) -> Result<TensorId, GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, name, x, n_in)?;
    let y = g.temp(name, &[rows, n_out], DType::F32);
    forward_node(g, name, x, w, y, None)?;
    Ok(y)
}

/// The forward product with an adapter's term: a new temporary `name` = x·Wᵀ + s·x_a·Bᵀ
/// (`lora`: lhs x_a [rows, r], factor B [out, r]). One kernel on the subgroup texture graphs,
/// else the product and then the term added by `matmul_into`.
pub fn forward_lora(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &Nf4Weight,
    lora: LowRank,
) -> Result<TensorId, GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, name, x, n_in)?;
    let r = as_rows(g, lora.lhs)[1];
    let y = g.temp(name, &[rows, n_out], DType::F32);
    let fused = fuses(g, key(g, w, rows, false), &lora, [n_out, r]);
    if w.compute == Nf4Compute::F32 && fused {
        forward_node(g, name, x, w, y, Some(lora))?;
    } else {
        forward_node(g, name, x, w, y, None)?;
        lora.add_into(g, name, y, true)?;
    }
    Ok(y)
}

/// y = x·Wᵀ, with `lora`'s term when given (the caller checked `fuses`).
fn forward_node(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &Nf4Weight,
    y: TensorId,
    lora: Option<LowRank>,
) -> Result<(), GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, name, x, n_in)?;
    let p = params(rows, w, n_in, n_out);
    if w.compute == Nf4Compute::BnbCpuBf16 {
        check_bf16_layout(g, name, w)?;
        let dispatch = Dispatch::linear(rows * n_out, 64);
        return g.push(name, &FORWARD_BF16, &[x, w.codes, w.absmax, y], p, dispatch);
    }
    let (kernel, dispatch) = match key(g, w, rows, false).0 {
        Nf4Key::Textures { eight_lanes } => {
            let textures = pack_operands(g, name, x, rows, n_in, w)?;
            if !eight_lanes {
                debug_assert!(
                    lora.is_none(),
                    "{name}: only the subgroup kernel adds the term"
                );
                let grid = [n_out.div_ceil(128) as u32, rows.div_ceil(64) as u32, 1];
                let dispatch = Dispatch::Grid(grid);
                return g.push_with_textures(name, &FORWARD_TEX, &[y], &textures, p, dispatch);
            }
            let (textures, p) = sg_operands(g, name, textures, lora, p)?;
            // Tiles of 32 rows by 32 outputs.
            let dispatch = Dispatch::tile_queue(rows.div_ceil(32) * n_out.div_ceil(32));
            return g.push_with_textures(name, &FORWARD_TEX_SG, &[y], &textures, p, dispatch);
        }
        // One token (decoding): one output per invocation instead of tiles of 32 rows.
        Nf4Key::Matvec { rows } => matvec_kernel(rows, n_out),
        Nf4Key::Tiles { f16 } => {
            let grid = [n_out.div_ceil(64) as u32, rows.div_ceil(64) as u32, 1];
            let (tensors, p) = portable_node(g, [x, w.codes, w.absmax], y, lora, p);
            let kernel = match f16 {
                true => &GEMM_FORWARD_F16,
                false => &GEMM_FORWARD,
            };
            let constants = tile_constants(w, false);
            return g.push_specialized(name, kernel, &tensors, p, Dispatch::Grid(grid), &constants);
        }
        Nf4Key::Buffer => (
            &FORWARD,
            Dispatch::Grid([n_out.div_ceil(64) as u32, rows.div_ceil(32) as u32, 1]),
        ),
    };
    g.push(name, kernel, &[x, w.codes, w.absmax, y], p, dispatch)
}

/// The backward product with an adapter's term (no dropout on the adapter's input):
/// dx = dy·W + s·dy_b·A (`lora`: lhs dy_b = dy·B [rows, r], factor A [r, in]), added into
/// `dx_into` when given, else a new temporary `name`. One kernel on the subgroup texture
/// graphs, else the product and then the term added by `matmul_into`.
pub fn backward_lora(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    w: &Nf4Weight,
    dx_into: Option<TensorId>,
    lora: LowRank,
) -> Result<TensorId, GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, name, dy, n_out)?;
    let r = as_rows(g, lora.lhs)[1];
    let (dx, label) = match dx_into {
        Some(dx) => (dx, format!("{name} += dy W")),
        None => (g.temp(name, &[rows, n_in], DType::F32), name.to_string()),
    };
    let accumulate = dx_into.is_some();
    if fuses(g, key(g, w, rows, true), &lora, [r, n_in]) {
        backward_node(g, &label, dy, w, dx, accumulate, Some(lora))?;
    } else {
        backward_node(g, &label, dy, w, dx, accumulate, None)?;
        lora.add_into(g, name, dx, false)?;
    }
    Ok(dx)
}

/// dx (+)= dy·W, with `lora`'s term when given (the caller checked `fuses`).
fn backward_node(
    g: &mut Graph,
    label: &str,
    dy: TensorId,
    w: &Nf4Weight,
    dx: TensorId,
    accumulate: bool,
    lora: Option<LowRank>,
) -> Result<(), GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, label, dy, n_out)?;
    let key = key(g, w, rows, true).0;
    if let Nf4Key::Textures { eight_lanes } = key {
        let textures = pack_operands(g, label, dy, rows, n_out, w)?;
        let p = params(rows, w, n_in, n_out);
        let constants = accumulating(accumulate);
        if !eight_lanes {
            let grid = [n_in.div_ceil(128) as u32, rows.div_ceil(64) as u32, 1];
            let dispatch = Dispatch::Grid(grid);
            let kernel = &BACKWARD_TEX;
            return g.push_with_textures_specialized(
                label,
                kernel,
                &[dx],
                &textures,
                p,
                dispatch,
                constants,
            );
        }
        let (textures, p) = sg_operands(g, label, textures, lora, p)?;
        // Tiles of 32 rows by one texel of codes (32 inputs).
        let dispatch = Dispatch::tile_queue(rows.div_ceil(32) * n_in / 32);
        let kernel = &BACKWARD_TEX_SG;
        return g.push_with_textures_specialized(
            label,
            kernel,
            &[dx],
            &textures,
            p,
            dispatch,
            constants,
        );
    }
    let p = params(rows, w, n_in, n_out);
    let constants = accumulating(accumulate);
    if let Nf4Key::Tiles { .. } = key {
        let grid = [n_in.div_ceil(64) as u32, rows.div_ceil(64) as u32, 1];
        let (tensors, p) = portable_node(g, [dy, w.codes, w.absmax], dx, lora, p);
        let dispatch = Dispatch::Grid(grid);
        let constants = tile_constants(w, accumulate);
        return g.push_specialized(label, &GEMM_BACKWARD, &tensors, p, dispatch, &constants);
    }
    // 64 inputs (eight words of codes) and 32 rows a workgroup.
    let dispatch = Dispatch::Grid([n_in.div_ceil(64) as u32, rows.div_ceil(32) as u32, 1]);
    let tensors = [dy, w.codes, w.absmax, dx];
    g.push_specialized(label, &BACKWARD, &tensors, p, dispatch, constants)
}

/// A new temporary `name` = dy · W, [rows, in].
pub fn backward(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    w: &Nf4Weight,
) -> Result<TensorId, GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, name, dy, n_out)?;
    let dx = g.temp(name, &[rows, n_in], DType::F32);
    backward_node(g, name, dy, w, dx, false, None)?;
    Ok(dx)
}

/// dx += dy · W into an existing [rows, in] tensor.
pub fn backward_into(
    g: &mut Graph,
    label: &str,
    dx: TensorId,
    dy: TensorId,
    w: &Nf4Weight,
) -> Result<(), GraphError> {
    backward_node(g, label, dy, w, dx, true, None)
}

/// The one-token product's kernel: 64 invocations an output over whole code words (`rows`,
/// `Nf4Key::Matvec`), else an output an invocation.
fn matvec_kernel(rows: bool, n_out: usize) -> (&'static Kernel, Dispatch) {
    if rows {
        (&MATVEC_ROWS, Dispatch::Linear(n_out.div_ceil(4) as u32))
    } else {
        (&MATVEC, Dispatch::linear(n_out, 64))
    }
}

/// A new temporary `name` = W · x for a single token x [in] (or [1, in]).
pub fn matvec(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    w: &Nf4Weight,
) -> Result<TensorId, GraphError> {
    let (n_out, n_in) = w.shape(g);
    let rows = rows_of(g, name, x, n_in)?;
    if rows != 1 {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!("matvec takes one token, '{}' has {rows}", g.tensor(x).name),
        });
    }
    let y = g.temp(name, &[n_out], DType::F32);
    let p = params(1, w, n_in, n_out);
    let (kernel, dispatch) = match w.compute {
        Nf4Compute::F32 => match key(g, w, 1, false).0 {
            Nf4Key::Matvec { rows } => matvec_kernel(rows, n_out),
            other => unreachable!("select::nf4 gives one row {other:?}"),
        },
        Nf4Compute::BnbCpuBf16 => {
            check_bf16_layout(g, name, w)?;
            (&FORWARD_BF16, Dispatch::linear(n_out, 64))
        }
    };
    g.push(name, kernel, &[x, w.codes, w.absmax, y], p, dispatch)?;
    Ok(y)
}
