//! RMSNorm (Llama): y = weight * (x / sqrt(mean(x^2) + eps)), per row.

use crate::graph::{
    shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

pub static FORWARD: Kernel = Kernel {
    name: "rmsnorm_forward",
    shader: &shaders::RMSNORM,
    entry: "rmsnorm_forward",
    bindings: &[
        Binding {
            name: "x",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "weight",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "y",
            access: Access::Write,
            dtype: DType::F32,
        },
        Binding {
            name: "rstd",
            access: Access::Write,
            dtype: DType::F32,
        },
    ],
};

const WORKGROUP: usize = 64;

/// Normalise the rows of `x` [rows, cols] with `weight` [cols]. Returns (y, rstd), named
/// `name` and `<name>_rstd`.
pub fn forward(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    weight: TensorId,
    eps: f32,
) -> Result<(TensorId, TensorId), GraphError> {
    let xs = g.tensor(x).shape.clone();
    let ws = g.tensor(weight).shape.clone();
    let cols = *xs.last().unwrap_or(&0);
    if ws != [cols] {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "weight '{}' is {} but the rows of '{}' {} have {cols} columns",
                g.tensor(weight).name,
                shape_str(&ws),
                g.tensor(x).name,
                shape_str(&xs)
            ),
        });
    }
    let rows = xs.iter().product::<usize>() / cols.max(1);
    let y = g.temp(name, &xs, DType::F32);
    let rstd = g.temp(&format!("{name}_rstd"), &[rows], DType::F32);
    let params = Params::new().u32(rows as u32).u32(cols as u32).f32(eps);
    g.push(
        name,
        &FORWARD,
        &[x, weight, y, rstd],
        params,
        Dispatch::linear(rows, WORKGROUP),
    )?;
    Ok((y, rstd))
}

/// CPU reference: (y, rstd) in the same f32 operation order as the shader and transformers.
pub fn cpu_forward(x: &[f32], weight: &[f32], cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut y = Vec::with_capacity(x.len());
    let mut rstd = Vec::with_capacity(x.len() / cols);
    for row in x.chunks_exact(cols) {
        let sum_sq: f32 = row.iter().map(|v| v * v).sum();
        let r = 1.0 / (sum_sq / cols as f32 + eps).sqrt();
        rstd.push(r);
        y.extend(row.iter().zip(weight).map(|(v, w)| w * (v * r)));
    }
    (y, rstd)
}
