//! Dropout with a counter-based mask (see shaders/dropout.wgsl): the same (seed, salt) gives
//! the same mask in the forward, a recomputed forward and the backward.

use crate::graph::{
    accumulating, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

const BINDINGS_X_SEED: [Binding; 2] = [
    Binding::read("x", DType::F32),
    Binding::read("seed", DType::U32),
];

/// out = dropout(x) (out += … with the ACCUMULATE constant).
pub static DROPOUT: Kernel = Kernel {
    name: "dropout",
    shader: &shaders::DROPOUT,
    entry: "dropout",
    textures: &[],
    bindings: &[
        BINDINGS_X_SEED[0],
        BINDINGS_X_SEED[1],
        Binding::write("out", DType::F32),
    ],
};

/// Dropout probability, the step's seed tensor (u32 [1]) and this site's salt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutSite {
    pub p: f32,
    pub seed: TensorId,
    pub salt: u32,
}

fn push(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    out: TensorId,
    site: DropoutSite,
    accumulate: bool,
) -> Result<(), GraphError> {
    if !(0.0..1.0).contains(&site.p) {
        return Err(GraphError::Unsupported {
            op: name.into(),
            detail: format!("dropout probability {} is not in [0, 1)", site.p),
        });
    }
    g.expect_same_shape(name, x, out)?;
    let n = g.tensor(x).numel();
    let params = Params::new()
        .u32(n as u32)
        .f32(site.p)
        .f32(1.0 / (1.0 - site.p))
        .u32(site.salt);
    let tensors = [x, site.seed, out];
    let dispatch = Dispatch::linear(n, 64);
    g.push_specialized(
        name,
        &DROPOUT,
        &tensors,
        params,
        dispatch,
        accumulating(accumulate),
    )
}

/// A new temporary `name` = dropout(x).
pub fn dropout(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    site: DropoutSite,
) -> Result<TensorId, GraphError> {
    let shape = g.tensor(x).shape.clone();
    let out = g.temp(name, &shape, DType::F32);
    push(g, name, x, out, site, false)?;
    Ok(out)
}

/// `acc += dropout(x)` (the backward of dropout, added into a gradient).
pub fn dropout_into(
    g: &mut Graph,
    name: &str,
    acc: TensorId,
    x: TensorId,
    site: DropoutSite,
) -> Result<(), GraphError> {
    push(g, name, x, acc, site, true)
}

/// Whether element `i` is kept, exactly as the shader decides.
pub fn cpu_keep(p: f32, seed: u32, salt: u32, i: u32) -> bool {
    let mut h = i.wrapping_mul(0x9E37_79B1)
        ^ salt.wrapping_mul(0x85EB_CA77)
        ^ seed.wrapping_mul(0xC2B2_AE3D);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    (h >> 8) as f32 * (1.0 / 16_777_216.0) >= p
}

/// CPU reference: dropout(x) with the shader's mask and scale.
pub fn cpu_dropout(x: &[f32], p: f32, seed: u32, salt: u32) -> Vec<f32> {
    let scale = 1.0 / (1.0 - p);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if cpu_keep(p, seed, salt, i as u32) {
                v * scale
            } else {
                0.0
            }
        })
        .collect()
}
