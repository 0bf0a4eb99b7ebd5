// Cross-entropy over vocabulary chunks in one pass, step 4 of 4: d hidden from the sum of the
// chunks' numerator products (acc = sum over the vocabulary of exp(logit - m) · W[id], m the
// row's final max) and the row's statistics:
//   d_hidden[row] = (acc[row] / s - W[target]) / counted    (softmax · W minus the target's row)
// and 0 for IGNORE rows (and when no row counts). The loss is the mean over counted rows, so
// each counted row's gradient is divided by the count (loss[1], from cross_entropy_loss.wgsl).
// An lm-head split by rows into parts (a vocabulary larger than one binding) runs this once a
// part: the first run (normalize = 1) divides acc by s, every run subtracts the target's row
// when its part (rows first .. first + part_rows) holds it; one part is the formula above.
//
// Bindings (group 0):
//   0 d_hidden  storage, read_write  f32[rows, dim]   acc in, d hidden out
//   1 targets   storage, read        u32[rows]
//   2 stats     storage, read        f32[rows, 3]     (m, s, target logit)
//   3 loss      storage, read        f32[2]           (mean loss, counted rows)
//   4 weight    storage, read        f32[part_rows, dim]  the lm-head (or one part of it)
//   5 params    uniform              { rows, dim, first, part_rows, normalize }
// Dispatch: linear, ceil(rows * dim / 64) workgroups of 64, one value each.

struct Params {
    rows: u32,
    dim: u32,
    first: u32,
    part_rows: u32,
    normalize: u32,
}

const IGNORE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> d_hidden: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> loss: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
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
        if params.normalize != 0u {
            d_hidden[i] = 0.0;
        }
        return;
    }
    let here = t >= params.first && t - params.first < params.part_rows;
    let target_w = select(0.0, weight[(t - params.first) * params.dim + i % params.dim], here);
    if params.normalize != 0u {
        let softmax_w = d_hidden[i] / stats[row * 3u + 1u];
        d_hidden[i] = (softmax_w - target_w) / counted;
    } else if here {
        d_hidden[i] -= target_w / counted;
    }
}
