// The gate's activation for the gated-product kernels (swiglu*.wgsl), over four values: act 0
// SiLU (Llama, Qwen), 1 GELU with the tanh approximation (Gemma's gelu_pytorch_tanh):
//   silu(g) = g · sigmoid(g)
//   gelu(g) = g/2 · (1 + tanh(u)) = g · sigmoid(2u),  u = √(2/π) · (g + 0.044715 g³)
// The sigmoid form has no cancellation where tanh(u) nears -1 (very negative g) and saturates
// instead of overflowing. The scalar kernels call these on one lane. shaders.rs appends this
// file to each; no bindings, no entry point.

const SILU: u32 = 0u;
const GELU_TANH_C: f32 = 0.7978845608028654;

fn silu_sigmoid(g: vec4<f32>) -> vec4<f32> {
    return 1.0 / (1.0 + exp(-g));
}

/// sigmoid(2u) = (1 + tanh(u)) / 2 of GELU's tanh approximation.
fn gelu_sigmoid(g: vec4<f32>) -> vec4<f32> {
    return silu_sigmoid(2.0 * GELU_TANH_C * (g + 0.044715 * g * g * g));
}

/// act(g)
fn activation(act: u32, g: vec4<f32>) -> vec4<f32> {
    if act == SILU {
        return g * silu_sigmoid(g);
    }
    return g * gelu_sigmoid(g);
}

/// d act(g) / dg
fn activation_grad(act: u32, g: vec4<f32>) -> vec4<f32> {
    if act == SILU {
        let s = silu_sigmoid(g);
        return s * (1.0 + g * (1.0 - s));
    }
    let s = gelu_sigmoid(g);
    return s + 2.0 * g * s * (1.0 - s) * GELU_TANH_C * (1.0 + 3.0 * 0.044715 * g * g);
}
