//! RMSNorm (Llama): y = weight * (x / sqrt(mean(x^2) + eps)), per row. The backward gives the
//! input gradient only: norm weights are frozen in QLoRA. A residual add and the norm after it
//! are one op (`forward_residual`), and the backward can add into a running gradient
//! (`backward_into`).

use super::real::Real;
use super::select;
use crate::graph::{
    shape_str, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

pub static FORWARD: Kernel = Kernel {
    name: "rmsnorm_forward",
    shader: &shaders::RMSNORM,
    entry: "rmsnorm_forward",
    textures: &[],
    bindings: &[
        Binding::read("x", DType::F32),
        Binding::read("weight", DType::F32),
        Binding::write("y", DType::F32),
        Binding::write("rstd", DType::F32),
    ],
};

pub static BACKWARD: Kernel = Kernel {
    name: "rmsnorm_backward",
    shader: &shaders::RMSNORM_BACKWARD,
    entry: "rmsnorm_backward",
    textures: &[],
    bindings: &[
        Binding::read("dy", DType::F32),
        Binding::read("x", DType::F32),
        Binding::read("weight", DType::F32),
        Binding::read("rstd", DType::F32),
        Binding::write("dx", DType::F32),
    ],
};

/// `FORWARD` reading four columns at a time (rows of a multiple of 4, same arithmetic).
/// `FORWARD` on GPUs with subgroups (the portable path): a subgroup per row in turn, lanes
/// across the columns (coalesced reads), the sum of squares by `subgroupAdd`; same bindings,
/// params and dispatch.
pub static FORWARD_SUBGROUP: Kernel = Kernel {
    name: "rmsnorm_forward_subgroup",
    shader: &shaders::RMSNORM_SUBGROUP,
    entry: "rmsnorm_forward_subgroup",
    textures: &[],
    bindings: FORWARD.bindings,
};

pub static FORWARD_VEC4: Kernel = Kernel {
    name: "rmsnorm_forward_vec4",
    shader: &shaders::RMSNORM_VEC4,
    entry: "rmsnorm_forward",
    textures: &[],
    bindings: FORWARD.bindings,
};

/// `BACKWARD` four columns at a time (rows of a multiple of 4, same arithmetic).
pub static BACKWARD_VEC4: Kernel = Kernel {
    name: "rmsnorm_backward_vec4",
    shader: &shaders::RMSNORM_BACKWARD_VEC4,
    entry: "rmsnorm_backward",
    textures: &[],
    bindings: BACKWARD.bindings,
};

/// `BACKWARD` a workgroup a row (the portable path: coalesced loads, the row's sum reduced in
/// workgroup memory; rmsnorm_backward.wgsl's second entry point).
pub static BACKWARD_ROWS: Kernel = Kernel {
    name: "rmsnorm_backward_rows",
    shader: &shaders::RMSNORM_BACKWARD,
    entry: "rmsnorm_backward_rows",
    textures: &[],
    bindings: BACKWARD.bindings,
};

/// `BACKWARD_ROWS` four columns at a time.
pub static BACKWARD_ROWS_VEC4: Kernel = Kernel {
    name: "rmsnorm_backward_rows_vec4",
    shader: &shaders::RMSNORM_BACKWARD_VEC4,
    entry: "rmsnorm_backward_rows",
    textures: &[],
    bindings: BACKWARD.bindings,
};

/// A residual add and the norm after it in one dispatch (portable; rmsnorm_residual.wgsl).
pub static RESIDUAL: Kernel = Kernel {
    name: "rmsnorm_residual",
    shader: &shaders::RMSNORM_RESIDUAL,
    entry: "rmsnorm_residual",
    textures: &[],
    bindings: &[
        Binding::read("a", DType::F32),
        Binding::read("b", DType::F32),
        Binding::read("weight", DType::F32),
        Binding::write("sum", DType::F32),
        Binding::write("y", DType::F32),
        Binding::write("rstd", DType::F32),
    ],
};

/// The backward kernels' constant that adds into dx instead of storing.
const ACCUMULATE: [(&str, f64); 1] = [(crate::graph::ACCUMULATE, 1.0)];

const WORKGROUP: usize = 64;

/// Rows and columns of `x` normalised by `weight`, or a shape error naming both.
fn rows_cols(
    g: &Graph,
    name: &str,
    x: TensorId,
    weight: TensorId,
) -> Result<(usize, usize), GraphError> {
    let xs = &g.tensor(x).shape;
    let ws = &g.tensor(weight).shape;
    let cols = *xs.last().unwrap_or(&0);
    if ws != &[cols] {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "weight '{}' is {} but the rows of '{}' {} have {cols} columns",
                g.tensor(weight).name,
                shape_str(ws),
                g.tensor(x).name,
                shape_str(xs)
            ),
        });
    }
    Ok((xs.iter().product::<usize>() / cols.max(1), cols))
}

/// Normalise the rows of `x` [rows, cols] with `weight` [cols]. Returns (y, rstd), named
/// `name` and `<name>_rstd`.
pub fn forward(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    weight: TensorId,
    eps: f32,
) -> Result<(TensorId, TensorId), GraphError> {
    let (rows, cols) = rows_cols(g, name, x, weight)?;
    let shape = g.tensor(x).shape.clone();
    let y = g.temp(name, &shape, DType::F32);
    let rstd = g.temp(&format!("{name}_rstd"), &[rows], DType::F32);
    let params = Params::new().u32(rows as u32).u32(cols as u32).f32(eps);
    let dispatch = Dispatch::linear(rows, WORKGROUP);
    let key = select::rmsnorm(&g.kernels, cols);
    let kernel = match (key.subgroups, key.lanes) {
        (true, _) => &FORWARD_SUBGROUP,
        (false, 4) => &FORWARD_VEC4,
        (false, _) => &FORWARD,
    };
    g.push(name, kernel, &[x, weight, y, rstd], params, dispatch)?;
    Ok((y, rstd))
}

/// dx for `dy`, given the forward's input `x`, `weight` and saved `rstd`.
/// sum = a + b and its norm: (sum, y, rstd), `sum` named `sum_name`, y `name`. One dispatch
/// where the norm runs the portable kernels, else a residual add and the norm.
pub fn forward_residual(
    g: &mut Graph,
    (sum_name, name): (&str, &str),
    (a, b): (TensorId, TensorId),
    weight: TensorId,
    eps: f32,
) -> Result<(TensorId, TensorId, TensorId), GraphError> {
    let (_, cols) = rows_cols(g, name, a, weight)?;
    if !select::rmsnorm(&g.kernels, cols).fused_residual {
        let sum = super::residual::add(g, sum_name, a, b)?;
        let (y, rstd) = forward(g, name, sum, weight, eps)?;
        return Ok((sum, y, rstd));
    }
    let (rows, cols) = rows_cols(g, name, a, weight)?;
    g.expect_same_shape(name, b, a)?;
    let shape = g.tensor(a).shape.clone();
    let sum = g.temp(sum_name, &shape, DType::F32);
    let y = g.temp(name, &shape, DType::F32);
    let rstd = g.temp(&format!("{name}_rstd"), &[rows], DType::F32);
    let params = Params::new().u32(rows as u32).u32(cols as u32).f32(eps);
    let tensors = [a, b, weight, sum, y, rstd];
    g.push(
        name,
        &RESIDUAL,
        &tensors,
        params,
        Dispatch::Linear(rows as u32),
    )?;
    Ok((sum, y, rstd))
}

/// The gradient of the norm's input for `dy`, a new temporary `name`.
pub fn backward(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    x: TensorId,
    weight: TensorId,
    rstd: TensorId,
) -> Result<TensorId, GraphError> {
    let dx = g.temp(name, &g.tensor(x).shape.clone(), DType::F32);
    push_backward(g, name, dy, x, weight, rstd, (dx, false))?;
    Ok(dx)
}

/// `backward`, added into `dx` (a residual stream's running gradient): one dispatch instead
/// of a backward and an add.
pub fn backward_into(
    g: &mut Graph,
    name: &str,
    dx: TensorId,
    dy: TensorId,
    x: TensorId,
    weight: TensorId,
    rstd: TensorId,
) -> Result<(), GraphError> {
    g.expect_same_shape(name, dx, x)?;
    push_backward(g, name, dy, x, weight, rstd, (dx, true))
}

fn push_backward(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    x: TensorId,
    weight: TensorId,
    rstd: TensorId,
    (dx, accumulate): (TensorId, bool),
) -> Result<(), GraphError> {
    let (rows, cols) = rows_cols(g, name, x, weight)?;
    g.expect_same_shape(name, dy, x)?;
    let params = Params::new().u32(rows as u32).u32(cols as u32);
    let key = select::rmsnorm(&g.kernels, cols);
    let (kernel, dispatch) = match (key.backward_rows, key.lanes) {
        (true, 4) => (&BACKWARD_ROWS_VEC4, Dispatch::Linear(rows as u32)),
        (true, _) => (&BACKWARD_ROWS, Dispatch::Linear(rows as u32)),
        (false, 4) => (&BACKWARD_VEC4, Dispatch::linear(rows, WORKGROUP)),
        (false, _) => (&BACKWARD, Dispatch::linear(rows, WORKGROUP)),
    };
    let constants: &[_] = if accumulate { &ACCUMULATE } else { &[] };
    let tensors = [dy, x, weight, rstd, dx];
    g.push_specialized(name, kernel, &tensors, params, dispatch, constants)
}

/// CPU reference: (y, rstd), in the shader's (and transformers') operation order.
pub fn cpu_forward<R: Real>(x: &[R], weight: &[R], cols: usize, eps: f64) -> (Vec<R>, Vec<R>) {
    let mut y = Vec::with_capacity(x.len());
    let mut rstd = Vec::with_capacity(x.len() / cols);
    for row in x.chunks_exact(cols) {
        let sum_sq: R = row.iter().map(|&v| v * v).sum();
        let r = R::of(1.0) / (sum_sq / R::of(cols as f64) + R::of(eps)).sqrt();
        rstd.push(r);
        y.extend(row.iter().zip(weight).map(|(&v, &w)| w * (v * r)));
    }
    (y, rstd)
}

/// CPU reference of the input gradient.
pub fn cpu_backward<R: Real>(dy: &[R], x: &[R], weight: &[R], rstd: &[R], cols: usize) -> Vec<R> {
    let mut dx = Vec::with_capacity(x.len());
    for ((dyr, xr), &r) in dy.chunks_exact(cols).zip(x.chunks_exact(cols)).zip(rstd) {
        let dot: R = (0..cols).map(|c| weight[c] * dyr[c] * xr[c]).sum();
        let coef = r * r * r * dot / R::of(cols as f64);
        dx.extend((0..cols).map(|c| r * weight[c] * dyr[c] - xr[c] * coef));
    }
    dx
}
