//! f32 matrix products with either operand transposed (by strides, never by a copy):
//! c = alpha · op(a) · op(b), or c += alpha · op(a) · op(b). These are the LoRA paths and their
//! gradients: X·Aᵀ, (XAᵀ)·Bᵀ, dB = s·dYᵀ(XAᵀ), dA = s·(dY B)ᵀX, dX += s·(dY B)A.

use crate::gpu::DeviceClass;
use crate::graph::{
    shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

/// c = alpha · op(a) · op(b)
pub static MATMUL: Kernel = Kernel {
    name: "matmul",
    shader: &shaders::MATMUL,
    entry: "matmul",
    variants: &[(DeviceClass::Discrete, "matmul_tiled")],
    bindings: &[
        Binding {
            name: "a",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "b",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "c",
            access: Access::Write,
            dtype: DType::F32,
        },
    ],
};

/// c += alpha · op(a) · op(b) (the same entry point with `accumulate` set).
pub static MATMUL_ACC: Kernel = Kernel {
    name: "matmul_acc",
    shader: &shaders::MATMUL,
    entry: "matmul",
    variants: &[(DeviceClass::Discrete, "matmul_tiled")],
    bindings: &[
        Binding {
            name: "a",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "b",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "c",
            access: Access::ReadWrite,
            dtype: DType::F32,
        },
    ],
};

/// One factor of a product: a tensor seen as a matrix (leading dimensions are rows), used as
/// it is or transposed, optionally only `rows` of its stored rows.
/// `matmul` for a single row (M = 1): one column per invocation, no tile of rows.
pub static MATVEC: Kernel = Kernel {
    name: "matmul_vec",
    shader: &shaders::MATMUL,
    entry: "matmul_vec",
    variants: &[],
    bindings: MATMUL.bindings,
};

pub static MATVEC_ACC: Kernel = Kernel {
    name: "matmul_vec_acc",
    shader: &shaders::MATMUL,
    entry: "matmul_vec",
    variants: &[],
    bindings: MATMUL_ACC.bindings,
};

/// The kernel and dispatch for an [m, n] product.
fn kernel_for(m: usize, n: usize, accumulate: bool) -> (&'static Kernel, Dispatch) {
    match (m, accumulate) {
        (1, false) => (&MATVEC, Dispatch::linear(n, 64)),
        (1, true) => (&MATVEC_ACC, Dispatch::linear(n, 64)),
        (_, false) => (&MATMUL, dispatch(m, n)),
        (_, true) => (&MATMUL_ACC, dispatch(m, n)),
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub tensor: TensorId,
    pub transposed: bool,
    /// (first, count) of the stored rows to use; None for all.
    pub rows: Option<(usize, usize)>,
}

impl Operand {
    pub fn plain(tensor: TensorId) -> Self {
        Operand {
            tensor,
            transposed: false,
            rows: None,
        }
    }

    pub fn transposed(tensor: TensorId) -> Self {
        Operand {
            tensor,
            transposed: true,
            rows: None,
        }
    }

    /// Only stored rows first..first + count (before any transposition).
    pub fn rows(self, first: usize, count: usize) -> Self {
        Operand {
            rows: Some((first, count)),
            ..self
        }
    }

    /// (stored rows, stored columns, element offset), or an error naming the tensor.
    fn matrix(&self, g: &Graph, op: &str) -> Result<(usize, usize, usize), GraphError> {
        let (r, c) = as_matrix(&g.tensor(self.tensor).shape);
        match self.rows {
            None => Ok((r, c, 0)),
            Some((first, count)) if first + count <= r => Ok((count, c, first * c)),
            Some((first, count)) => Err(GraphError::ShapeMismatch {
                op: op.into(),
                detail: format!(
                    "rows {first}..{} of '{}' {}: it has {r}",
                    first + count,
                    g.tensor(self.tensor).name,
                    shape_str(&g.tensor(self.tensor).shape)
                ),
            }),
        }
    }
}

/// Rows and columns of a tensor seen as a matrix: leading dimensions are rows.
fn as_matrix(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap_or(&1);
    (shape.iter().product::<usize>() / cols.max(1), cols)
}

/// The product's shape [M, N] and its uniform.
fn plan(
    g: &Graph,
    name: &str,
    a: Operand,
    b: Operand,
    alpha: f32,
    accumulate: bool,
) -> Result<(usize, usize, Params), GraphError> {
    let (ar, ac, a_off) = a.matrix(g, name)?;
    let (br, bc, b_off) = b.matrix(g, name)?;
    let (m, k) = if a.transposed { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if b.transposed { (bc, br) } else { (br, bc) };
    if k != kb {
        let describe = |o: Operand| {
            let t = g.tensor(o.tensor);
            let how = if o.transposed { "transposed " } else { "" };
            format!("{how}'{}' {}", t.name, shape_str(&t.shape))
        };
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "{} times {}: inner sizes {k} and {kb} differ",
                describe(a),
                describe(b)
            ),
        });
    }
    // Strides of the stored (row-major) matrices; a row range only moves the start.
    let (a_sm, a_sk) = if a.transposed { (1, ac) } else { (ac, 1) };
    let (b_sk, b_sn) = if b.transposed { (1, bc) } else { (bc, 1) };
    let params = Params::new()
        .u32(m as u32)
        .u32(n as u32)
        .u32(k as u32)
        .u32(a_sm as u32)
        .u32(a_sk as u32)
        .u32(b_sk as u32)
        .u32(b_sn as u32)
        .u32(accumulate as u32)
        .f32(alpha)
        .u32(a_off as u32)
        .u32(b_off as u32);
    Ok((m, n, params))
}

fn dispatch(m: usize, n: usize) -> Dispatch {
    Dispatch::Grid([n.div_ceil(64) as u32, m.div_ceil(32) as u32, 1])
}

/// A new temporary `name` = alpha · op(a) · op(b).
pub fn matmul(
    g: &mut Graph,
    name: &str,
    a: Operand,
    b: Operand,
    alpha: f32,
) -> Result<TensorId, GraphError> {
    let (m, n, params) = plan(g, name, a, b, alpha, false)?;
    let c = g.temp(name, &[m, n], DType::F32);
    let (kernel, dispatch) = kernel_for(m, n, false);
    g.push(name, kernel, &[a.tensor, b.tensor, c], params, dispatch)?;
    Ok(c)
}

/// c += alpha · op(a) · op(b), into an existing tensor `c` of shape [M, N].
pub fn matmul_into(
    g: &mut Graph,
    label: &str,
    c: TensorId,
    a: Operand,
    b: Operand,
    alpha: f32,
) -> Result<(), GraphError> {
    let (m, n, params) = plan(g, label, a, b, alpha, true)?;
    if as_matrix(&g.tensor(c).shape) != (m, n) {
        return Err(GraphError::ShapeMismatch {
            op: label.into(),
            detail: format!(
                "the product is [{m}, {n}] but '{}' is {}",
                g.tensor(c).name,
                shape_str(&g.tensor(c).shape)
            ),
        });
    }
    let (kernel, dispatch) = kernel_for(m, n, true);
    g.push(label, kernel, &[a.tensor, b.tensor, c], params, dispatch)
}

/// CPU reference in f64: alpha · op(a) · op(b) (+ c0), as a row-major [m, n] f32 matrix.
/// `a` is stored [m, k] (or [k, m] when `trans_a`), `b` is [k, n] (or [n, k]).
#[allow(clippy::too_many_arguments)]
pub fn cpu_matmul(
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    c0: Option<&[f32]>,
) -> Vec<f32> {
    let at = |i: usize, kk: usize| if trans_a { a[kk * m + i] } else { a[i * k + kk] } as f64;
    let bt = |kk: usize, j: usize| if trans_b { b[j * k + kk] } else { b[kk * n + j] } as f64;
    let mut out = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|kk| at(i, kk) * bt(kk, j)).sum();
            let base = c0.map_or(0.0, |c| c[i * n + j] as f64);
            out[i * n + j] = (alpha as f64 * s + base) as f32;
        }
    }
    out
}
