// RMSNorm forward with subgroup reductions: the discrete-GPU variant of rmsnorm.wgsl (same
// bindings, dispatch and results up to the order of the sum), used when the adapter has
// subgroups. rmsnorm.wgsl gives each invocation a row, which suits software devices; here a
// subgroup takes the rows of its invocations in turn, its lanes read a row's columns side by
// side (coalesced) and subgroupAdd sums their squares.
//   rstd[r] = 1 / sqrt(mean_c(x[r, c]^2) + eps),  y[r, c] = weight[c] * (x[r, c] * rstd[r])
//
// Bindings (group 0):
//   0 x       storage, read        f32[rows, cols]
//   1 weight  storage, read        f32[cols]
//   2 y       storage, read_write  f32[rows, cols]   every element written
//   3 rstd    storage, read_write  f32[rows]         every element written
//   4 params  uniform              { rows, cols, eps }
// Dispatch: linear, ceil(rows / 64) workgroups of 64 invocations (folded into (x, y) past the
// per-dimension limit); invocation i of the workgroup names row wg * 64 + i, as in rmsnorm.wgsl.

// No `enable subgroups;` here: naga (native) does not parse that directive yet and takes the
// subgroup builtins from the device feature; browsers require it, so the pipeline cache
// prepends it on wasm32 (src/gpu/pipelines.rs).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rmsnorm_forward_subgroup(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    let my_row = (wg.x + wg.y * nwg.x) * 64u + lid;
    let cols = params.cols;
    // Every lane runs every iteration (the subgroup operations need all of them); a row past
    // the end is computed on the last row and not stored.
    for (var i = 0u; i < size; i++) {
        let named = subgroupShuffle(my_row, i);
        let valid = named < params.rows;
        let base = min(named, params.rows - 1u) * cols;
        var sum_sq = 0.0;
        for (var c0 = 0u; c0 < cols; c0 += size) {
            let c = c0 + lane;
            if c < cols {
                let v = x[base + c];
                sum_sq += v * v;
            }
        }
        let r = inverseSqrt(subgroupAdd(sum_sq) / f32(cols) + params.eps);
        if valid {
            if lane == 0u {
                rstd[named] = r;
            }
            for (var c0 = 0u; c0 < cols; c0 += size) {
                let c = c0 + lane;
                if c < cols {
                    y[base + c] = weight[c] * (x[base + c] * r);
                }
            }
        }
    }
}
