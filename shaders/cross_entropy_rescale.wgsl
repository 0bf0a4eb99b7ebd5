// Cross-entropy over vocabulary chunks in one pass, step 2 of 4: before a chunk's numerators
// are added into d hidden, multiply each row of d hidden by rescale[row] = exp(m_old - m_new)
// (cross_entropy_online.wgsl), so that everything in it stays against the row's current max.
// A row whose max did not move (factor exactly 1, most rows after the first few chunks) is
// left as it is.
//
// Bindings (group 0):
//   0 d_hidden  storage, read_write  f32[rows, dim]
//   1 rescale   storage, read        f32[rows]
//   2 params    uniform              { rows, dim }
// Dispatch: linear, ceil(rows / 64) workgroups of 64, one row each.

struct Params {
    rows: u32,
    dim: u32,
}

@group(0) @binding(0) var<storage, read_write> d_hidden: array<f32>;
@group(0) @binding(1) var<storage, read> rescale: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(64)
fn ce_rescale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid;
    if row >= params.rows {
        return;
    }
    let factor = rescale[row];
    if factor == 1.0 {
        return;
    }
    let base = row * params.dim;
    for (var c = 0u; c < params.dim; c++) {
        d_hidden[base + c] *= factor;
    }
}

// ce_rescale_elements: the same, an invocation an element (for GPUs, the portable path:
// neighbouring invocations, neighbouring values).
// Dispatch: linear, ceil(rows * dim / 256) workgroups of 256 (folded into (x, y) past the
// per-dimension limit).
@compute @workgroup_size(256)
fn ce_rescale_elements(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if i >= params.rows * params.dim {
        return;
    }
    let factor = rescale[i / params.dim];
    if factor != 1.0 {
        d_hidden[i] *= factor;
    }
}
