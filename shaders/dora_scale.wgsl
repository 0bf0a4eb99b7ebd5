// DoRA's magnitude over the row norm, per output column: out[t, j] = y[t, j]·m[j] / n[j].
// Forward: the adapted product (x·Wᵀ + s·x·Aᵀ·Bᵀ) to the module's output; backward: the
// output's gradient to the adapted product's (the norm carries no gradient, as in PEFT).
//
// Bindings (group 0):
//   0 y          storage, read        f32[rows, n]
//   1 magnitude  storage, read        f32[n]
//   2 norm       storage, read        f32[n]
//   3 out        storage, read_write  f32[rows, n]   every element written
//   4 params     uniform              { rows, n }
// Dispatch: linear, ceil(rows * n / 64) workgroups of 64, one element each; counts over the
// per-dimension limit are folded into (x, y).

struct Params {
    rows: u32,
    n: u32,
}

@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> magnitude: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn dora_scale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.n {
        return;
    }
    let j = i % params.n;
    out[i] = y[i] * (magnitude[j] / norm[j]);
}
