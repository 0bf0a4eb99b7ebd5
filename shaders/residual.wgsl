// Residual add: out = a + b over n values of V (f32, or vec4<f32> for lengths a multiple of
// 4: the source is built followed by lanes_1.wgsl or lanes_4.wgsl).
//
// Bindings (group 0):
//   0 a       storage, read        V[n]
//   1 b       storage, read        V[n]
//   2 out     storage, read_write  V[n]   every element written
//   3 params  uniform              { n (values of V) }
// Dispatch: linear, ceil(n / 64) workgroups of 64 invocations, one V each. Counts over the
// per-dimension limit are folded into (x, y): flat = wg.x + wg.y * num_workgroups.x.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<V>;
@group(0) @binding(1) var<storage, read> b: array<V>;
@group(0) @binding(2) var<storage, read_write> out: array<V>;
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
