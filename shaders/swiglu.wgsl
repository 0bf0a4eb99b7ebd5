// Gated product (the MLP activation): out = act(gate) * up, act SiLU or GELU-tanh (below);
// silu(g) = g / (1 + exp(-g)), elementwise over n f32 values.
//
// Bindings (group 0):
//   0 gate    storage, read        f32[n]
//   1 up      storage, read        f32[n]
//   2 out     storage, read_write  f32[n]   every element written
//   3 params  uniform              { n, activation }
// Dispatch: linear, ceil(n / 64) workgroups of 64 invocations, one element each (folded into
// (x, y) past the per-dimension limit).

struct Params {
    n: u32,
    activation: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

// The gate's activation: 0 SiLU (Llama, Qwen), 1 GELU with the tanh approximation (Gemma's
// gelu_pytorch_tanh): gelu(g) = g/2 · (1 + tanh(u)), u = √(2/π) · (g + 0.044715 g³).
// tanh(u) = 1 - 2 / (exp(2u) + 1), which saturates to ±1 instead of overflowing.
const SILU: u32 = 0u;
const GELU_TANH_C: f32 = 0.7978845608028654;

fn silu_sigmoid(g: f32) -> f32 {
    return 1.0 / (1.0 + exp(-g));
}

fn gelu_tanh(g: f32) -> f32 {
    return 1.0 - 2.0 / (exp(2.0 * GELU_TANH_C * (g + 0.044715 * g * g * g)) + 1.0);
}

/// act(g)
fn activation(g: f32) -> f32 {
    if params.activation == SILU {
        return g * silu_sigmoid(g);
    }
    return 0.5 * g * (1.0 + gelu_tanh(g));
}

/// d act(g) / dg
fn activation_grad(g: f32) -> f32 {
    if params.activation == SILU {
        let s = silu_sigmoid(g);
        return s * (1.0 + g * (1.0 - s));
    }
    let t = gelu_tanh(g);
    return 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * GELU_TANH_C * (1.0 + 3.0 * 0.044715 * g * g);
}

@compute @workgroup_size(64)
fn swiglu_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n {
        return;
    }
    let g = gate[i];
    out[i] = activation(g) * up[i];
}
