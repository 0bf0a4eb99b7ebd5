// The end of a split-K product (gemm.wgsl): c[i] = alpha * sum_s parts[s * n + i] (+ c[i]
// with the ACCUMULATE constant), the partial sums added in split order.
//
// Bindings (group 0):
//   0 parts   storage, read        f32[splits, n]
//   1 c       storage, read_write  f32[n]   every element written
//   2 params  uniform              { n, splits, alpha }
// Dispatch: linear, ceil(n / 256) workgroups of 256, one element each (folded into (x, y)
// past the per-dimension limit).

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    n: u32,
    splits: u32,
    alpha: f32,
}

@group(0) @binding(0) var<storage, read> parts: array<f32>;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn split_sum(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if i >= params.n {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        sum += parts[s * params.n + i];
    }
    var v = params.alpha * sum;
    if ACCUMULATE {
        v += c[i];
    }
    c[i] = v;
}
