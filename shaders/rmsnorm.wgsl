// RMSNorm forward, Llama style, in f32:
//   rstd[r] = 1 / sqrt(mean_c(x[r, c]^2) + eps)
//   y[r, c] = weight[c] * (x[r, c] * rstd[r])
// rstd is kept for the backward pass. Rows are read as V: f32, or vec4<f32> where cols is a
// multiple of 4 (built followed by lanes_1.wgsl or lanes_4.wgsl; the same sums in the same
// order).
//
// Bindings (group 0):
//   0 x       storage, read        V[rows, cols / LANES]
//   1 weight  storage, read        V[cols / LANES]
//   2 y       storage, read_write  V[rows, cols / LANES]   every element written
//   3 rstd    storage, read_write  f32[rows]               every element written
//   4 params  uniform              { rows, cols, eps }
// Dispatch: linear, ceil(rows / 64) workgroups of 64 invocations, one row each, no barriers
// (folded into (x, y) past the per-dimension limit).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<V>;
@group(0) @binding(1) var<storage, read> weight: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rmsnorm_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid;
    if row >= params.rows {
        return;
    }
    let n = params.cols / LANES;
    let base = row * n;
    var sum_sq = 0.0;
    for (var c = 0u; c < n; c++) {
        let v = x[base + c];
        sum_sq = lanes_add(sum_sq, v * v);
    }
    let r = inverseSqrt(sum_sq / f32(params.cols) + params.eps);
    rstd[row] = r;
    for (var c = 0u; c < n; c++) {
        y[base + c] = weight[c] * (x[base + c] * r);
    }
}
