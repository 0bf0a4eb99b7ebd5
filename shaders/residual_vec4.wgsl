// Residual add, four values an invocation: out = a + b over n f32 values, n a multiple of 4
// (residual.wgsl takes any n). One vec4 load per operand instead of four scalar ones: on
// llvmpipe, where each storage access of a SIMD lane is its own load, about 4x faster.
//
// Bindings (group 0):
//   0 a       storage, read        vec4<f32>[n / 4]
//   1 b       storage, read        vec4<f32>[n / 4]
//   2 out     storage, read_write  vec4<f32>[n / 4]   every element written
//   3 params  uniform              { n4 (= n / 4) }
// Dispatch: linear, ceil(n4 / 64) workgroups of 64 invocations, one vec4 each. Counts over
// the per-dimension limit are folded into (x, y): flat = wg.x + wg.y * num_workgroups.x.

struct Params {
    n4: u32,
}

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn residual_add_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n4 {
        return;
    }
    out[i] = a[i] + b[i];
}
