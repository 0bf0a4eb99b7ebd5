// Bias added to every row, in place: y[r, j] += bias[j] (the q/k/v projection biases of
// qwen2-style models).
//
// Bindings (group 0):
//   0 bias    storage, read        f32[n]
//   1 y       storage, read_write  f32[rows, n]   every element updated
//   2 params  uniform              { rows, n }
// Dispatch: linear, ceil(rows * n / 64) workgroups of 64, one element each; counts over the
// per-dimension limit are folded into (x, y).

struct Params {
    rows: u32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> bias: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn bias_add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.n {
        return;
    }
    y[i] += bias[i % params.n];
}
