// Attention backward, step 1 of 3: delta[t, h] = d_out[t, h, :] · out[t, h, :], the term the
// softmax backward subtracts (sum_j p_ij dp_ij, computed from the outputs instead).
//
// Bindings (group 0):
//   0 d_out   storage, read        f32[tokens, heads, head_dim]
//   1 out     storage, read        f32[tokens, heads, head_dim]
//   2 delta   storage, read_write  f32[tokens, heads]   every element written
//   3 params  uniform              { rows (tokens * heads), head_dim }
// Dispatch: linear, ceil(rows / 64) workgroups of 64, one row each.

// head_dim is a pipeline constant so every loop over it has a constant trip count and is
// unrolled: llvmpipe (lavapipe) ends any invocation's loops after 65,535 iterations in total,
// which loops over head_dim inside loops over 2048 keys would exceed.
override HEAD_DIM: u32 = 64u;
override D4: u32 = HEAD_DIM / 4u;
const MAX_D4: u32 = 64u;

struct Params {
    rows: u32,
    head_dim: u32,
}

@group(0) @binding(0) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_delta(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid;
    if row >= params.rows {
        return;
    }
    var sum = 0.0;
    for (var d = 0u; d < D4; d++) {
        sum += dot(d_out[row * D4 + d], out[row * D4 + d]);
    }
    delta[row] = sum;
}
