//! Residual add: out = a + b.

use crate::graph::{Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static ADD: Kernel = Kernel {
    name: "residual_add",
    shader: &shaders::RESIDUAL,
    entry: "residual_add",
    textures: &[],
    bindings: &[
        Binding::read("a", DType::F32),
        Binding::read("b", DType::F32),
        Binding::write("out", DType::F32),
    ],
};

/// `ADD` four values an invocation (a count that is a multiple of 4).
pub static ADD_VEC4: Kernel = Kernel {
    name: "residual_add_vec4",
    shader: &shaders::RESIDUAL_VEC4,
    entry: "residual_add",
    textures: &[],
    bindings: ADD.bindings,
};

const WORKGROUP: usize = 64;

/// `out = a + b`, a new temporary named `name` with the shape of `a`.
pub fn add(g: &mut Graph, name: &str, a: TensorId, b: TensorId) -> Result<TensorId, GraphError> {
    g.expect_same_shape(name, a, b)?;
    let desc = g.tensor(a).clone();
    let out = g.temp(name, &desc.shape, DType::F32);
    let (kernel, items) = elementwise(&ADD, &ADD_VEC4, desc.numel());
    let params = Params::new().u32(items as u32);
    g.push(
        name,
        kernel,
        &[a, b, out],
        params,
        Dispatch::linear(items, WORKGROUP),
    )?;
    Ok(out)
}

/// The kernel for `n` values of an elementwise op and the items it is dispatched over: the
/// vec4 kernel over n / 4 when n is a multiple of 4, else the scalar one over n.
pub fn elementwise(
    scalar: &'static Kernel,
    vec4: &'static Kernel,
    n: usize,
) -> (&'static Kernel, usize) {
    if n.is_multiple_of(4) {
        (vec4, n / 4)
    } else {
        (scalar, n)
    }
}

pub fn cpu_add<R: super::real::Real>(a: &[R], b: &[R]) -> Vec<R> {
    a.iter().zip(b).map(|(&x, &y)| x + y).collect()
}

pub static BIAS_ADD: Kernel = Kernel {
    name: "bias_add",
    shader: &shaders::BIAS_ADD,
    entry: "bias_add",
    textures: &[],
    bindings: &[
        Binding::read("bias", DType::F32),
        Binding::read_write("y", DType::F32),
    ],
};

/// `y[r, :] += bias` for every row r of `y` [rows, n], in place.
pub fn bias_add(g: &mut Graph, name: &str, y: TensorId, bias: TensorId) -> Result<(), GraphError> {
    let n = g.tensor(bias).numel();
    let total = g.tensor(y).numel();
    if n == 0 || g.tensor(y).shape.last() != Some(&n) {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "bias of {n} values for rows of {:?}",
                g.tensor(y).shape.last()
            ),
        });
    }
    let params = Params::new().u32((total / n) as u32).u32(n as u32);
    g.push(
        name,
        &BIAS_ADD,
        &[bias, y],
        params,
        Dispatch::linear(total, 64),
    )
}

pub fn cpu_bias_add(y: &[f32], bias: &[f32]) -> Vec<f32> {
    y.iter()
        .enumerate()
        .map(|(i, &v)| v + bias[i % bias.len()])
        .collect()
}
