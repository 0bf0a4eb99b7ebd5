//! The NF4 products' texture kernels (software devices: `shaders/software/nf4_matmul_tex*.wgsl`),
//! which `ops::nf4_matmul` chooses on the software path: x (or dy), the codes and the scales
//! packed into textures (`super::pack`), and with the subgroup versions an adapter's term.

use crate::graph::{Access, Binding, DType, Kernel, TexelFormat, TextureBinding};
use crate::shaders;

const TEX_OPERANDS: &[TextureBinding] = &[
    TextureBinding::read("x_tex", TexelFormat::Rgba32Float),
    TextureBinding::read("w_tex", TexelFormat::Rgba32Uint),
    TextureBinding::read("absmax_tex", TexelFormat::Rgba32Float),
];

const fn tex_output(access: Access) -> [Binding; 1] {
    [Binding {
        name: "y",
        access,
        dtype: DType::F32,
    }]
}

/// The subgroup kernels' operands: `TEX_OPERANDS` and an adapter's low-rank term.
const TEX_SG_OPERANDS: &[TextureBinding] = &[
    TEX_OPERANDS[0],
    TEX_OPERANDS[1],
    TEX_OPERANDS[2],
    TextureBinding::read("lhs_tex", TexelFormat::Rgba32Float),
    TextureBinding::read("factor_tex", TexelFormat::Rgba32Float),
];

static TEX_WRITE: [Binding; 1] = tex_output(Access::Write);

/// y = x · Wᵀ with the operands in textures (software devices).
pub static FORWARD_TEX: Kernel = Kernel {
    name: "nf4_forward_tex",
    shader: &shaders::NF4_MATMUL_TEX,
    entry: "nf4_forward_tex",
    bindings: &TEX_WRITE,
    textures: TEX_OPERANDS,
};

/// dx = dy · W with the operands in textures (dx += … with the ACCUMULATE constant).
pub static BACKWARD_TEX: Kernel = Kernel {
    name: "nf4_backward_tex",
    shader: &shaders::NF4_MATMUL_TEX,
    entry: "nf4_backward_tex",
    bindings: &TEX_WRITE,
    textures: TEX_OPERANDS,
};

/// `FORWARD_TEX` sharing rows by subgroup broadcasts (eight-lane subgroups; the same
/// results, its tiles taken from a queue), optionally with an adapter's term.
pub static FORWARD_TEX_SG: Kernel = Kernel {
    name: "nf4_forward_tex_sg",
    shader: &shaders::NF4_MATMUL_TEX_SG,
    entry: "nf4_forward_tex_sg",
    bindings: &TEX_WRITE,
    textures: TEX_SG_OPERANDS,
};

/// `BACKWARD_TEX` sharing rows by subgroup broadcasts, optionally with an adapter's term.
pub static BACKWARD_TEX_SG: Kernel = Kernel {
    name: "nf4_backward_tex_sg",
    shader: &shaders::NF4_MATMUL_TEX_SG,
    entry: "nf4_backward_tex_sg",
    bindings: &TEX_WRITE,
    textures: TEX_SG_OPERANDS,
};
