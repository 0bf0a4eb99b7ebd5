// Backward of out = act(gate) * up (act: gated_activation.wgsl), elementwise over n values of
// V (f32, or vec4<f32> for lengths a multiple of 4: built followed by lanes_1.wgsl or
// lanes_4.wgsl):
//   d_up   = d_out * act(gate)
//   d_gate = d_out * up * act'(gate)
//
// Bindings (group 0):
//   0 d_out   storage, read        V[n]
//   1 gate    storage, read        V[n]
//   2 up      storage, read        V[n]
//   3 d_gate  storage, read_write  V[n]   every element written
//   4 d_up    storage, read_write  V[n]   every element written
//   5 params  uniform              { n (values of V), activation }
// Dispatch: linear, ceil(n / 64) workgroups of 64, one V each (folded into (x, y)).

struct Params {
    n: u32,
    activation: u32,
}

@group(0) @binding(0) var<storage, read> d_out: array<V>;
@group(0) @binding(1) var<storage, read> gate: array<V>;
@group(0) @binding(2) var<storage, read> up: array<V>;
@group(0) @binding(3) var<storage, read_write> d_gate: array<V>;
@group(0) @binding(4) var<storage, read_write> d_up: array<V>;
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
    let g = lanes_wide(gate[i]);
    let d = d_out[i];
    d_up[i] = d * lanes_narrow(activation(params.activation, g));
    d_gate[i] = d * up[i] * lanes_narrow(activation_grad(params.activation, g));
}
