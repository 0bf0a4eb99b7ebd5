// Gated product (the MLP activation): out = act(gate) * up, act SiLU or GELU-tanh
// (gated_activation.wgsl), elementwise over n values of V (f32, or vec4<f32> for lengths a
// multiple of 4: built followed by lanes_1.wgsl or lanes_4.wgsl; the same arithmetic per
// value).
//
// Bindings (group 0):
//   0 gate    storage, read        V[n]
//   1 up      storage, read        V[n]
//   2 out     storage, read_write  V[n]   every element written
//   3 params  uniform              { n (values of V), activation }
// Dispatch: linear, ceil(n / 64) workgroups of 64 invocations, one V each (folded into
// (x, y) past the per-dimension limit).

struct Params {
    n: u32,
    activation: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<V>;
@group(0) @binding(1) var<storage, read> up: array<V>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;
@group(0) @binding(3) var<uniform> params: Params;

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
    let g = lanes_wide(gate[i]);
    out[i] = lanes_narrow(activation(params.activation, g)) * up[i];
}
