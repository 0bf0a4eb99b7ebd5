// Gated product, four values an invocation: out = act(gate) * up (act: gated_activation.wgsl),
// over n f32 values, n a multiple of 4 (swiglu.wgsl takes any
// n; the same arithmetic per value). vec4 loads: see residual_vec4.wgsl.
//
// Bindings (group 0):
//   0 gate    storage, read        vec4<f32>[n / 4]
//   1 up      storage, read        vec4<f32>[n / 4]
//   2 out     storage, read_write  vec4<f32>[n / 4]   every element written
//   3 params  uniform              { n4 (= n / 4), activation }
// Dispatch: linear, ceil(n4 / 64) workgroups of 64 invocations, one vec4 each (folded into
// (x, y) past the per-dimension limit).

struct Params {
    n4: u32,
    activation: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> up: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn swiglu_forward_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n4 {
        return;
    }
    let g = gate[i];
    out[i] = activation(params.activation, g) * up[i];
}
