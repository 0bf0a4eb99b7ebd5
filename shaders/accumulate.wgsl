// Gradient accumulation: acc = acc * coef[0] + g * coef[1] over n f32 values. The first
// micro-batch of an optimizer step uses coef (0, 1/N), the others (1, 1/N), so that after N
// micro-batches acc holds the mean gradient without a separate zeroing pass.
//
// Bindings (group 0):
//   0 g       storage, read        f32[n]
//   1 coef    storage, read        f32[2]
//   2 acc     storage, read_write  f32[n]   every element written
//   3 params  uniform              { n }
// Dispatch: linear, ceil(n / 64) workgroups of 64 invocations, one element each. Counts over
// the per-dimension limit are folded into (x, y): flat = wg.x + wg.y * num_workgroups.x.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> g: array<f32>;
@group(0) @binding(1) var<storage, read> coef: array<f32>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn accumulate(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n {
        return;
    }
    // select, not a multiply, so that a first micro-batch ignores whatever acc held (NaN too).
    let kept = select(acc[i] * coef[0], 0.0, coef[0] == 0.0);
    acc[i] = kept + g[i] * coef[1];
}
