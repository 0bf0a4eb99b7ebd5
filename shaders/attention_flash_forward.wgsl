// Causal grouped-query attention, forward, FlashAttention-2 style (the portable kernel):
// a workgroup takes a block of queries of every head of one kv group and walks the keys they
// see a tile at a time; each tile of keys and values is loaded once into workgroup memory
// (coalesced vec4 reads) and read from there by all the group's query rows, so each key row
// leaves global memory once a workgroup instead of once a query row. Probabilities are never
// stored: each query row keeps a running max and sum (online softmax) and saves its
// log-sum-exp for the backward.
//   Tokens are sequences of seq_len; token t attends tokens j of its sequence with j <= t (and
//   t - j < window on sliding-window layers). Query head h reads kv head h / group,
//   group = heads / kv_heads.
//   s_ij = scale * q_i · k_j;  out_i = sum_j softmax_j(s_ij) v_j;  lse_i = log sum_j exp(s_ij)
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 out     storage, read_write  f32[tokens, heads, head_dim]   every element written
//   4 lse     storage, read_write  f32[tokens, heads]             every element written
//   5 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
// head_dim is a multiple of 4, at most 256; group at most 64.
// Dispatch: linear, kv_heads * ceil(tokens / (64 / group)) workgroups of 64 invocations:
// workgroup w takes kv head w % kv_heads and the 64 / group tokens from (w / kv_heads) *
// (64 / group); invocation i the query row (token i / group, head i % group of the kv group).

// head_dim is a pipeline constant so every loop over it has a constant trip count and is
// unrolled (llvmpipe ends any invocation's loops after 65,535 iterations in total).
override HEAD_DIM: u32 = 64u;
override D4: u32 = HEAD_DIM / 4u;
const MAX_D4: u32 = 64u;
// Keys a tile: KEYS * head_dim f32 of keys and as many of values fill the two tiles
// (KEYS * D4 <= TILE_V4).
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
    /// Keys more than window - 1 positions back are not seen (sliding-window layers);
    /// 0xffffffff for none.
    window: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> k_tile: array<vec4<f32>, TILE_V4>;
var<workgroup> v_tile: array<vec4<f32>, TILE_V4>;

/// The first key token t sees: its sequence's first, or the window's.
fn first_key(t: u32) -> u32 {
    return max(t - t % params.seq_len, select(0u, t + 1u - params.window, t >= params.window));
}

@compute @workgroup_size(64)
fn attention_flash_forward(
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
        return; // the whole workgroup: past the last block
    }
    let t_last = min(t0 + block_tokens, params.tokens) - 1u;
    let t = t0 + lid / group;
    let h = kv * group + lid % group;
    let live = lid < block_tokens * group && t < params.tokens;
    let row = t * params.heads + h;
    let first = first_key(t);

    var q_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    if live {
        for (var d = 0u; d < D4; d++) {
            q_row[d] = q[row * D4 + d] * params.scale;
        }
    }
    var m = -3.40282346e38;
    var l = 0.0;
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
                for (var d = 0u; d < D4; d++) {
                    s += dot(q_row[d], k_tile[jj * D4 + d]);
                }
                let m_new = max(m, s);
                let correction = exp(m - m_new);
                let p = exp(s - m_new);
                l = l * correction + p;
                for (var d = 0u; d < D4; d++) {
                    acc[d] = acc[d] * correction + p * v_tile[jj * D4 + d];
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }
    if live {
        for (var d = 0u; d < D4; d++) {
            out[row * D4 + d] = acc[d] / l;
        }
        lse[row] = m + log(l);
    }
}
