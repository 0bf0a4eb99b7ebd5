// Cross-entropy over vocabulary chunks, step 2 of 3: the mean over counted rows from the
// statistics of cross_entropy_stats.wgsl; row loss = m + ln(s) - target logit.
//   loss[0] = sum of row losses / counted (0 when no row counts), loss[1] = counted.
//
// Bindings (group 0):
//   0 stats    storage, read        f32[rows, 3]   (m, s, target logit)
//   1 targets  storage, read        u32[rows]      IGNORE (0xffffffff) rows carry no loss
//   2 loss     storage, read_write  f32[2]         every element written
//   3 params   uniform              { rows }
// Dispatch: grid (1, 1, 1) of one invocation; rows are summed in order (deterministic).

struct Params {
    rows: u32,
}

const IGNORE: u32 = 0xffffffffu;

@group(0) @binding(0) var<storage, read> stats: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(1)
fn ce_loss() {
    var sum = 0.0;
    var counted = 0.0;
    for (var row = 0u; row < params.rows; row++) {
        if targets[row] != IGNORE {
            sum += stats[row * 3u] + log(stats[row * 3u + 1u]) - stats[row * 3u + 2u];
            counted += 1.0;
        }
    }
    loss[0] = select(0.0, sum / counted, counted > 0.0);
    loss[1] = counted;
}
