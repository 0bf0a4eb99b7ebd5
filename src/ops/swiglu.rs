//! SiLU-gated product: out = silu(gate) * up.

use crate::graph::{Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static FORWARD: Kernel = Kernel {
    name: "swiglu_forward",
    shader: &shaders::SWIGLU,
    entry: "swiglu_forward",
    bindings: &[
        Binding {
            name: "gate",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "up",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "out",
            access: Access::Write,
            dtype: DType::F32,
        },
    ],
};

const WORKGROUP: usize = 64;

/// `silu(gate) * up` as a new temporary named `name`.
pub fn forward(
    g: &mut Graph,
    name: &str,
    gate: TensorId,
    up: TensorId,
) -> Result<TensorId, GraphError> {
    g.expect_same_shape(name, gate, up)?;
    let shape = g.tensor(gate).shape.clone();
    let out = g.temp(name, &shape, DType::F32);
    let n: usize = shape.iter().product();
    let params = Params::new().u32(n as u32);
    g.push(
        name,
        &FORWARD,
        &[gate, up, out],
        params,
        Dispatch::linear(n, WORKGROUP),
    )?;
    Ok(out)
}

pub fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

pub fn cpu_forward(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}
