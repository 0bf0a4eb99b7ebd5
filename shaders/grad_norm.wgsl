// Global gradient norm and clipping, in two kernels (this file and grad_clip.wgsl) so no
// value leaves the GPU, both workgroup reductions (neighbouring invocations read neighbouring
// values; the order of the sums is fixed, so the norm is the same every run):
//   grad_sumsq: partials[offset + c] = sum of grad[i]^2 over chunk c of 4,096 elements, a
//               workgroup a chunk: invocation l sums elements l, l + 256, ... of the chunk,
//               then the workgroup adds its 256 sums pairwise (a tree in workgroup memory).
//               One node per gradient tensor (or group), each writing its own range.
//   grad_clip:  (grad_clip.wgsl) the norm and the clip factor from the partial sums.
//
// grad_sumsq bindings (group 0):
//   0 grad      storage, read        f32[n]
//   1 partials  storage, read_write  f32[count]   this node writes [offset, offset + chunks)
//   2 params    uniform              { n, offset }
// Dispatch: linear, ceil(n / 4096) workgroups of 256, one chunk each (folded into (x, y) past
// the per-dimension limit).

struct Params {
    n: u32,
    offset: u32,
}

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

const CHUNK: u32 = 4096u;

var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn grad_sumsq(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Every invocation of a workgroup takes the same branches (the barriers need that):
    // the chunk index is the workgroup's.
    let chunk = wg.x + wg.y * nwg.x;
    let start = chunk * CHUNK;
    var sum = 0.0;
    for (var i = start + lid; i < min(start + CHUNK, params.n); i += 256u) {
        sum += grad[i] * grad[i];
    }
    sums[lid] = sum;
    for (var half = 128u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if lid < half {
            sums[lid] += sums[lid + half];
        }
    }
    if lid == 0u && start < params.n {
        partials[params.offset + chunk] = sums[0];
    }
}
