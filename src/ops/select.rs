//! One selection key an op family, after ggml-webgpu's pipeline keys: which kernels an op runs
//! is chosen in one function per family, from the device's choice (`Kernels`: a path per
//! family and what that path may use) and the op's shape. The op builders match on the key
//! and read nothing else about the device, and tests/kernel_selection.rs tables the choices
//! for device profiles without a GPU.
//!
//! | family | key | chosen by |
//! |---|---|---|
//! | f32 products | `MatmulKey` | `matmul` |
//! | NF4 products | `Nf4Key` | `nf4` |
//! | attention | `AttentionKey` | `attention` |
//! | RMSNorm | `RmsnormKey` | `rmsnorm` |
//! | cross-entropy | `CrossEntropyKey` | `cross_entropy` |

use crate::kernels::{Family, Kernels, Path};
use crate::ops::software::pack::{texels, Linear};

/// Whether every side is one the texture kernels of `family` may use (1 to the device's
/// largest texture side; false off the software path or without textures).
pub fn textures_fit(k: &Kernels, family: Family, sides: &[usize]) -> bool {
    k.textures_for(family)
        .is_some_and(|max| sides.iter().all(|&s| s >= 1 && s <= max as usize))
}

/// The largest texture side `family`'s texture kernels may use, where they run.
pub fn texture_side(k: &Kernels, family: Family) -> Option<usize> {
    k.textures_for(family).map(|s| s as usize)
}

/// Which texture kernel runs an f32 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextureShape {
    /// 64 × 128 output tiles.
    Wide,
    /// Up to 32 columns (the LoRA products with r columns).
    Narrow,
    /// Up to 32 rows, computed transposed.
    NarrowTransposed,
    /// c = Aᵀ B over stored [K, M] and [K, N] (A given transposed, B plain).
    Tn,
}

/// An f32 product as the selection sees it: c [m, n] = A [m, k] · B [k, n].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Both operands stored with k the row (A transposed, B plain): rows of K, no transposing
    /// pack.
    pub k_major: bool,
}

/// The kernels of an f32 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKey {
    /// Texture kernels (software path), their eight-lane subgroup versions where
    /// `eight_lanes` (each version's own conditions on alignment still apply).
    Textures {
        shape: TextureShape,
        eight_lanes: bool,
    },
    /// Workgroup-memory tiles (portable path), k steps of `depth`.
    Tiles { depth: u32 },
    /// Register-tile buffer kernels: the software path without textures, and single rows.
    Buffer,
}

/// The f32 product's kernels: textures where the software path has them and the sides fill
/// their tiles reasonably, the portable tiles for more than one row, else the buffer kernels.
pub fn matmul(k: &Kernels, p: ProductShape) -> MatmulKey {
    if let Some(shape) = texture_shape(k, p) {
        return MatmulKey::Textures {
            shape,
            eight_lanes: k.eight_lanes_for(Family::Matmul),
        };
    }
    if p.m > 1 && k.portable(Family::Matmul) {
        return MatmulKey::Tiles {
            depth: k.gemm_depth,
        };
    }
    MatmulKey::Buffer
}

/// The texture kernel for `p`, if one runs it: the wide kernel when both sides fill its 64 ×
/// 128 workgroup tile reasonably, the narrow one for up to 32 columns or, transposed, up to 32
/// rows; the textures must fit the device.
fn texture_shape(k: &Kernels, p: ProductShape) -> Option<TextureShape> {
    if !textures_fit(k, Family::Matmul, &[texels(p.k), p.m, p.n]) {
        return None;
    }
    if p.k_major && p.m.min(p.n) <= 32 && p.m.max(p.n) >= 64 {
        let sides = [p.k, texels(p.m), texels(p.n)];
        return textures_fit(k, Family::Matmul, &sides).then_some(TextureShape::Tn);
    }
    match (p.m, p.n) {
        (m, n) if m >= 64 && n >= 64 => Some(TextureShape::Wide),
        (m, n) if m >= 64 && n <= 32 => Some(TextureShape::Narrow),
        (m, n) if m <= 32 && n >= 64 => Some(TextureShape::NarrowTransposed),
        _ => None,
    }
}

/// An NF4 product as the selection sees it: `rows` rows times a weight [n_out, n_in] in
/// blocks of `blocksize`, forward (y = x·Wᵀ) or backward (dx = dy·W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nf4Shape {
    pub rows: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub blocksize: usize,
    pub backward: bool,
}

/// The kernels of an NF4 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nf4Key {
    /// Texture kernels (software path): the eight-lane subgroup versions where
    /// `eight_lanes` (tile queues, the adapter's term fused in), else the plain ones.
    Textures { eight_lanes: bool },
    /// Workgroup-memory tiles (portable path), the forward's staged in f16 where `f16`.
    Tiles { f16: bool },
    /// One row (decoding): 64 invocations an output over whole code words where `rows`
    /// (portable path), else an output an invocation.
    Matvec { rows: bool },
    /// The software buffer kernels.
    Buffer,
}

impl Nf4Key {
    /// Whether the product's kernel adds an adapter's term x_a·Bᵀ (dy_b·A backward) of rank
    /// `r` over `lhs_rows` rows itself, rather than a product after it: the portable tiles
    /// at any rank, the eight-lane texture kernels at ranks of a multiple of 4 whose textures
    /// fit (`factor_sides`: the factor's texture sides).
    pub fn fuses_lora(
        self,
        k: &Kernels,
        s: Nf4Shape,
        (lhs_rows, r): (usize, usize),
        factor_sides: [usize; 2],
    ) -> bool {
        let whole = lhs_rows == s.rows && r > 0;
        match self {
            Nf4Key::Tiles { .. } => whole && s.rows > 1,
            Nf4Key::Textures { eight_lanes: true } => {
                let sides = [r / 4, factor_sides[0], factor_sides[1]];
                whole && r.is_multiple_of(4) && textures_fit(k, Family::Nf4, &sides)
            }
            _ => false,
        }
    }
}

/// The NF4 product's kernels. Textures need codes of a texel (32) inside one scale block,
/// sides that fill the 64 × 128 tile reasonably and textures that fit; the eight-lane forward
/// stores four outputs at once (n_out a multiple of 4).
pub fn nf4(k: &Kernels, s: Nf4Shape) -> Nf4Key {
    let out_side = if s.backward { s.n_in } else { s.n_out };
    if nf4_on_textures(k, s, out_side) {
        let eight_lanes =
            k.eight_lanes_for(Family::Nf4) && (s.backward || s.n_out.is_multiple_of(4));
        return Nf4Key::Textures { eight_lanes };
    }
    if s.rows == 1 && !s.backward {
        let rows = k.portable(Family::Nf4) && s.n_in.is_multiple_of(8);
        return Nf4Key::Matvec { rows };
    }
    if k.portable(Family::Nf4) {
        let f16 = k.f16_tiles && !s.backward;
        return Nf4Key::Tiles { f16 };
    }
    Nf4Key::Buffer
}

fn nf4_on_textures(k: &Kernels, s: Nf4Shape, out_side: usize) -> bool {
    let bs = s.blocksize;
    let layout = s.n_in.is_multiple_of(32) && bs.is_multiple_of(32) && s.n_in.is_multiple_of(bs);
    layout
        && s.rows >= 64
        && out_side >= 64
        && textures_fit(k, Family::Nf4, &[s.rows, texels(s.n_in), texels(s.n_out)])
        && nf4_weight_layouts(k, s).is_some()
}

/// The linear texture layouts of an NF4 weight's codes (four words, 32 codes, a texel) and
/// scales, where the texture kernels may hold them.
pub fn nf4_weight_layouts(k: &Kernels, s: Nf4Shape) -> Option<(Linear, Linear)> {
    let max = texture_side(k, Family::Nf4)?;
    let codes = Linear::fitting(s.n_out * s.n_in / 32, max)?;
    let scales = Linear::fitting(texels(s.n_out * (s.n_in / s.blocksize)), max)?;
    Some((codes, scales))
}

/// An attention as the selection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSelect {
    pub tokens: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// A sliding window (the eight-lane kernels have none).
    pub windowed: bool,
}

/// The flash kernels' workgroup: 64 invocations, query rows (forward, dq) or key rows (dkv).
pub const FLASH_ROWS: usize = 64;

/// The head_dim the eight-lane texture kernels are written for (rows of 16 texels).
pub const SUBGROUP_HEAD_DIM: usize = 64;

/// The kernels of an attention (forward and backward alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKey {
    /// FlashAttention-2 tiles (portable path) for kv groups of at most 64 heads.
    Flash,
    /// Texture kernels (software path), the eight-lane versions where `eight_lanes`.
    Textures { eight_lanes: bool },
    /// A query or key row an invocation, over buffers.
    Rows,
}

/// The attention's kernels: flash tiles on the portable path, textures where every
/// [rows, head_dim / 4] texture fits (eight lanes at head_dim 64 without a window), else rows.
pub fn attention(k: &Kernels, a: AttentionSelect) -> AttentionKey {
    if k.portable(Family::Attention) && a.heads / a.kv_heads <= FLASH_ROWS {
        return AttentionKey::Flash;
    }
    if textures_fit(k, Family::Attention, &[a.tokens * a.heads, a.head_dim / 4]) {
        let eight_lanes =
            k.eight_lanes_for(Family::Attention) && a.head_dim == SUBGROUP_HEAD_DIM && !a.windowed;
        return AttentionKey::Textures { eight_lanes };
    }
    AttentionKey::Rows
}

/// The kernels of an RMSNorm over rows of `cols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmsnormKey {
    /// The forward a subgroup per row in turn (portable path with subgroups of 4 to 64
    /// lanes, all inside the workgroup of 64), else a row an invocation.
    pub subgroups: bool,
    /// The row kernels' vector width: 4 for rows of a multiple of 4, else 1.
    pub lanes: u32,
    /// A residual add and the norm after it as one dispatch (`rmsnorm_residual`, portable).
    pub fused_residual: bool,
    /// The backward a workgroup a row (`rmsnorm_backward_rows`, portable: coalesced), else a
    /// row an invocation.
    pub backward_rows: bool,
}

pub fn rmsnorm(k: &Kernels, cols: usize) -> RmsnormKey {
    let fit = k.subgroups.is_some_and(|(_, max)| max <= 64);
    RmsnormKey {
        subgroups: k.portable_subgroups(Family::Rmsnorm) && fit,
        lanes: if cols.is_multiple_of(4) { 4 } else { 1 },
        fused_residual: k.portable(Family::Rmsnorm),
        backward_rows: k.portable(Family::Rmsnorm),
    }
}

/// The lm-head's cross-entropy over vocabulary chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyKey {
    /// The online softmax a row a workgroup of 256 (portable path), else a row an invocation;
    /// the rescale of the running gradient by elements, else by rows.
    pub rows_per_workgroup: bool,
    /// The products run on textures, where a chunk's numerators and weight rows are packed
    /// too: chunks are kept smaller (`cross_entropy::chunk_bytes`).
    pub packed_products: bool,
}

pub fn cross_entropy(k: &Kernels) -> CrossEntropyKey {
    CrossEntropyKey {
        rows_per_workgroup: k.path(Family::CrossEntropy) == Path::Portable,
        packed_products: k.textures_for(Family::Matmul).is_some(),
    }
}

/// Whether training keeps each layer's adapter products x·Aᵀ for the recomputation under
/// checkpointing: on the portable path, where a GPU pays more for seven more dispatches a
/// layer than for those megabytes.
pub fn keep_adapter_products(k: &Kernels) -> bool {
    k.portable(Family::Matmul)
}
