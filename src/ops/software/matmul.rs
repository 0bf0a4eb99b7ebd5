//! The f32 products' texture kernels (software devices: `shaders/software/matmul_tex*.wgsl`),
//! which `ops::matmul` chooses on the software path. Operands are packed into textures first
//! (`super::pack`).

use crate::graph::{Binding, DType, Kernel, TexelFormat, TextureBinding};
use crate::shaders;

const TEX_OPERANDS: &[TextureBinding] = &[
    TextureBinding::read("a_tex", TexelFormat::Rgba32Float),
    TextureBinding::read("b_tex", TexelFormat::Rgba32Float),
];

/// c = alpha · A · B with both operands packed into textures (software devices); c += … with
/// the ACCUMULATE constant, as every kernel here.
pub static MATMUL_TEX: Kernel = Kernel {
    name: "matmul_tex",
    shader: &shaders::MATMUL_TEX,
    entry: "matmul_tex",
    bindings: &[Binding::write("c", DType::F32)],
    textures: TEX_OPERANDS,
};

/// `MATMUL_TEX` sharing rows by subgroup broadcasts (eight-lane subgroups; the same results),
/// its 32x32 tiles taken from a queue (`Dispatch::TileQueue`).
pub static MATMUL_TEX_SG: Kernel = Kernel {
    name: "matmul_tex_sg",
    shader: &shaders::MATMUL_TEX_SG,
    entry: "matmul_tex_sg",
    bindings: MATMUL_TEX.bindings,
    textures: TEX_OPERANDS,
};

/// `MATMUL_TEX_SG` reading B's rows as stored (the shader's `B_ROWS`, which its nodes set).
pub static MATMUL_TEX_SG_KN: Kernel = Kernel {
    name: "matmul_tex_sg_kn",
    shader: &shaders::MATMUL_TEX_SG,
    entry: "matmul_tex_sg",
    bindings: MATMUL_TEX.bindings,
    textures: TEX_OPERANDS,
};

/// The constant that makes `matmul_tex_sg` read B's rows as stored.
pub(crate) const B_ROWS: [(&str, f64); 1] = [("B_ROWS", 1.0)];

/// c = alpha · A · B for at most 32 columns, texture operands.
pub static MATMUL_TEX_NARROW: Kernel = Kernel {
    name: "matmul_tex_narrow",
    shader: &shaders::MATMUL_TEX,
    entry: "matmul_tex_narrow",
    bindings: MATMUL_TEX.bindings,
    textures: TEX_OPERANDS,
};

/// c = alpha · Aᵀ B with A [K, M], B [K, N] stored with K as rows, texture operands.
pub static MATMUL_TEX_TN: Kernel = Kernel {
    name: "matmul_tex_tn",
    shader: &shaders::MATMUL_TEX,
    entry: "matmul_tex_tn",
    bindings: MATMUL_TEX.bindings,
    textures: TEX_OPERANDS,
};

/// `MATMUL_TEX_NARROW` sharing B's texels by subgroup broadcasts (eight-lane subgroups; same
/// dispatch and results).
pub static MATMUL_TEX_NARROW_SG: Kernel = Kernel {
    name: "matmul_tex_narrow_sg",
    shader: &shaders::MATMUL_TEX_NARROW_SG,
    entry: "matmul_tex_narrow_sg",
    bindings: MATMUL_TEX.bindings,
    textures: TEX_OPERANDS,
};

/// `MATMUL_TEX_TN` sharing B's texels by subgroup broadcasts (same results; a quarter of its
/// rows a workgroup).
pub static MATMUL_TEX_TN_SG: Kernel = Kernel {
    name: "matmul_tex_tn_sg",
    shader: &shaders::MATMUL_TEX_NARROW_SG,
    entry: "matmul_tex_tn_sg",
    bindings: MATMUL_TEX.bindings,
    textures: TEX_OPERANDS,
};
