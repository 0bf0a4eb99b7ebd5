// The second half of grad_norm.wgsl: the global norm from the partial sums, and the clip
// factor AdamW multiplies gradients by.
//   norm = sqrt(sum of partials[0..count]): invocation l sums partials l, l + 256, ..., then
//          the workgroup adds its 256 sums pairwise (a fixed order: deterministic)
//   grad_scale[0] = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0
//   grad_scale[1] = norm
//
// Bindings (group 0):
//   0 partials    storage, read        f32[count]
//   1 grad_scale  storage, read_write  f32[2]   every element written
//   2 params      uniform              { count, max_norm }
// Dispatch: grid (1, 1, 1), one workgroup of 256.

struct Params {
    count: u32,
    max_norm: f32,
}

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad_scale: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn grad_clip(@builtin(local_invocation_index) lid: u32) {
    var sum = 0.0;
    for (var i = lid; i < params.count; i += 256u) {
        sum += partials[i];
    }
    sums[lid] = sum;
    for (var half = 128u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if lid < half {
            sums[lid] += sums[lid + half];
        }
    }
    if lid == 0u {
        let norm = sqrt(sums[0]);
        var scale = 1.0;
        if params.max_norm > 0.0 {
            scale = min(1.0, params.max_norm / (norm + 1e-6));
        }
        grad_scale[0] = scale;
        grad_scale[1] = norm;
    }
}
