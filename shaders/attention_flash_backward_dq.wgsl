// Attention backward, FlashAttention-2 style (the portable kernels), step 1 of 2: each query
// row's delta (d_out · out, the term the softmax backward subtracts) and its query gradient.
// The workgroups and tiles are the forward's (attention_flash_forward.wgsl): a block of
// queries of every head of one kv group, keys and values loaded a tile at a time into
// workgroup memory; the probabilities are recomputed from the saved log-sum-exp.
//   p_ij = exp(scale * q_i · k_j - lse_i),  dp_ij = d_out_i · v_j,  delta_i = d_out_i · out_i
//   dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 out     storage, read        f32[tokens, heads, head_dim]
//   5 lse     storage, read        f32[tokens, heads]
//   6 delta   storage, read_write  f32[tokens, heads]             every element written
//   7 dq      storage, read_write  f32[tokens, heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
// Eight storage buffers: WebGPU's default per-stage limit.
// Dispatch: as attention_flash_forward.

override HEAD_DIM: u32 = 64u;
override D4: u32 = HEAD_DIM / 4u;
const MAX_D4: u32 = 64u;
override KEYS: u32 = 32u;
const TILE_V4: u32 = 512u;
const ROWS: u32 = 64u;

struct Params {
    tokens: u32,
    seq_len: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
    window: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> k_tile: array<vec4<f32>, TILE_V4>;
var<workgroup> v_tile: array<vec4<f32>, TILE_V4>;

fn first_key(t: u32) -> u32 {
    return max(t - t % params.seq_len, select(0u, t + 1u - params.window, t >= params.window));
}

@compute @workgroup_size(64)
fn attention_flash_backward_dq(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = params.heads / params.kv_heads;
    let block_tokens = ROWS / group;
    let w = wg.x + wg.y * nwg.x;
    let kv = w % params.kv_heads;
    let t0 = (w / params.kv_heads) * block_tokens;
    if t0 >= params.tokens {
        return;
    }
    let t_last = min(t0 + block_tokens, params.tokens) - 1u;
    let t = t0 + lid / group;
    let h = kv * group + lid % group;
    let live = lid < block_tokens * group && t < params.tokens;
    let row = t * params.heads + h;
    let first = first_key(t);

    var q_row: array<vec4<f32>, MAX_D4>;
    var do_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    var lse_row = 0.0;
    var delta_row = 0.0;
    if live {
        var dot_out = 0.0;
        for (var d = 0u; d < D4; d++) {
            q_row[d] = q[row * D4 + d] * params.scale;
            do_row[d] = d_out[row * D4 + d];
            dot_out += dot(do_row[d], out[row * D4 + d]);
        }
        delta_row = dot_out;
        delta[row] = dot_out;
        lse_row = lse[row];
    }
    for (var j0 = first_key(t0); j0 <= t_last; j0 += KEYS) {
        for (var i = lid; i < KEYS * D4; i += ROWS) {
            let j = j0 + i / D4;
            if j <= t_last {
                let at = (j * params.kv_heads + kv) * D4 + i % D4;
                k_tile[i] = k[at];
                v_tile[i] = v[at];
            }
        }
        workgroupBarrier();
        if live {
            for (var jj = 0u; jj < KEYS; jj++) {
                let j = j0 + jj;
                if j < first || j > t {
                    continue;
                }
                var s = 0.0;
                var dp = 0.0;
                for (var d = 0u; d < D4; d++) {
                    s += dot(q_row[d], k_tile[jj * D4 + d]);
                    dp += dot(do_row[d], v_tile[jj * D4 + d]);
                }
                let ds = exp(s - lse_row) * (dp - delta_row) * params.scale;
                for (var d = 0u; d < D4; d++) {
                    acc[d] += ds * k_tile[jj * D4 + d];
                }
            }
        }
        workgroupBarrier();
    }
    if live {
        for (var d = 0u; d < D4; d++) {
            dq[row * D4 + d] = acc[d];
        }
    }
}
