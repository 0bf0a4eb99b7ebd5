//! f32 matrix products with either operand transposed (by strides, never by a transposing
//! copy in memory): c = alpha · op(a) · op(b), or c += alpha · op(a) · op(b). These are the LoRA
//! paths and their gradients: X·Aᵀ, (XAᵀ)·Bᵀ, dB = s·dYᵀ(XAᵀ), dA = s·(dY B)ᵀX,
//! dX += s·(dY B)A, and the lm-head chunks. On graphs for software devices the products big
//! enough run on textures (`matmul_tex.wgsl`: operands packed first, see `ops::software::pack`); the
//! rest, and every product on other devices, on the buffer kernels of `matmul.wgsl`.

use super::select::{self, MatmulKey, ProductShape, TextureShape};
use super::software::matmul::*;
use super::software::pack::{pack_f32, texels, Strided};
use crate::graph::{
    accumulating, shape_str, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::kernels::Family;
use crate::shaders;

const WRITE: [Binding; 3] = [
    Binding::read("a", DType::F32),
    Binding::read("b", DType::F32),
    Binding::write("c", DType::F32),
];

/// c = alpha · op(a) · op(b) (c += … with the ACCUMULATE constant, as every product kernel
/// here): register tiles, no workgroup memory (software devices, for the products too small
/// for their texture kernels).
pub static MATMUL: Kernel = Kernel {
    name: "matmul",
    shader: &shaders::MATMUL,
    entry: "matmul",
    textures: &[],
    bindings: &WRITE,
};

/// c = alpha · op(a) · op(b) through workgroup-memory tiles (the portable kernel, tile sizes
/// from `GemmTiles`; with split-K, c holds the partial sums).
pub static GEMM: Kernel = Kernel {
    name: "gemm",
    shader: &shaders::GEMM,
    entry: "gemm",
    textures: &[],
    bindings: &WRITE,
};

/// c (+)= alpha · the sum of a split-K product's partials.
pub static SPLIT_SUM: Kernel = Kernel {
    name: "split_sum",
    shader: &shaders::SPLIT_SUM,
    entry: "split_sum",
    textures: &[],
    bindings: &[
        Binding::read("parts", DType::F32),
        Binding::write("c", DType::F32),
    ],
};

/// `matmul` for a single row (M = 1): one column per invocation, no tile of rows.
pub static MATVEC: Kernel = Kernel {
    name: "matmul_vec",
    shader: &shaders::MATMUL,
    entry: "matmul_vec",
    textures: &[],
    bindings: MATMUL.bindings,
};

/// The kernel and dispatch for an [m, n] product.
fn kernel_for(m: usize, n: usize) -> (&'static Kernel, Dispatch) {
    match m {
        1 => (&MATVEC, Dispatch::linear(n, 64)),
        _ => (&MATMUL, dispatch(m, n)),
    }
}

/// One factor of a product: a tensor seen as a matrix (leading dimensions are rows), used as
/// it is or transposed, optionally only `rows` of its stored rows.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub tensor: TensorId,
    pub transposed: bool,
    /// (first, count) of the stored rows to use; None for all.
    pub rows: Option<(usize, usize)>,
}

impl Operand {
    pub fn plain(tensor: TensorId) -> Self {
        Operand {
            tensor,
            transposed: false,
            rows: None,
        }
    }

    pub fn transposed(tensor: TensorId) -> Self {
        Operand {
            tensor,
            transposed: true,
            rows: None,
        }
    }

    /// Only stored rows first..first + count (before any transposition).
    pub fn rows(self, first: usize, count: usize) -> Self {
        Operand {
            rows: Some((first, count)),
            ..self
        }
    }

    /// (stored rows, stored columns, element offset), or an error naming the tensor.
    fn matrix(&self, g: &Graph, op: &str) -> Result<(usize, usize, usize), GraphError> {
        let (r, c) = as_matrix(&g.tensor(self.tensor).shape);
        match self.rows {
            None => Ok((r, c, 0)),
            Some((first, count)) if first + count <= r => Ok((count, c, first * c)),
            Some((first, count)) => Err(GraphError::ShapeMismatch {
                op: op.into(),
                detail: format!(
                    "rows {first}..{} of '{}' {}: it has {r}",
                    first + count,
                    g.tensor(self.tensor).name,
                    shape_str(&g.tensor(self.tensor).shape)
                ),
            }),
        }
    }
}

/// Rows and columns of a tensor seen as a matrix: leading dimensions are rows.
fn as_matrix(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap_or(&1);
    (shape.iter().product::<usize>() / cols.max(1), cols)
}

/// Where a product's [M, N] result goes: columns first..first + N of `c`, rows `row_stride`
/// apart (the whole of c unless it is a block of a wider matrix).
#[derive(Clone, Copy, Debug)]
struct ColumnBlock {
    c: TensorId,
    first: usize,
    row_stride: usize,
}

impl ColumnBlock {
    fn whole(c: TensorId, n: usize) -> Self {
        ColumnBlock {
            c,
            first: 0,
            row_stride: n,
        }
    }
}

/// A product's sizes and where its operands' elements are:
/// A(m, k) = a[a_off + m·a_sm + k·a_sk], B(k, n) = b[b_off + k·b_sk + n·b_sn].
struct Product {
    a: TensorId,
    b: TensorId,
    m: usize,
    n: usize,
    k: usize,
    a_sm: usize,
    a_sk: usize,
    b_sk: usize,
    b_sn: usize,
    a_off: usize,
    b_off: usize,
}

impl Product {
    fn new(g: &Graph, name: &str, a: Operand, b: Operand) -> Result<Product, GraphError> {
        let (ar, ac, a_off) = a.matrix(g, name)?;
        let (br, bc, b_off) = b.matrix(g, name)?;
        let (m, k) = if a.transposed { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if b.transposed { (bc, br) } else { (br, bc) };
        if k != kb {
            let describe = |o: Operand| {
                let t = g.tensor(o.tensor);
                let how = if o.transposed { "transposed " } else { "" };
                format!("{how}'{}' {}", t.name, shape_str(&t.shape))
            };
            return Err(GraphError::ShapeMismatch {
                op: name.into(),
                detail: format!(
                    "{} times {}: inner sizes {k} and {kb} differ",
                    describe(a),
                    describe(b)
                ),
            });
        }
        // Strides of the stored (row-major) matrices; a row range only moves the start.
        let (a_sm, a_sk) = if a.transposed { (1, ac) } else { (ac, 1) };
        let (b_sk, b_sn) = if b.transposed { (1, bc) } else { (bc, 1) };
        Ok(Product {
            a: a.tensor,
            b: b.tensor,
            m,
            n,
            k,
            a_sm,
            a_sk,
            b_sk,
            b_sn,
            a_off,
            b_off,
        })
    }

    /// The buffer kernels' uniform.
    fn params(&self, alpha: f32) -> Params {
        Params::new()
            .u32(self.m as u32)
            .u32(self.n as u32)
            .u32(self.k as u32)
            .u32(self.a_sm as u32)
            .u32(self.a_sk as u32)
            .u32(self.b_sk as u32)
            .u32(self.b_sn as u32)
            .f32(alpha)
            .u32(self.a_off as u32)
            .u32(self.b_off as u32)
    }

    /// The kernels that run this product (`select::matmul`).
    fn key(&self, g: &Graph) -> MatmulKey {
        let shape = ProductShape {
            m: self.m,
            n: self.n,
            k: self.k,
            k_major: self.a_sm == 1 && self.b_sn == 1,
        };
        select::matmul(&g.kernels, shape)
    }

    /// c (+)= alpha · Aᵀ B from the stored [K, M] and [K, N] matrices: the larger one is
    /// packed into slot 0, where the NF4 products pack X and dY (often found still there).
    fn push_tn(
        &self,
        g: &mut Graph,
        label: &str,
        (c, alpha, accumulate): (TensorId, f32, bool),
        eight_lanes: bool,
    ) -> Result<(), GraphError> {
        let stored = |tensor, offset, cols, row_stride| Strided {
            tensor,
            offset,
            rows: self.k,
            k: cols,
            row_stride,
            k_stride: 1,
        };
        let a = stored(self.a, self.a_off, self.m, self.a_sk);
        let b = stored(self.b, self.b_off, self.n, self.b_sk);
        // The kernel owns sixteen columns an invocation: the narrow side is its columns.
        let (rows, cols, wide, narrow, c_sm, c_sn) = if self.n <= self.m {
            (self.m, self.n, a, b, self.n, 1)
        } else {
            (self.n, self.m, b, a, 1, self.n)
        };
        let t_wide = pack_f32(g, label, wide, 0)?;
        let t_narrow = pack_f32(g, label, narrow, 1)?;
        let params = Params::new()
            .u32(rows as u32)
            .u32(cols as u32)
            .u32(self.k as u32)
            .f32(alpha)
            .u32(c_sm as u32)
            .u32(c_sn as u32)
            .u32(0);
        let kernel = match eight_lanes {
            true => &MATMUL_TEX_TN_SG,
            false => &MATMUL_TEX_TN,
        };
        // The subgroup kernel: one subgroup (64 rows) a workgroup, so that the few hundred
        // rows of a LoRA gradient still spread over the device's threads.
        let rows_per_group = if eight_lanes { 64 } else { 256 };
        let dispatch = Dispatch::Grid([
            cols.div_ceil(16) as u32,
            rows.div_ceil(rows_per_group) as u32,
            1,
        ]);
        let textures = [t_wide, t_narrow];
        let constants = accumulating(accumulate);
        g.push_with_textures_specialized(
            label,
            kernel,
            &[c],
            &textures,
            params,
            dispatch,
            constants,
        )
    }

    /// Pack A and B, then one texture-kernel node writing (or adding into) c.
    fn push_textures(
        &self,
        g: &mut Graph,
        label: &str,
        block: ColumnBlock,
        alpha: f32,
        accumulate: bool,
        (shape, eight_lanes): (TextureShape, bool),
    ) -> Result<(), GraphError> {
        let a = Strided {
            tensor: self.a,
            offset: self.a_off,
            rows: self.m,
            k: self.k,
            row_stride: self.a_sm,
            k_stride: self.a_sk,
        };
        // The kernel's rows and columns and c's strides for them: transposed, it computes
        // cᵀ = Bᵀ Aᵀ into c's transposed positions.
        let (rows, cols, c_sm, c_sn) = match shape {
            TextureShape::NarrowTransposed => (self.n, self.m, 1, block.row_stride),
            _ => (self.m, self.n, block.row_stride, 1),
        };
        // The subgroup kernel stores four columns of a row at once (a vec4).
        let sg = eight_lanes
            && c_sn == 1
            && [cols, c_sm, block.first]
                .iter()
                .all(|v| v.is_multiple_of(4));
        // With B stored as [K, N] rows of four-aligned values (an lm-head chunk in the
        // backward), the wide subgroup kernel reads those rows: no transposing pack, and the
        // texture often already holds them (the forward's pack of the same chunk).
        let b_rows = sg
            && shape == TextureShape::Wide
            && self.b_sn == 1
            && [self.k, self.b_sk, self.b_off]
                .iter()
                .all(|v| v.is_multiple_of(4))
            && select::textures_fit(&g.kernels, Family::Matmul, &[texels(self.n), self.k]);
        // B is packed by columns: texel row n holds B(4t.., n); or by its stored rows.
        let b = if b_rows {
            Strided {
                tensor: self.b,
                offset: self.b_off,
                rows: self.k,
                k: self.n,
                row_stride: self.b_sk,
                k_stride: 1,
            }
        } else {
            Strided {
                tensor: self.b,
                offset: self.b_off,
                rows: self.n,
                k: self.k,
                row_stride: self.b_sn,
                k_stride: self.b_sk,
            }
        };
        // The larger operand goes to slot 0, where the NF4 products pack X and dY.
        let (slot_a, slot_b) = match shape {
            TextureShape::NarrowTransposed => (1, 0),
            _ => (0, 1),
        };
        let ta = pack_f32(g, label, a, slot_a)?;
        let tb = pack_f32(g, label, b, slot_b)?;
        let textures = match shape {
            TextureShape::NarrowTransposed => [tb, ta],
            _ => [ta, tb],
        };
        let params = Params::new()
            .u32(rows as u32)
            .u32(cols as u32)
            .u32(texels(self.k) as u32)
            .f32(alpha)
            .u32(c_sm as u32)
            .u32(c_sn as u32)
            .u32(block.first as u32);
        let (kernel, dispatch) = match shape {
            TextureShape::Wide if b_rows => (&MATMUL_TEX_SG_KN, queue_dispatch(rows, cols)),
            TextureShape::Wide if sg => (&MATMUL_TEX_SG, queue_dispatch(rows, cols)),
            TextureShape::Wide => (&MATMUL_TEX, wide_dispatch(rows, cols)),
            TextureShape::Tn => unreachable!("push_tn runs these"),
            _ if eight_lanes => (&MATMUL_TEX_NARROW_SG, narrow_dispatch(rows, cols)),
            _ => (&MATMUL_TEX_NARROW, narrow_dispatch(rows, cols)),
        };
        let mut constants = accumulating(accumulate).to_vec();
        if b_rows {
            constants.extend_from_slice(&B_ROWS);
        }
        g.push_with_textures_specialized(
            label,
            kernel,
            &[block.c],
            &textures,
            params,
            dispatch,
            &constants,
        )
    }

    fn push(
        &self,
        g: &mut Graph,
        label: &str,
        c: TensorId,
        alpha: f32,
        accumulate: bool,
    ) -> Result<(), GraphError> {
        match self.key(g) {
            MatmulKey::Textures {
                shape: TextureShape::Tn,
                eight_lanes,
            } => return self.push_tn(g, label, (c, alpha, accumulate), eight_lanes),
            MatmulKey::Textures { shape, eight_lanes } => {
                let block = ColumnBlock::whole(c, self.n);
                let how = (shape, eight_lanes);
                return self.push_textures(g, label, block, alpha, accumulate, how);
            }
            MatmulKey::Tiles { depth } => {
                return self.push_portable(g, label, (c, alpha, accumulate), depth);
            }
            MatmulKey::Buffer => {}
        }
        let (kernel, dispatch) = kernel_for(self.m, self.n);
        let tensors = [self.a, self.b, c];
        let params = self.params(alpha);
        g.push_specialized(
            label,
            kernel,
            &tensors,
            params,
            dispatch,
            accumulating(accumulate),
        )
    }

    /// The portable tile kernel; split along k into partial products summed by
    /// `split_sum` when the outputs fill too few workgroups to keep a GPU busy.
    fn push_portable(
        &self,
        g: &mut Graph,
        label: &str,
        (c, alpha, accumulate): (TensorId, f32, bool),
        depth: u32,
    ) -> Result<(), GraphError> {
        let tiles = GemmTiles::choose(self.m, self.n, depth);
        let tile = tiles.tile();
        let grid = [self.n.div_ceil(tile) as u32, self.m.div_ceil(tile) as u32];
        let splits = split_k(tiles.count(self.m, self.n), self.k);
        let mut constants = tiles.constants().to_vec();
        if splits == 1 {
            let p = self.params(alpha).u32(self.k as u32);
            let dispatch = Dispatch::Grid([grid[0], grid[1], 1]);
            let tensors = [self.a, self.b, c];
            constants.extend_from_slice(accumulating(accumulate));
            return g.push_specialized(label, &GEMM, &tensors, p, dispatch, &constants);
        }
        let chunk = self
            .k
            .div_ceil(splits)
            .next_multiple_of(tiles.depth as usize);
        let splits = self.k.div_ceil(chunk);
        let parts = g.temp(
            &format!("{label} (split-k parts)"),
            &[splits, self.m, self.n],
            DType::F32,
        );
        let p = self.params(1.0).u32(chunk as u32);
        let dispatch = Dispatch::Grid([grid[0], grid[1], splits as u32]);
        let tensors = [self.a, self.b, parts];
        g.push_specialized(label, &GEMM, &tensors, p, dispatch, &constants)?;
        let n = self.m * self.n;
        let p = Params::new().u32(n as u32).u32(splits as u32).f32(alpha);
        let label = format!("{label} (split-k sum)");
        let dispatch = Dispatch::linear(n, 256);
        let constants = accumulating(accumulate);
        g.push_specialized(&label, &SPLIT_SUM, &[parts, c], p, dispatch, constants)
    }
}

/// The portable f32 product's tile: gemm.wgsl's pipeline constants `SIDE` (a workgroup is
/// SIDE x SIDE invocations with 4 x 4 outputs each, a tile of 4·SIDE x 4·SIDE outputs) and
/// `TILE_K` (the k values staged a step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTiles {
    pub side: u32,
    pub depth: u32,
}

impl GemmTiles {
    /// The tile for an [m, n] output at k steps of `depth` (the device's, `Kernels::gemm_depth`,
    /// chosen by `kernels::gemm_depth`):
    /// 64 x 64 while those tiles fill BUSY_WORKGROUPS, else 32 x 32, four times the
    /// workgroups (the LoRA factors' products and gradients, the narrow k/v projections'
    /// adapters: [1,024, 192] is 48 tiles of 64, 192 of 32) before any split along k.
    pub fn choose(m: usize, n: usize, depth: u32) -> Self {
        let large = GemmTiles { side: 16, depth };
        if large.count(m, n) >= BUSY_WORKGROUPS {
            large
        } else {
            GemmTiles { side: 8, depth }
        }
    }

    /// Outputs a tile side.
    pub fn tile(self) -> usize {
        4 * self.side as usize
    }

    /// Tiles (workgroups) an [m, n] output takes.
    pub fn count(self, m: usize, n: usize) -> usize {
        m.div_ceil(self.tile()) * n.div_ceil(self.tile())
    }

    /// Workgroup memory the two staged tiles take: TILE_K rows of SIDE + 1 vec4s each.
    pub fn workgroup_bytes(self) -> u32 {
        2 * self.depth * (self.side + 1) * 16
    }

    pub fn constants(self) -> [(&'static str, f64); 2] {
        [("SIDE", self.side as f64), ("TILE_K", self.depth as f64)]
    }
}

/// Workgroups a portable product should keep busy: enough for the GPUs people train on
/// (tens of compute units, a few workgroups each).
const BUSY_WORKGROUPS: usize = 128;

/// The k chunks a product of `tiles` output tiles along `k` is split into: one while the
/// tiles alone fill BUSY_WORKGROUPS, else enough chunks of at least MIN_SPLIT_K to do so
/// (the LoRA factors' gradients at long batches: 16 × 576 outputs over 4,096 tokens are
/// 18 tiles of 32). Each split costs a `split_sum` dispatch, worth it only when every chunk
/// is long: at 1,024 tokens the 18 workgroups finish in about the time of a dispatch.
pub fn split_k(tiles: usize, k: usize) -> usize {
    if tiles >= BUSY_WORKGROUPS {
        return 1;
    }
    BUSY_WORKGROUPS.div_ceil(tiles).min(k / MIN_SPLIT_K).max(1)
}

/// The shortest k chunk of a split product.
const MIN_SPLIT_K: usize = 1024;

fn dispatch(m: usize, n: usize) -> Dispatch {
    Dispatch::Grid([n.div_ceil(64) as u32, m.div_ceil(32) as u32, 1])
}

/// A new temporary `name` = alpha · op(a) · op(b).
pub fn matmul(
    g: &mut Graph,
    name: &str,
    a: Operand,
    b: Operand,
    alpha: f32,
) -> Result<TensorId, GraphError> {
    let product = Product::new(g, name, a, b)?;
    let c = g.temp(name, &[product.m, product.n], DType::F32);
    product.push(g, name, c, alpha, false)?;
    Ok(c)
}

/// c += alpha · op(a) · op(b), into an existing tensor `c` of shape [M, N].
pub fn matmul_into(
    g: &mut Graph,
    label: &str,
    c: TensorId,
    a: Operand,
    b: Operand,
    alpha: f32,
) -> Result<(), GraphError> {
    let product = Product::new(g, label, a, b)?;
    let (m, n) = (product.m, product.n);
    if as_matrix(&g.tensor(c).shape) != (m, n) {
        return Err(GraphError::ShapeMismatch {
            op: label.into(),
            detail: format!(
                "the product is [{m}, {n}] but '{}' is {}",
                g.tensor(c).name,
                shape_str(&g.tensor(c).shape)
            ),
        });
    }
    product.push(g, label, c, alpha, true)
}

/// `hidden` [rows, dim] times the transposed `weight` [vocab, dim]: logits [rows, vocab] named
/// `name`. On texture graphs a vocabulary larger than a texture side is computed in column
/// blocks of at most that many rows of `weight`, so the lm-head stays on the texture kernel.
pub fn logits(
    g: &mut Graph,
    name: &str,
    hidden: TensorId,
    weight: TensorId,
) -> Result<TensorId, GraphError> {
    let (vocab, _) = as_matrix(&g.tensor(weight).shape);
    let (h, w) = (Operand::plain(hidden), Operand::transposed(weight));
    let max = select::texture_side(&g.kernels, Family::Matmul).unwrap_or(0);
    let whole = Product::new(g, name, h, w)?;
    if max == 0 || vocab <= max || matches!(whole.key(g), MatmulKey::Textures { .. }) {
        return matmul(g, name, h, w, 1.0);
    }
    // Equal blocks, as few as fit.
    let chunk = vocab.div_ceil(vocab.div_ceil(max));
    let parts = (0..vocab)
        .step_by(chunk)
        .map(|first| {
            let count = chunk.min(vocab - first);
            let label = format!("{name}[{first}..{}]", first + count);
            let part = Product::new(g, &label, h, w.rows(first, count))?;
            Ok((first, label, part))
        })
        .collect::<Result<Vec<_>, GraphError>>()?;
    // Every block on the wide kernel (each with its eight-lane choice), else one product on
    // the buffer kernel.
    let wide: Vec<Option<bool>> = parts
        .iter()
        .map(|(_, _, p)| match p.key(g) {
            MatmulKey::Textures {
                shape: TextureShape::Wide,
                eight_lanes,
            } => Some(eight_lanes),
            _ => None,
        })
        .collect();
    if wide.iter().any(Option::is_none) {
        return matmul(g, name, h, w, 1.0);
    }
    let logits = g.temp(name, &[whole.m, vocab], DType::F32);
    for ((first, label, part), eight_lanes) in parts.into_iter().zip(wide) {
        let block = ColumnBlock {
            c: logits,
            first,
            row_stride: vocab,
        };
        let how = (TextureShape::Wide, eight_lanes.expect("checked above"));
        part.push_textures(g, &label, block, 1.0, false, how)?;
    }
    Ok(logits)
}

/// The first row part's block of `logits_parts` (defines the logits; the blocks together
/// write every element).
pub static COPY_COLUMNS: Kernel = Kernel {
    name: "copy_columns",
    shader: &crate::shaders::COPY_COLUMNS,
    entry: "copy_columns",
    textures: &[],
    bindings: &[
        Binding::read("src", DType::F32),
        Binding::write("dst", DType::F32),
    ],
};

/// The later parts' blocks.
pub static COPY_COLUMNS_ACC: Kernel = Kernel {
    name: "copy_columns_acc",
    shader: &crate::shaders::COPY_COLUMNS,
    entry: "copy_columns",
    textures: &[],
    bindings: &[
        COPY_COLUMNS.bindings[0],
        Binding::read_write("dst", DType::F32),
    ],
};

/// Rows of an f16 lm-head part widened to f32 at a time for its logits (8 MiB of f32).
const WIDEN_BLOCK_BYTES: usize = 8 << 20;

/// `logits` for an lm-head declared as row parts [rows_i, dim] (a vocabulary larger than one
/// binding, `Graph::row_parts`), f32 or f16: each block's logits (an f32 part whole, an f16
/// part a widened block of rows at a time), copied into its columns of one [tokens, vocab]
/// temporary.
pub fn logits_parts(
    g: &mut Graph,
    name: &str,
    hidden: TensorId,
    parts: &[TensorId],
) -> Result<TensorId, GraphError> {
    if let [whole] = parts {
        if g.tensor(*whole).dtype == DType::F32 {
            return logits(g, name, hidden, *whole);
        }
    }
    let (tokens, _) = as_matrix(&g.tensor(hidden).shape);
    let vocab: usize = parts.iter().map(|&p| as_matrix(&g.tensor(p).shape).0).sum();
    let out = g.temp(name, &[tokens, vocab], DType::F32);
    // (a block's f32 rows, its first vocabulary row) in order.
    let mut blocks = Vec::new();
    let mut first = 0;
    for &part in parts {
        let (rows, dim) = as_matrix(&g.tensor(part).shape);
        if g.tensor(part).dtype == DType::F16 {
            let per = (WIDEN_BLOCK_BYTES / (4 * dim.max(1))).max(1);
            for r0 in (0..rows).step_by(per) {
                let label = format!("{name}.rows[{}..]", first + r0);
                let n = per.min(rows - r0);
                let block = super::embedding::widen_rows(g, &label, part, r0, n)?;
                blocks.push((block, first + r0));
            }
        } else {
            blocks.push((part, first));
        }
        first += rows;
    }
    for (i, (part, first)) in blocks.into_iter().enumerate() {
        let label = format!("{name}[{first}..]");
        let block = logits(g, &label, hidden, part)?;
        let cols = as_matrix(&g.tensor(part).shape).0;
        let params = Params::new()
            .u32(tokens as u32)
            .u32(cols as u32)
            .u32(vocab as u32)
            .u32(first as u32);
        let kernel = if i == 0 {
            &COPY_COLUMNS
        } else {
            &COPY_COLUMNS_ACC
        };
        let dispatch = Dispatch::linear(tokens * cols, 64);
        g.push(
            format!("{label} copy"),
            kernel,
            &[block, out],
            params,
            dispatch,
        )?;
    }
    Ok(out)
}

/// CPU reference in f64: alpha · op(a) · op(b) (+ c0), as a row-major [m, n] f32 matrix.
/// `a` is stored [m, k] (or [k, m] when `trans_a`), `b` is [k, n] (or [n, k]).
#[allow(clippy::too_many_arguments)]
pub fn cpu_matmul(
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    c0: Option<&[f32]>,
) -> Vec<f32> {
    let at = |i: usize, kk: usize| if trans_a { a[kk * m + i] } else { a[i * k + kk] } as f64;
    let bt = |kk: usize, j: usize| if trans_b { b[j * k + kk] } else { b[kk * n + j] } as f64;
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|kk| at(i, kk) * bt(kk, j)).sum();
            let base = c0.map_or(0.0, |c| c[i * n + j] as f64);
            out[i * n + j] = (alpha as f64 * s + base) as f32;
        }
    }
    out
}

/// matmul_tex: 64 rows x 128 columns a workgroup.
fn wide_dispatch(rows: usize, cols: usize) -> Dispatch {
    Dispatch::Grid([cols.div_ceil(128) as u32, rows.div_ceil(64) as u32, 1])
}

/// matmul_tex_sg: 32x32 tiles from a queue.
fn queue_dispatch(rows: usize, cols: usize) -> Dispatch {
    Dispatch::tile_queue(rows.div_ceil(32) * cols.div_ceil(32))
}

/// matmul_tex_narrow: 128 rows x 16 columns a workgroup.
fn narrow_dispatch(rows: usize, cols: usize) -> Dispatch {
    Dispatch::Grid([cols.div_ceil(16) as u32, rows.div_ceil(128) as u32, 1])
}
