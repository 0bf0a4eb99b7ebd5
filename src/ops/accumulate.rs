//! Gradient accumulation over micro-batches: acc = acc·keep + g·weight, with (keep, weight)
//! read from a [2] tensor so one compiled graph serves every micro-batch.

use crate::graph::{Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static ACCUMULATE: Kernel = Kernel {
    name: "accumulate",
    shader: &shaders::ACCUMULATE,
    entry: "accumulate",
    textures: &[],
    bindings: &[
        Binding::read("g", DType::F32),
        Binding::read("coef", DType::F32),
        Binding::read_write("acc", DType::F32),
    ],
};

const WORKGROUP: usize = 64;

/// `acc = acc * coef[0] + g * coef[1]` in place (acc = g·coef[1] when coef[0] is 0).
pub fn accumulate(
    g: &mut Graph,
    name: &str,
    grad: TensorId,
    coef: TensorId,
    acc: TensorId,
) -> Result<(), GraphError> {
    g.expect_same_shape(name, grad, acc)?;
    if g.tensor(coef).numel() != 2 {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!("coef must hold 2 values, not {:?}", g.tensor(coef).shape),
        });
    }
    let n = g.tensor(acc).numel();
    g.push(
        name,
        &ACCUMULATE,
        &[grad, coef, acc],
        Params::new().u32(n as u32),
        Dispatch::linear(n, WORKGROUP),
    )?;
    Ok(())
}

pub fn cpu_accumulate(acc: &[f32], grad: &[f32], keep: f32, weight: f32) -> Vec<f32> {
    acc.iter()
        .zip(grad)
        .map(|(&a, &g)| if keep == 0.0 { 0.0 } else { a * keep } + g * weight)
        .collect()
}
