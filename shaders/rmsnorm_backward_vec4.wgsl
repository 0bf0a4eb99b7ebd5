// RMSNorm backward for the input, four columns at a time, for rows whose length is a multiple
// of 4 (rmsnorm_backward.wgsl takes any; the same arithmetic in the same order; vec4
// accesses: see rmsnorm_vec4.wgsl):
//   dx[r, c] = rstd[r] * weight[c] * dy[r, c]
//              - x[r, c] * rstd[r]^3 * (1 / cols) * sum_i weight[i] * dy[r, i] * x[r, i]
//
// Bindings (group 0):
//   0 dy      storage, read        vec4<f32>[rows, cols / 4]
//   1 x       storage, read        vec4<f32>[rows, cols / 4]
//   2 weight  storage, read        vec4<f32>[cols / 4]
//   3 rstd    storage, read        f32[rows]                   saved by the forward
//   4 dx      storage, read_write  vec4<f32>[rows, cols / 4]   every element written (added to with ACCUMULATE)
//   5 params  uniform              { rows, cols }
// Dispatch: linear, ceil(rows / 64) workgroups of 64 invocations, one row each, no barriers.

// Add the gradient into dx (a residual stream's running gradient) instead of storing it.
override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rmsnorm_backward_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid;
    if row >= params.rows {
        return;
    }
    let n4 = params.cols / 4u;
    let base = row * n4;
    let r = rstd[row];
    var dot = 0.0;
    for (var c = 0u; c < n4; c++) {
        let p = weight[c] * dy[base + c] * x[base + c];
        dot += p.x;
        dot += p.y;
        dot += p.z;
        dot += p.w;
    }
    let coef = r * r * r * dot / f32(params.cols);
    for (var c = 0u; c < n4; c++) {
        let g = r * weight[c] * dy[base + c] - x[base + c] * coef;
        if ACCUMULATE {
            dx[base + c] += g;
        } else {
            dx[base + c] = g;
        }
    }
}
