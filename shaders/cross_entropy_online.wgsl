// Cross-entropy over vocabulary chunks in one pass, step 1 of 4 (see src/ops/cross_entropy.rs):
// fold one chunk of logits [rows, chunk] (vocabulary ids v0..v0 + chunk) into each row's
// running max m, sum s of exp(logit - m) and target logit (online softmax), and turn the chunk
// in place into exp(logit - m_new): the row's softmax numerators against its new max, which
// the next product adds into d hidden. What d hidden holds from earlier chunks is against the
// old max, so rescale[row] = exp(m_old - m_new) is what it must be multiplied by first
// (cross_entropy_rescale.wgsl). With first = 1 the statistics start here (rescale is 0).
// Targets are u32 ids; IGNORE (0xffffffff, transformers' -100) rows carry no loss (their
// numerators are computed all the same; cross_entropy_finish.wgsl writes their gradient 0).
//
// Bindings (group 0):
//   0 logits   storage, read_write  f32[rows, chunk]   rewritten as exp(logit - m_new)
//   1 targets  storage, read        u32[rows]
//   2 stats    storage, read_write  f32[rows, 3]       (m, s, target logit), every element written
//   3 rescale  storage, read_write  f32[rows]          exp(m_old - m_new), every element written
//   4 params   uniform              { rows, chunk, v0, first }
// Dispatch: linear, ceil(rows / 64) workgroups of 64, one row each.

struct Params {
    rows: u32,
    chunk: u32,
    v0: u32,
    first: u32,
}

const IGNORE: u32 = 0xffffffffu;
const LOWEST: f32 = -3.40282346e38;

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> rescale: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn ce_online(
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
    let t = targets[row];
    if t != IGNORE && t >= params.v0 && t < params.v0 + params.chunk {
        target_logit = logits[base + t - params.v0];
    }
    var chunk_max = LOWEST;
    for (var j = 0u; j < params.chunk; j++) {
        chunk_max = max(chunk_max, logits[base + j]);
    }
    let m_new = max(m, chunk_max);
    var sum = 0.0;
    for (var j = 0u; j < params.chunk; j++) {
        let e = exp(logits[base + j] - m_new);
        sum += e;
        logits[base + j] = e;
    }
    // Exactly 1 while the max stands (whatever exp(0) rounds to), which lets the rescale skip
    // the row; 0 for the first chunk (nothing to rescale, s is 0).
    let factor = select(select(exp(m - m_new), 1.0, m_new == m), 0.0, params.first != 0u);
    stats[row * 3u] = m_new;
    stats[row * 3u + 1u] = s * factor + sum;
    stats[row * 3u + 2u] = target_logit;
    rescale[row] = factor;
}

// ce_online_rows: the same results (up to the order of the sums) with a workgroup of 256 a
// row, for GPUs (the portable path): invocation l reads columns l, l + 256, ... (neighbouring
// invocations, neighbouring logits), and the row's max and sum are workgroup reductions.
// Dispatch: linear, `rows` workgroups of 256 (folded into (x, y) past the per-dimension limit).

var<workgroup> reduce: array<f32, 256>;

/// The workgroup's 256 values of `reduce` combined pairwise (max when `take_max`, else sum);
/// every invocation gets the result.
fn workgroup_reduce(v: f32, lid: u32, take_max: bool) -> f32 {
    reduce[lid] = v;
    for (var half = 128u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if lid < half {
            if take_max {
                reduce[lid] = max(reduce[lid], reduce[lid + half]);
            } else {
                reduce[lid] += reduce[lid + half];
            }
        }
    }
    workgroupBarrier();
    let result = reduce[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(256)
fn ce_online_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // The row is the workgroup's, so every invocation takes the same branches.
    let row = wg.x + wg.y * nwg.x;
    if row >= params.rows {
        return;
    }
    let base = row * params.chunk;
    // Read before the chunk is rewritten (after the first reduction's barriers).
    let t = targets[row];
    var target_logit = 0.0;
    var in_chunk = false;
    if t != IGNORE && t >= params.v0 && t < params.v0 + params.chunk {
        target_logit = logits[base + t - params.v0];
        in_chunk = true;
    }
    var local_max = LOWEST;
    for (var j = lid; j < params.chunk; j += 256u) {
        local_max = max(local_max, logits[base + j]);
    }
    let chunk_max = workgroup_reduce(local_max, lid, true);
    var m = LOWEST;
    var s = 0.0;
    if params.first == 0u {
        m = stats[row * 3u];
        s = stats[row * 3u + 1u];
        if !in_chunk {
            target_logit = stats[row * 3u + 2u];
        }
    }
    let m_new = max(m, chunk_max);
    var local_sum = 0.0;
    for (var j = lid; j < params.chunk; j += 256u) {
        let e = exp(logits[base + j] - m_new);
        local_sum += e;
        logits[base + j] = e;
    }
    let sum = workgroup_reduce(local_sum, lid, false);
    if lid == 0u {
        let factor = select(select(exp(m - m_new), 1.0, m_new == m), 0.0, params.first != 0u);
        stats[row * 3u] = m_new;
        stats[row * 3u + 1u] = s * factor + sum;
        stats[row * 3u + 2u] = target_logit;
        rescale[row] = factor;
    }
}
