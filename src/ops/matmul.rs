//! f32 matrix products with either operand transposed (by strides, never by a copy):
//! c = alpha · op(a) · op(b), or c += alpha · op(a) · op(b). These are the LoRA paths and their
//! gradients: X·Aᵀ, (XAᵀ)·Bᵀ, dB = s·dYᵀ(XAᵀ), dA = s·(dY B)ᵀX, dX += s·(dY B)A.

use super::pack::{pack_f32, texels, Strided};
use crate::gpu::DeviceClass;
use crate::graph::{
    shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
    TexelFormat, TextureBinding,
};
use crate::shaders;

/// c = alpha · op(a) · op(b)
pub static MATMUL: Kernel = Kernel {
    name: "matmul",
    shader: &shaders::MATMUL,
    entry: "matmul",
    variants: &[(DeviceClass::Discrete, "matmul_tiled")],
    textures: &[],
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
    textures: &[],
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

const TEX_OPERANDS: &[TextureBinding] = &[
    TextureBinding {
        name: "a_tex",
        format: TexelFormat::Rgba32Float,
        write: false,
    },
    TextureBinding {
        name: "b_tex",
        format: TexelFormat::Rgba32Float,
        write: false,
    },
];

/// c = alpha · A · B with both operands packed into textures (software devices).
pub static MATMUL_TEX: Kernel = Kernel {
    name: "matmul_tex",
    shader: &shaders::MATMUL_TEX,
    entry: "matmul_tex",
    variants: &[],
    bindings: &[Binding {
        name: "c",
        access: Access::Write,
        dtype: DType::F32,
    }],
    textures: TEX_OPERANDS,
};

/// c += alpha · A · B, texture operands.
pub static MATMUL_TEX_ACC: Kernel = Kernel {
    name: "matmul_tex_acc",
    shader: &shaders::MATMUL_TEX,
    entry: "matmul_tex",
    variants: &[],
    bindings: &[Binding {
        name: "c",
        access: Access::ReadWrite,
        dtype: DType::F32,
    }],
    textures: TEX_OPERANDS,
};

/// One factor of a product: a tensor seen as a matrix (leading dimensions are rows), used as
/// it is or transposed, optionally only `rows` of its stored rows.
/// `matmul` for a single row (M = 1): one column per invocation, no tile of rows.
pub static MATVEC: Kernel = Kernel {
    name: "matmul_vec",
    shader: &shaders::MATMUL,
    entry: "matmul_vec",
    variants: &[],
    textures: &[],
    bindings: MATMUL.bindings,
};

pub static MATVEC_ACC: Kernel = Kernel {
    name: "matmul_vec_acc",
    shader: &shaders::MATMUL,
    entry: "matmul_vec",
    variants: &[],
    textures: &[],
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

/// A product's sizes and where its operands' elements are:
/// A(m, k) = a[a_off + m·a_sm + k·a_sk], B(k, n) = b[b_off + k·b_sk + n·b_sn].
struct Product {
    a: TensorId,
    b: TensorId,
    m: usize,
    n: usize,
    k: usize,
    a_sm: usize,
    a_sk: usize,
    b_sk: usize,
    b_sn: usize,
    a_off: usize,
    b_off: usize,
}

impl Product {
    fn new(g: &Graph, name: &str, a: Operand, b: Operand) -> Result<Product, GraphError> {
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
        Ok(Product {
            a: a.tensor,
            b: b.tensor,
            m,
            n,
            k,
            a_sm,
            a_sk,
            b_sk,
            b_sn,
            a_off,
            b_off,
        })
    }

    /// The buffer kernels' uniform.
    fn params(&self, alpha: f32, accumulate: bool) -> Params {
        Params::new()
            .u32(self.m as u32)
            .u32(self.n as u32)
            .u32(self.k as u32)
            .u32(self.a_sm as u32)
            .u32(self.a_sk as u32)
            .u32(self.b_sk as u32)
            .u32(self.b_sn as u32)
            .u32(accumulate as u32)
            .f32(alpha)
            .u32(self.a_off as u32)
            .u32(self.b_off as u32)
    }

    /// Whether the texture kernel runs this product: on graphs for software devices, when
    /// both sides fill its 64x128 workgroup tile reasonably (the skinny LoRA products stay on
    /// the buffer kernels) and the textures fit the device.
    fn on_textures(&self, g: &Graph) -> bool {
        self.m >= 64 && self.n >= 64 && g.textures_fit(&[texels(self.k), self.m, self.n])
    }

    /// Pack A and B, then one texture-kernel node writing (or adding into) c.
    fn push_textures(
        &self,
        g: &mut Graph,
        label: &str,
        c: TensorId,
        alpha: f32,
        accumulate: bool,
    ) -> Result<(), GraphError> {
        let a = Strided {
            tensor: self.a,
            offset: self.a_off,
            rows: self.m,
            k: self.k,
            row_stride: self.a_sm,
            k_stride: self.a_sk,
        };
        // B is packed by columns: texel row n holds B(4t.., n).
        let b = Strided {
            tensor: self.b,
            offset: self.b_off,
            rows: self.n,
            k: self.k,
            row_stride: self.b_sn,
            k_stride: self.b_sk,
        };
        let ta = pack_f32(g, label, a, 0)?;
        let tb = pack_f32(g, label, b, 1)?;
        let params = Params::new()
            .u32(self.m as u32)
            .u32(self.n as u32)
            .u32(texels(self.k) as u32)
            .u32(accumulate as u32)
            .f32(alpha);
        let kernel = if accumulate {
            &MATMUL_TEX_ACC
        } else {
            &MATMUL_TEX
        };
        let dispatch = Dispatch::Grid([self.n.div_ceil(128) as u32, self.m.div_ceil(64) as u32, 1]);
        g.push_with_textures(label, kernel, &[c], &[ta, tb], params, dispatch)
    }

    fn push(
        &self,
        g: &mut Graph,
        label: &str,
        c: TensorId,
        alpha: f32,
        accumulate: bool,
    ) -> Result<(), GraphError> {
        if self.on_textures(g) {
            return self.push_textures(g, label, c, alpha, accumulate);
        }
        let (kernel, dispatch) = kernel_for(self.m, self.n, accumulate);
        g.push(
            label,
            kernel,
            &[self.a, self.b, c],
            self.params(alpha, accumulate),
            dispatch,
        )
    }
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
    let product = Product::new(g, name, a, b)?;
    let c = g.temp(name, &[product.m, product.n], DType::F32);
    product.push(g, name, c, alpha, false)?;
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
    let product = Product::new(g, label, a, b)?;
    let (m, n) = (product.m, product.n);
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
    product.push(g, label, c, alpha, true)
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
