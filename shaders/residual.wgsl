// Residual add: out = a + b over n f32 values.
//
// Bindings (group 0):
//   0 a       storage, read        f32[n]
//   1 b       storage, read        f32[n]
//   2 out     storage, read_write  f32[n]   every element written
//   3 params  uniform              { n }
// Dispatch: linear, ceil(n / 64) workgroups of 64 invocations, one element each. Counts over
// the per-dimension limit are folded into (x, y): flat = wg.x + wg.y * num_workgroups.x.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn residual_add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n {
        return;
    }
    out[i] = a[i] + b[i];
}
