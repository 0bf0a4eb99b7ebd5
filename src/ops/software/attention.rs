//! Attention's texture kernels (software devices: `shaders/software/attention_*_tex*.wgsl`),
//! which `ops::attention` chooses on the software path: keys and values (or the queries and
//! output gradients) packed into textures, eight-lane subgroup versions at head_dim 64.

use crate::graph::{Kernel, TexelFormat, TextureBinding};
use crate::ops::{read, write};
use crate::shaders;

const fn read_only(name: &'static str) -> TextureBinding {
    TextureBinding {
        name,
        format: TexelFormat::Rgba32Float,
        write: false,
    }
}

/// The forward with keys and values in textures (software devices).
pub static FORWARD_TEX: Kernel = Kernel {
    name: "attention_forward_tex",
    shader: &shaders::ATTENTION_FORWARD_TEX,
    entry: "attention_forward_tex",
    bindings: &[read("q"), write("out"), write("lse")],
    textures: &[read_only("k_tex"), read_only("v_tex")],
};

pub static BACKWARD_DQ_TEX: Kernel = Kernel {
    name: "attention_backward_dq_tex",
    shader: &shaders::ATTENTION_BACKWARD_DQ_TEX,
    entry: "attention_backward_dq_tex",
    bindings: &[
        read("q"),
        read("d_out"),
        read("lse"),
        read("delta"),
        write("dq"),
    ],
    textures: &[read_only("k_tex"), read_only("v_tex")],
};

pub static BACKWARD_DKV_TEX: Kernel = Kernel {
    name: "attention_backward_dkv_tex",
    shader: &shaders::ATTENTION_BACKWARD_DKV_TEX,
    entry: "attention_backward_dkv_tex",
    bindings: &[read("k"), read("v"), write("dk"), write("dv")],
    textures: &[
        read_only("q_tex"),
        read_only("d_out_tex"),
        read_only("lse_tex"),
        read_only("delta_tex"),
    ],
};

/// The forward on eight-lane subgroups at head_dim 64 (see attention_forward_tex_sg.wgsl).
pub static FORWARD_TEX_SG: Kernel = Kernel {
    name: "attention_forward_tex_sg",
    shader: &shaders::ATTENTION_FORWARD_TEX_SG,
    entry: "attention_forward_tex_sg",
    bindings: FORWARD_TEX.bindings,
    textures: FORWARD_TEX.textures,
};

pub static BACKWARD_DQ_TEX_SG: Kernel = Kernel {
    name: "attention_backward_dq_tex_sg",
    shader: &shaders::ATTENTION_BACKWARD_DQ_TEX_SG,
    entry: "attention_backward_dq_tex_sg",
    bindings: BACKWARD_DQ_TEX.bindings,
    textures: BACKWARD_DQ_TEX.textures,
};

pub static BACKWARD_DKV_TEX_SG: Kernel = Kernel {
    name: "attention_backward_dkv_tex_sg",
    shader: &shaders::ATTENTION_BACKWARD_DKV_TEX_SG,
    entry: "attention_backward_dkv_tex_sg",
    bindings: BACKWARD_DKV_TEX.bindings,
    textures: BACKWARD_DKV_TEX.textures,
};

pub static FORWARD_MASKED_TEX: Kernel = Kernel {
    name: "attention_forward_masked_tex",
    shader: &shaders::ATTENTION_FORWARD_MASKED_TEX,
    entry: "attention_forward_masked_tex",
    bindings: &[read("q"), write("out"), write("lse")],
    textures: &[
        read_only("k_tex"),
        read_only("v_tex"),
        read_only("mask_tex"),
    ],
};
