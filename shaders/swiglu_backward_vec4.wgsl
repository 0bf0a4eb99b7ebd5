// Backward of out = act(gate) * up (act: gated_activation.wgsl), four values an invocation,
// over n values, n a multiple of 4 (swiglu_backward.wgsl takes any n; the same arithmetic per value):
//   d_up   = d_out * act(gate)
//   d_gate = d_out * up * act'(gate)
// vec4 loads: see residual_vec4.wgsl.
//
// Bindings (group 0):
//   0 d_out   storage, read        vec4<f32>[n / 4]
//   1 gate    storage, read        vec4<f32>[n / 4]
//   2 up      storage, read        vec4<f32>[n / 4]
//   3 d_gate  storage, read_write  vec4<f32>[n / 4]   every element written
//   4 d_up    storage, read_write  vec4<f32>[n / 4]   every element written
//   5 params  uniform              { n4 (= n / 4), activation }
// Dispatch: linear, ceil(n4 / 64) workgroups of 64, one vec4 each (folded into (x, y)).

struct Params {
    n4: u32,
    activation: u32,
}

@group(0) @binding(0) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> gate: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> up: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> d_gate: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> d_up: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn swiglu_backward_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n4 {
        return;
    }
    let g = gate[i];
    let d = d_out[i];
    d_up[i] = d * activation(params.activation, g);
    d_gate[i] = d * up[i] * activation_grad(params.activation, g);
}
