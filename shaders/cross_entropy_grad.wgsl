// Cross-entropy over vocabulary chunks, step 3 of 3: turn a recomputed chunk of logits
// [rows, chunk] (vocabulary ids v0..v0 + chunk) into d loss / d logits, in place:
//   (exp(logit - lse) - [id == target]) / counted,  lse = m + ln(s);  0 for IGNORE rows.
// The loss is the mean over counted rows, so each counted row's gradient is divided by the
// count (loss[1], from cross_entropy_loss.wgsl).
//
// Bindings (group 0):
//   0 logits   storage, read_write  f32[rows, chunk]   rewritten as gradients
//   1 targets  storage, read        u32[rows]
//   2 stats    storage, read        f32[rows, 3]       (m, s, target logit)
//   3 loss     storage, read        f32[2]             (mean loss, counted rows)
//   4 params   uniform              { rows, chunk, v0 }
// Dispatch: linear, ceil(rows * chunk / 64) workgroups of 64, one logit each.

struct Params {
    rows: u32,
    chunk: u32,
    v0: u32,
}

const IGNORE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> loss: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn ce_grad(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.rows * params.chunk {
        return;
    }
    let row = i / params.chunk;
    let j = i % params.chunk;
    let t = targets[row];
    let counted = loss[1];
    if t == IGNORE || counted == 0.0 {
        logits[i] = 0.0;
        return;
    }
    let lse = stats[row * 3u] + log(stats[row * 3u + 1u]);
    var d = exp(logits[i] - lse);
    if t == params.v0 + j {
        d -= 1.0;
    }
    logits[i] = d / counted;
}
