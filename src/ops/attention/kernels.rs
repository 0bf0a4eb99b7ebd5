//! The attention kernels: the row-an-invocation ones (software devices without textures), the
//! portable FlashAttention-2 tiles (`FLASH_*`), each with a masked variant for packed rows.
//! `super` chooses among them.

use crate::graph::Kernel;
use crate::ops::{read, write};
use crate::shaders;

pub static FORWARD: Kernel = Kernel {
    name: "attention_forward",
    shader: &shaders::ATTENTION_FORWARD,
    entry: "attention_forward",
    textures: &[],
    bindings: &[read("q"), read("k"), read("v"), write("out"), write("lse")],
};

pub static DELTA: Kernel = Kernel {
    name: "attention_delta",
    shader: &shaders::ATTENTION_DELTA,
    entry: "attention_delta",
    textures: &[],
    bindings: &[read("d_out"), read("out"), write("delta")],
};

pub static BACKWARD_DQ: Kernel = Kernel {
    name: "attention_backward_dq",
    shader: &shaders::ATTENTION_BACKWARD_DQ,
    entry: "attention_backward_dq",
    textures: &[],
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("d_out"),
        read("lse"),
        read("delta"),
        write("dq"),
    ],
};

pub static BACKWARD_DKV: Kernel = Kernel {
    name: "attention_backward_dkv",
    shader: &shaders::ATTENTION_BACKWARD_DKV,
    entry: "attention_backward_dkv",
    textures: &[],
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("d_out"),
        read("lse"),
        read("delta"),
        write("dk"),
        write("dv"),
    ],
};

/// The portable forward (FlashAttention-2 style: keys and values in workgroup tiles shared by
/// a block of queries of every head of a kv group; attention_flash_forward.wgsl).
pub static FLASH_FORWARD: Kernel = Kernel {
    name: "attention_flash_forward",
    shader: &shaders::ATTENTION_FLASH_FORWARD,
    entry: "attention_flash_forward",
    textures: &[],
    bindings: &[read("q"), read("k"), read("v"), write("out"), write("lse")],
};

/// The portable backward, step 1: deltas and query gradients on the forward's tiles.
pub static FLASH_BACKWARD_DQ: Kernel = Kernel {
    name: "attention_flash_backward_dq",
    shader: &shaders::ATTENTION_FLASH_BACKWARD_DQ,
    entry: "attention_flash_backward_dq",
    textures: &[],
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("d_out"),
        read("out"),
        read("lse"),
        write("delta"),
        write("dq"),
    ],
};

/// The portable backward, step 2: key and value gradients, queries in workgroup tiles.
pub static FLASH_BACKWARD_DKV: Kernel = Kernel {
    name: "attention_flash_backward_dkv",
    shader: &shaders::ATTENTION_FLASH_BACKWARD_DKV,
    entry: "attention_flash_backward_dkv",
    textures: &[],
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("d_out"),
        read("lse"),
        read("delta"),
        write("dk"),
        write("dv"),
    ],
};

/// The forward with a per-token mask (packed rows; see attention_forward_masked.wgsl).
pub static FORWARD_MASKED: Kernel = Kernel {
    name: "attention_forward_masked",
    shader: &shaders::ATTENTION_FORWARD_MASKED,
    entry: "attention_forward_masked",
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("mask"),
        write("out"),
        write("lse"),
    ],
    textures: &[],
};

/// The masked backward, query gradient (see attention_backward_dq_masked.wgsl).
pub static BACKWARD_DQ_MASKED: Kernel = Kernel {
    name: "attention_backward_dq_masked",
    shader: &shaders::ATTENTION_BACKWARD_DQ_MASKED,
    entry: "attention_backward_dq_masked",
    textures: &[],
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("d_out"),
        read("lse"),
        read("delta"),
        read("mask"),
        write("dq"),
    ],
};

/// The masked backward, key or value gradient by the override DV (see
/// attention_backward_dkv_masked.wgsl).
pub static BACKWARD_DKV_MASKED: Kernel = Kernel {
    name: "attention_backward_dkv_masked",
    shader: &shaders::ATTENTION_BACKWARD_DKV_MASKED,
    entry: "attention_backward_dkv_masked",
    textures: &[],
    bindings: &[
        read("q"),
        read("k"),
        read("v"),
        read("d_out"),
        read("lse"),
        read("delta"),
        read("mask"),
        write("grad"),
    ],
};

/// The portable forward over packed rows: `FORWARD_MASKED`'s bindings on the flash forward's
/// workgroups and key tiles (attention_flash_forward_masked.wgsl).
pub static FLASH_FORWARD_MASKED: Kernel = Kernel {
    name: "attention_flash_forward_masked",
    shader: &shaders::ATTENTION_FLASH_FORWARD_MASKED,
    entry: "attention_flash_forward_masked",
    textures: &[],
    bindings: FORWARD_MASKED.bindings,
};

/// The portable masked backward, query gradient: `BACKWARD_DQ_MASKED`'s bindings on the flash
/// dq's tiles (attention_flash_backward_dq_masked.wgsl).
pub static FLASH_BACKWARD_DQ_MASKED: Kernel = Kernel {
    name: "attention_flash_backward_dq_masked",
    shader: &shaders::ATTENTION_FLASH_BACKWARD_DQ_MASKED,
    entry: "attention_flash_backward_dq_masked",
    textures: &[],
    bindings: BACKWARD_DQ_MASKED.bindings,
};

/// The portable masked backward, key or value gradient by the override DV:
/// `BACKWARD_DKV_MASKED`'s bindings on the flash dkv's query tiles
/// (attention_flash_backward_dkv_masked.wgsl).
pub static FLASH_BACKWARD_DKV_MASKED: Kernel = Kernel {
    name: "attention_flash_backward_dkv_masked",
    shader: &shaders::ATTENTION_FLASH_BACKWARD_DKV_MASKED,
    entry: "attention_flash_backward_dkv_masked",
    textures: &[],
    bindings: BACKWARD_DKV_MASKED.bindings,
};
