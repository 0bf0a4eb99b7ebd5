// The second half of grad_norm.wgsl: the global norm from the partial sums, and the clip
// factor AdamW multiplies gradients by.
//   norm = sqrt(sum of partials[0..count]), summed in order (deterministic)
//   grad_scale[0] = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0
//   grad_scale[1] = norm
//
// Bindings (group 0):
//   0 partials    storage, read        f32[count]
//   1 grad_scale  storage, read_write  f32[2]   every element written
//   2 params      uniform              { count, max_norm }
// Dispatch: grid (1, 1, 1) of one invocation (count is a few thousand partial sums).

struct Params {
    count: u32,
    max_norm: f32,
}

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad_scale: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(1)
fn grad_clip() {
    var sum = 0.0;
    for (var i = 0u; i < params.count; i++) {
        sum += partials[i];
    }
    let norm = sqrt(sum);
    var scale = 1.0;
    if params.max_norm > 0.0 {
        scale = min(1.0, params.max_norm / (norm + 1e-6));
    }
    grad_scale[0] = scale;
    grad_scale[1] = norm;
}
