//! Operands written into textures for the texture kernels of software devices
//! (`Graph::for_device`): a strided f32 matrix into rgba32float texels of four consecutive k;
//! a tensor's texels in order (`Linear`: the NF4 weights' code words, eight codes a u32, four
//! words a rgba32uint texel, and their scales), packed by copying the buffer.

use crate::graph::{
    Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId, TexelFormat,
    TextureBinding, TextureCopy, TextureId,
};
use crate::shaders;

pub static PACK_F32: Kernel = Kernel {
    name: "pack_f32",
    shader: &shaders::PACK,
    entry: "pack_f32",
    bindings: &[Binding::read("src", DType::F32)],
    textures: &[TextureBinding::write("dst", TexelFormat::Rgba32Float)],
};

/// `pack_f32` reading a row's texel as one vec4 (contiguous k, aligned rows).
pub static PACK_ROWS: Kernel = Kernel {
    name: "pack_rows",
    shader: &shaders::PACK_VEC4,
    entry: "pack_rows",
    bindings: PACK_F32.bindings,
    textures: PACK_F32.textures,
};

/// `pack_f32` of a transposed source (contiguous r), 4x4 blocks read as vec4s.
pub static PACK_COLS: Kernel = Kernel {
    name: "pack_cols",
    shader: &shaders::PACK_VEC4,
    entry: "pack_cols",
    bindings: PACK_F32.bindings,
    textures: PACK_F32.textures,
};

pub static PACK_WORDS: Kernel = Kernel {
    name: "pack_words",
    shader: &shaders::PACK_WORDS,
    entry: "pack_words",
    bindings: &[Binding::read("src", DType::Nf4)],
    textures: &[TextureBinding::write("dst", TexelFormat::Rgba32Uint)],
};

/// A matrix inside a tensor: element (r, k) at `offset + r * row_stride + k * k_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    pub tensor: TensorId,
    pub offset: usize,
    pub rows: usize,
    pub k: usize,
    pub row_stride: usize,
    pub k_stride: usize,
}

/// Texels along k for `k` values (four a texel).
pub fn texels(k: usize) -> usize {
    k.div_ceil(4)
}

/// Write `src` into the rgba32float texture [rows, ceil(k / 4)] of operand `slot` (no node
/// when the texture already holds exactly that, e.g. the hidden states for every lm-head
/// chunk).
pub fn pack_f32(
    g: &mut Graph,
    label: &str,
    src: Strided,
    slot: u8,
) -> Result<TextureId, GraphError> {
    let width = texels(src.k);
    let tex = g.texture(TexelFormat::Rgba32Float, width, src.rows, slot);
    let params = Params::new()
        .u32(src.rows as u32)
        .u32(src.k as u32)
        .u32(width as u32)
        .u32(src.offset as u32)
        .u32(src.row_stride as u32)
        .u32(src.k_stride as u32);
    if g.holds(tex, src.tensor, &params) {
        return Ok(tex);
    }
    let aligned = |v: usize| v.is_multiple_of(4);
    let vec4_k = aligned(src.k) && aligned(src.offset);
    let (kernel, rows_per_group) = if vec4_k && src.k_stride == 1 && aligned(src.row_stride) {
        (&PACK_ROWS, 8)
    } else if vec4_k && src.row_stride == 1 && aligned(src.k_stride) && aligned(src.rows) {
        (&PACK_COLS, 32)
    } else {
        (&PACK_F32, 8)
    };
    let dispatch = Dispatch::Grid([
        width.div_ceil(8) as u32,
        src.rows.div_ceil(rows_per_group) as u32,
        1,
    ]);
    let label = format!("{label}.pack{slot}");
    g.push_with_textures(
        label,
        kernel,
        &[src.tensor],
        &[tex],
        params.clone(),
        dispatch,
    )?;
    if std::ptr::eq(kernel, &PACK_ROWS) {
        g.nodes.last_mut().expect("just pushed").copy = rows_copy(src);
    }
    g.record_pack(tex, src.tensor, params);
    Ok(tex)
}

/// The copy that packs `src` (rows of contiguous, aligned k) when its rows are as far apart
/// as a buffer-to-texture copy requires.
fn rows_copy(src: Strided) -> Option<TextureCopy> {
    let bytes_per_row = 4 * src.row_stride as u32;
    let aligned = bytes_per_row.is_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    (aligned && src.k_stride == 1 && src.k.is_multiple_of(4) && src.offset.is_multiple_of(4))
        .then_some(TextureCopy {
            offset: 4 * src.offset as u64,
            bytes_per_row,
            width: texels(src.k) as u32,
            rows: src.rows as u32,
            tail: 0,
        })
}

/// A tensor's texels (four values each) in order in a texture of `width` texels a row, `width`
/// a power of two of at least 16 (rows of 256 bytes, as buffer-to-texture copies need):
/// texel L at (L % width, L / width). Packing one is a copy of the whole buffer, for any
/// shape; the NF4 weights' codes and scales are kept so (`nf4_matmul_tex*.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    pub texels: usize,
    pub width: usize,
}

impl Linear {
    /// The narrowest layout of `texels` texels whose sides fit in `max_side`, if any.
    pub fn fitting(texels: usize, max_side: usize) -> Option<Linear> {
        if max_side < 16 {
            return None;
        }
        let mut width = 16;
        while texels.div_ceil(width) > max_side {
            width *= 2;
        }
        (width <= max_side).then_some(Linear { texels, width })
    }

    pub fn height(&self) -> usize {
        self.texels.div_ceil(self.width)
    }

    /// The copy of the tensor's bytes into it: the whole rows, then the partial last one.
    fn copy(&self) -> TextureCopy {
        TextureCopy {
            offset: 0,
            bytes_per_row: 16 * self.width as u32,
            width: self.width as u32,
            rows: (self.texels / self.width) as u32,
            tail: (self.texels % self.width) as u32,
        }
    }
}

/// Write `tensor`'s texels (f32 values into rgba32float texels, NF4 code words into rgba32uint
/// ones) into the texture of `layout` for operand `slot`: a buffer-to-texture copy (no node
/// when the texture already holds them). The node's kernel packs the same texels (whole rows
/// of the source), for graphs run without copies.
pub fn pack_linear(
    g: &mut Graph,
    label: &str,
    tensor: TensorId,
    layout: Linear,
    slot: u8,
) -> Result<TextureId, GraphError> {
    let (width, height) = (layout.width, layout.height());
    // pack_words' params for rows of 4·width values, `width` texels each (pack_rows' add the
    // stride along k).
    let rows = Params::new()
        .u32(height as u32)
        .u32(4 * width as u32)
        .u32(width as u32)
        .u32(0)
        .u32(4 * width as u32);
    let (format, kernel, params) = match g.tensor(tensor).dtype {
        DType::F32 => (TexelFormat::Rgba32Float, &PACK_ROWS, rows.u32(1)),
        _ => (TexelFormat::Rgba32Uint, &PACK_WORDS, rows),
    };
    let tex = g.texture(format, width, height, slot);
    if g.holds(tex, tensor, &params) {
        return Ok(tex);
    }
    let dispatch = Dispatch::Grid([width.div_ceil(8) as u32, height.div_ceil(8) as u32, 1]);
    let label = format!("{label}.pack{slot}");
    g.push_with_textures(label, kernel, &[tensor], &[tex], params.clone(), dispatch)?;
    g.nodes.last_mut().expect("just pushed").copy = Some(layout.copy());
    g.record_pack(tex, tensor, params);
    Ok(tex)
}
