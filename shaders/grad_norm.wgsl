// Global gradient norm and clipping, in two kernels (this file and grad_clip.wgsl) so no
// value leaves the GPU:
//   grad_sumsq: partials[offset + c] = sum of grad[i]^2 over chunk c of 256 elements; one node
//               per gradient tensor, each writing its own range of `partials`.
//   grad_clip:  (grad_clip.wgsl) the norm and the clip factor from the partial sums.
//
// grad_sumsq bindings (group 0):
//   0 grad      storage, read        f32[n]
//   1 partials  storage, read_write  f32[count]   this node writes [offset, offset + chunks)
//   2 params    uniform              { n, offset }
// Dispatch: linear, ceil(chunks / 64) workgroups of 64, one chunk of 256 elements each.

struct Params {
    n: u32,
    offset: u32,
}

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn grad_sumsq(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let chunk = (wg.x + wg.y * nwg.x) * 64u + lid;
    let start = chunk * 256u;
    if start >= params.n {
        return;
    }
    let end = min(start + 256u, params.n);
    var sum = 0.0;
    for (var i = start; i < end; i++) {
        sum += grad[i] * grad[i];
    }
    partials[params.offset + chunk] = sum;
}
