// RMSNorm backward for the input (norm weights are frozen in QLoRA, so no weight gradient):
//   y[r, c] = weight[c] * x[r, c] * rstd[r],  rstd[r] = 1 / sqrt(mean_c(x[r, c]^2) + eps)
//   dx[r, c] = rstd[r] * weight[c] * dy[r, c]
//              - x[r, c] * rstd[r]^3 * (1 / cols) * sum_i weight[i] * dy[r, i] * x[r, i]
// Rows are read as V: f32, or vec4<f32> where cols is a multiple of 4 (built followed by
// lanes_1.wgsl or lanes_4.wgsl, then row_sum.wgsl).
//
// Two entry points, one binding table:
// - rmsnorm_backward (the software path): a row an invocation, no barriers; on llvmpipe lanes
//   `cols` apart cost nothing extra.
// - rmsnorm_backward_rows (the portable path; llm.c's layernorm_backward reduces a row per
//   warp): a workgroup a row, its 64 invocations side by side along the row so each load is
//   coalesced, the row's dot product reduced in workgroup memory (row_sum.wgsl). Live values
//   an invocation: its partial dot, rstd, the coefficient, one V of each operand; workgroup
//   memory 64 f32.
//
// Bindings (group 0):
//   0 dy      storage, read        V[rows, cols / LANES]
//   1 x       storage, read        V[rows, cols / LANES]
//   2 weight  storage, read        V[cols / LANES]
//   3 rstd    storage, read        f32[rows]               saved by rmsnorm_forward
//   4 dx      storage, read_write  V[rows, cols / LANES]   every element written (added to
//                                                          with ACCUMULATE)
//   5 params  uniform              { rows, cols }
// Dispatch: linear; rmsnorm_backward ceil(rows / 64) workgroups of 64 invocations, a row each;
// rmsnorm_backward_rows `rows` workgroups of 64.

// Add the gradient into dx (a residual stream's running gradient) instead of storing it (a
// node with this constant set reads its outputs: crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<V>;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> weight: array<V>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<V>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rmsnorm_backward(
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
    let r = rstd[row];
    var dot = 0.0;
    for (var c = 0u; c < n; c++) {
        dot = lanes_add(dot, weight[c] * dy[base + c] * x[base + c]);
    }
    let coef = r * r * r * dot / f32(params.cols);
    for (var c = 0u; c < n; c++) {
        let g = r * weight[c] * dy[base + c] - x[base + c] * coef;
        if ACCUMULATE {
            dx[base + c] += g;
        } else {
            dx[base + c] = g;
        }
    }
}

@compute @workgroup_size(64)
fn rmsnorm_backward_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.x + wg.y * nwg.x;
    if row >= params.rows {
        return; // the whole workgroup
    }
    let n = params.cols / LANES;
    let base = row * n;
    var dot = 0.0;
    for (var c = lid; c < n; c += ROW_WIDTH) {
        dot = lanes_add(dot, weight[c] * dy[base + c] * x[base + c]);
    }
    let r = rstd[row];
    let coef = r * r * r * row_sum(lid, dot) / f32(params.cols);
    for (var c = lid; c < n; c += ROW_WIDTH) {
        let g = r * weight[c] * dy[base + c] - x[base + c] * coef;
        if ACCUMULATE {
            dx[base + c] += g;
        } else {
            dx[base + c] = g;
        }
    }
}
