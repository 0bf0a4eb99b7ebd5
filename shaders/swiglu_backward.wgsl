// Backward of out = act(gate) * up (act: gated_activation.wgsl), elementwise over n values:
//   d_up   = d_out * act(gate)
//   d_gate = d_out * up * act'(gate)
//
// Bindings (group 0):
//   0 d_out   storage, read        f32[n]
//   1 gate    storage, read        f32[n]
//   2 up      storage, read        f32[n]
//   3 d_gate  storage, read_write  f32[n]   every element written
//   4 d_up    storage, read_write  f32[n]   every element written
//   5 params  uniform              { n, activation }
// Dispatch: linear, ceil(n / 64) workgroups of 64, one element each (folded into (x, y)).

struct Params {
    n: u32,
    activation: u32,
}

@group(0) @binding(0) var<storage, read> d_out: array<f32>;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> d_gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_up: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn swiglu_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n {
        return;
    }
    let g = gate[i];
    d_up[i] = d_out[i] * activation(params.activation, vec4<f32>(g)).x;
    d_gate[i] = d_out[i] * up[i] * activation_grad(params.activation, vec4<f32>(g)).x;
}
