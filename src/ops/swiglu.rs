//! The gated MLP product: out = act(gate) * up, act SiLU (Llama, Qwen) or GELU with the tanh
//! approximation (Gemma's `gelu_pytorch_tanh`).

use super::real::Real;
use super::residual::elementwise;
use crate::graph::{Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static FORWARD: Kernel = Kernel {
    name: "swiglu_forward",
    shader: &shaders::SWIGLU,
    entry: "swiglu_forward",
    textures: &[],
    bindings: &[
        Binding::read("gate", DType::F32),
        Binding::read("up", DType::F32),
        Binding::write("out", DType::F32),
    ],
};

pub static BACKWARD: Kernel = Kernel {
    name: "swiglu_backward",
    shader: &shaders::SWIGLU_BACKWARD,
    entry: "swiglu_backward",
    textures: &[],
    bindings: &[
        Binding::read("d_out", DType::F32),
        Binding::read("gate", DType::F32),
        Binding::read("up", DType::F32),
        Binding::write("d_gate", DType::F32),
        Binding::write("d_up", DType::F32),
    ],
};

/// `FORWARD` four values an invocation (a count that is a multiple of 4).
pub static FORWARD_VEC4: Kernel = Kernel {
    name: "swiglu_forward_vec4",
    shader: &shaders::SWIGLU_VEC4,
    entry: "swiglu_forward",
    textures: &[],
    bindings: FORWARD.bindings,
};

/// `BACKWARD` four values an invocation (a count that is a multiple of 4).
pub static BACKWARD_VEC4: Kernel = Kernel {
    name: "swiglu_backward_vec4",
    shader: &shaders::SWIGLU_BACKWARD_VEC4,
    entry: "swiglu_backward",
    textures: &[],
    bindings: BACKWARD.bindings,
};

const WORKGROUP: usize = 64;

/// The gate's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// silu(g) = g·sigmoid(g)
    Silu,
    /// gelu(g) = g/2·(1 + tanh(√(2/π)·(g + 0.044715·g³)))
    GeluTanh,
}

impl Activation {
    fn param(self) -> u32 {
        match self {
            Activation::Silu => 0,
            Activation::GeluTanh => 1,
        }
    }

    /// act(g)
    pub fn cpu<R: Real>(self, g: R) -> R {
        match self {
            Activation::Silu => g * sigmoid(g),
            Activation::GeluTanh => g * gelu_sigmoid(g),
        }
    }

    /// d act(g) / dg
    pub fn cpu_grad<R: Real>(self, g: R) -> R {
        match self {
            Activation::Silu => {
                let s = sigmoid(g);
                s * (R::of(1.0) + g * (R::of(1.0) - s))
            }
            Activation::GeluTanh => {
                let s = gelu_sigmoid(g);
                s + R::of(2.0 * GELU_TANH_C)
                    * g
                    * s
                    * (R::of(1.0) - s)
                    * (R::of(1.0) + R::of(3.0 * 0.044715) * g * g)
            }
        }
    }
}

const GELU_TANH_C: f64 = 0.7978845608028654;

/// (1 + tanh(u)) / 2 = sigmoid(2u), u = √(2/π)·(g + 0.044715·g³).
fn gelu_sigmoid<R: Real>(g: R) -> R {
    sigmoid(R::of(2.0 * GELU_TANH_C) * (g + R::of(0.044715) * g * g * g))
}

/// `act(gate) * up` as a new temporary named `name`.
pub fn forward(
    g: &mut Graph,
    name: &str,
    gate: TensorId,
    up: TensorId,
    act: Activation,
) -> Result<TensorId, GraphError> {
    g.expect_same_shape(name, gate, up)?;
    let shape = g.tensor(gate).shape.clone();
    let out = g.temp(name, &shape, DType::F32);
    let (kernel, items) = elementwise(&FORWARD, &FORWARD_VEC4, shape.iter().product());
    let params = Params::new().u32(items as u32).u32(act.param());
    g.push(
        name,
        kernel,
        &[gate, up, out],
        params,
        Dispatch::linear(items, WORKGROUP),
    )?;
    Ok(out)
}

/// (d_gate, d_up) named `<name>_gate` and `<name>_up`.
pub fn backward(
    g: &mut Graph,
    name: &str,
    d_out: TensorId,
    gate: TensorId,
    up: TensorId,
    act: Activation,
) -> Result<(TensorId, TensorId), GraphError> {
    g.expect_same_shape(name, gate, up)?;
    g.expect_same_shape(name, d_out, gate)?;
    let shape = g.tensor(gate).shape.clone();
    let d_gate = g.temp(&format!("{name}_gate"), &shape, DType::F32);
    let d_up = g.temp(&format!("{name}_up"), &shape, DType::F32);
    let (kernel, items) = elementwise(&BACKWARD, &BACKWARD_VEC4, shape.iter().product());
    let params = Params::new().u32(items as u32).u32(act.param());
    let tensors = [d_out, gate, up, d_gate, d_up];
    g.push(
        name,
        kernel,
        &tensors,
        params,
        Dispatch::linear(items, WORKGROUP),
    )?;
    Ok((d_gate, d_up))
}

fn sigmoid<R: Real>(g: R) -> R {
    R::of(1.0) / (R::of(1.0) + (-g).exp())
}

pub fn cpu_forward<R: Real>(gate: &[R], up: &[R], act: Activation) -> Vec<R> {
    gate.iter().zip(up).map(|(&g, &u)| act.cpu(g) * u).collect()
}

/// (d_gate, d_up)
pub fn cpu_backward<R: Real>(
    d_out: &[R],
    gate: &[R],
    up: &[R],
    act: Activation,
) -> (Vec<R>, Vec<R>) {
    let mut d_gate = Vec::with_capacity(gate.len());
    let mut d_up = Vec::with_capacity(gate.len());
    for ((&d, &g), &u) in d_out.iter().zip(gate).zip(up) {
        d_up.push(d * act.cpu(g));
        d_gate.push(d * u * act.cpu_grad(g));
    }
    (d_gate, d_up)
}
