// The gradient of DoRA's magnitude: dm[j] = Σ_t dy[t, j]·y[t, j] / n[j], where y is the
// adapted product before the magnitude's scale (y·m/n is the module's output; n carries no
// gradient, as in PEFT).
//
// Bindings (group 0):
//   0 dy      storage, read        f32[rows, n]
//   1 y       storage, read        f32[rows, n]
//   2 norm    storage, read        f32[n]
//   3 grad    storage, read_write  f32[n]   every element written
//   4 params  uniform              { rows, n }
// Dispatch: linear, ceil(n / 64) workgroups of 64, one column each; neighbouring invocations
// read neighbouring columns of a row.

struct Params {
    rows: u32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn dora_magnitude_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = (wg.x + wg.y * nwg.x) * 64u + lid;
    if j >= params.n {
        return;
    }
    var sum = 0.0;
    for (var t = 0u; t < params.rows; t++) {
        let i = t * params.n + j;
        sum += dy[i] * y[i];
    }
    grad[j] = sum / norm[j];
}
