// Cross-entropy over vocabulary chunks in one pass, step 4 of 4: d hidden from the sum of the
// chunks' numerator products (acc = sum over the vocabulary of exp(logit - m) · W[id], m the
// row's final max) and the row's statistics:
//   d_hidden[row] = (acc[row] / s - W[target]) / counted    (softmax · W minus the target's row)
// and 0 for IGNORE rows (and when no row counts). The loss is the mean over counted rows, so
// each counted row's gradient is divided by the count (loss[1], from cross_entropy_loss.wgsl).
// W[target] comes gathered (the embedding kernel over the targets, zeros for IGNORE), so the
// lm-head may be in parts or in f16.
//
// Bindings (group 0):
//   0 d_hidden  storage, read_write  f32[rows, dim]   acc in, d hidden out
//   1 targets   storage, read        u32[rows]
//   2 stats     storage, read        f32[rows, 3]     (m, s, target logit)
//   3 loss      storage, read        f32[2]           (mean loss, counted rows)
//   4 target_w  storage, read        f32[rows, dim]   W[target] of each row
//   5 params    uniform              { rows, dim }
// Dispatch: linear, ceil(rows * dim / 64) workgroups of 64, one value each.

struct Params {
    rows: u32,
    dim: u32,
}

const IGNORE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> d_hidden: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> loss: array<f32>;
@group(0) @binding(4) var<storage, read> target_w: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn ce_finish(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.dim {
        return;
    }
    let row = i / params.dim;
    let t = targets[row];
    let counted = loss[1];
    if t == IGNORE || counted == 0.0 {
        d_hidden[i] = 0.0;
        return;
    }
    let softmax_w = d_hidden[i] / stats[row * 3u + 1u];
    d_hidden[i] = (softmax_w - target_w[i]) / counted;
}
