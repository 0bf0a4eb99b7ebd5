//! AdamW (torch.optim.AdamW semantics) applied in place on the GPU, with the per-step values
//! (lr, bias corrections) in a small host-written tensor and the clip factor from the GPU.

use crate::graph::{Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static ADAMW: Kernel = Kernel {
    name: "adamw",
    shader: &shaders::ADAMW,
    entry: "adamw",
    textures: &[],
    bindings: &[
        Binding::read_write("param", DType::F32),
        Binding::read("grad", DType::F32),
        Binding::read_write("m", DType::F32),
        Binding::read_write("v", DType::F32),
        Binding::read("hyper", DType::F32),
        Binding::read("grad_scale", DType::F32),
    ],
};

/// The settings that stay fixed during training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// torch.optim.AdamW's defaults.
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamW {
    /// The `hyper` tensor's contents for 1-based step `step` at learning rate `lr`.
    pub fn hyper(&self, lr: f32, step: u32) -> [f32; 4] {
        let bc1 = 1.0 - (self.beta1 as f64).powi(step as i32);
        let bc2 = 1.0 - (self.beta2 as f64).powi(step as i32);
        [lr, bc1 as f32, bc2 as f32, 0.0]
    }

    /// One update of `param` with its moments `m`, `v` (all params of the graph), reading the
    /// step's values from `hyper` [4] and the gradient scale from `grad_scale[0]`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        g: &mut Graph,
        label: &str,
        param: TensorId,
        grad: TensorId,
        m: TensorId,
        v: TensorId,
        hyper: TensorId,
        grad_scale: TensorId,
    ) -> Result<(), GraphError> {
        for other in [grad, m, v] {
            g.expect_same_shape(label, param, other)?;
        }
        let n = g.tensor(param).numel();
        let params = Params::new()
            .u32(n as u32)
            .f32(self.beta1)
            .f32(self.beta2)
            .f32(self.eps)
            .f32(self.weight_decay);
        let tensors = [param, grad, m, v, hyper, grad_scale];
        g.push(label, &ADAMW, &tensors, params, Dispatch::linear(n, 64))
    }

    /// CPU reference in f32, the operations in torch's order; updates in place.
    pub fn cpu_step(
        &self,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        hyper: [f32; 4],
        grad_scale: f32,
    ) {
        let [lr, bc1, bc2, _] = hyper;
        for i in 0..param.len() {
            let g = grad[i] * grad_scale;
            let p = param[i] * (1.0 - lr * self.weight_decay);
            m[i] += (1.0 - self.beta1) * (g - m[i]);
            v[i] = self.beta2 * v[i] + (1.0 - self.beta2) * g * g;
            let denom = v[i].sqrt() / bc2.sqrt() + self.eps;
            param[i] = p - (lr / bc1) * (m[i] / denom);
        }
    }
}
