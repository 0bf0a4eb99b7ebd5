// Cross-entropy over vocabulary chunks, step 1 of 3 (see src/ops/cross_entropy.rs): fold one
// chunk of logits [rows, chunk] (vocabulary ids v0..v0 + chunk) into each row's running max m,
// sum of exp(logit - m) s, and the target's logit when the target is in this chunk (online
// softmax). With first = 1 the statistics start here instead of being read.
// Targets are u32 ids; IGNORE (0xffffffff, transformers' -100) rows carry no loss.
//
// Bindings (group 0):
//   0 logits   storage, read        f32[rows, chunk]
//   1 targets  storage, read        u32[rows]
//   2 stats    storage, read_write  f32[rows, 3]   (m, s, target logit), every element written
//   3 params   uniform              { rows, chunk, v0, first }
// Dispatch: linear, ceil(rows / 64) workgroups of 64, one row each.

struct Params {
    rows: u32,
    chunk: u32,
    v0: u32,
    first: u32,
}

const IGNORE: u32 = 0xffffffffu;
const LOWEST: f32 = -3.40282346e38;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn ce_stats(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid;
    if row >= params.rows {
        return;
    }
    var m = LOWEST;
    var s = 0.0;
    var target_logit = 0.0;
    if params.first == 0u {
        m = stats[row * 3u];
        s = stats[row * 3u + 1u];
        target_logit = stats[row * 3u + 2u];
    }
    let base = row * params.chunk;
    var chunk_max = LOWEST;
    for (var j = 0u; j < params.chunk; j++) {
        chunk_max = max(chunk_max, logits[base + j]);
    }
    let m_new = max(m, chunk_max);
    var sum = 0.0;
    for (var j = 0u; j < params.chunk; j++) {
        sum += exp(logits[base + j] - m_new);
    }
    let t = targets[row];
    if t != IGNORE && t >= params.v0 && t < params.v0 + params.chunk {
        target_logit = logits[base + t - params.v0];
    }
    stats[row * 3u] = m_new;
    stats[row * 3u + 1u] = s * exp(m - m_new) + sum;
    stats[row * 3u + 2u] = target_logit;
}
