// RMSNorm forward reading and writing four columns at a time, for rows whose length is a
// multiple of 4 (rmsnorm.wgsl takes any; the same arithmetic in the same order). One vec4
// storage access instead of four scalar ones: llvmpipe runs each lane's storage access as
// its own load.
//   rstd[r] = 1 / sqrt(mean_c(x[r, c]^2) + eps),  y[r, c] = weight[c] * (x[r, c] * rstd[r])
//
// Bindings (group 0):
//   0 x       storage, read        vec4<f32>[rows, cols / 4]
//   1 weight  storage, read        vec4<f32>[cols / 4]
//   2 y       storage, read_write  vec4<f32>[rows, cols / 4]   every element written
//   3 rstd    storage, read_write  f32[rows]                   every element written
//   4 params  uniform              { rows, cols, eps }
// Dispatch: linear, ceil(rows / 64) workgroups of 64 invocations, one row each (folded into
// (x, y) past the per-dimension limit).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rmsnorm_forward_vec4(
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
    var sum_sq = 0.0;
    for (var c = 0u; c < n4; c++) {
        let v = x[base + c];
        sum_sq += v.x * v.x;
        sum_sq += v.y * v.y;
        sum_sq += v.z * v.z;
        sum_sq += v.w * v.w;
    }
    let r = inverseSqrt(sum_sq / f32(params.cols) + params.eps);
    rstd[row] = r;
    for (var c = 0u; c < n4; c++) {
        y[base + c] = weight[c] * (x[base + c] * r);
    }
}
