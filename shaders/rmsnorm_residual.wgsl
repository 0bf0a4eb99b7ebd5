// A residual add and the RMSNorm that follows it, in one pass (the portable kernel; llm.c's
// fused residual + norm): a workgroup a row, its invocations side by side along the columns
// (coalesced), the sum of squares reduced in workgroup memory (row_sum.wgsl, appended).
//   sum[r, c] = a[r, c] + b[r, c]
//   rstd[r] = 1 / sqrt(mean_c(sum[r, c]^2) + eps),  y[r, c] = weight[c] * (sum[r, c] * rstd[r])
//
// Bindings (group 0):
//   0 a       storage, read        f32[rows, cols]
//   1 b       storage, read        f32[rows, cols]
//   2 weight  storage, read        f32[cols]
//   3 sum     storage, read_write  f32[rows, cols]   every element written
//   4 y       storage, read_write  f32[rows, cols]   every element written
//   5 rstd    storage, read_write  f32[rows]         every element written
//   6 params  uniform              { rows, cols, eps }
// Dispatch: linear, `rows` workgroups of 64 invocations.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> sum: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rmsnorm_residual(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if row >= params.rows {
        return; // the whole workgroup
    }
    let base = row * params.cols;
    var sum_sq = 0.0;
    for (var c = lid; c < params.cols; c += ROW_WIDTH) {
        let s = a[base + c] + b[base + c];
        sum[base + c] = s;
        sum_sq += s * s;
    }
    let r = inverseSqrt(row_sum(lid, sum_sq) / f32(params.cols) + params.eps);
    if lid == 0u {
        rstd[row] = r;
    }
    // Each invocation reads back only the sums it wrote.
    for (var c = lid; c < params.cols; c += ROW_WIDTH) {
        y[base + c] = weight[c] * (sum[base + c] * r);
    }
}
