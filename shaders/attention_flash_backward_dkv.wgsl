// Attention backward, FlashAttention-2 style (the portable kernels), step 2 of 2: key and value
// gradients. A workgroup takes 64 keys of one kv head (an invocation a key) and walks the
// queries that see them, of every head of the kv group, a tile at a time: each tile of
// queries, output gradients, log-sum-exps and deltas is loaded once into workgroup memory and
// read from there by all 64 keys. Probabilities are recomputed as in
// attention_flash_backward_dq.wgsl, whose deltas this reads:
//   dv_j = sum_i p_ij d_out_i,   dk_j = scale * sum_i p_ij (dp_ij - delta_i) q_i
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 lse     storage, read        f32[tokens, heads]
//   5 delta   storage, read        f32[tokens, heads]
//   6 dk      storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   7 dv      storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
// Eight storage buffers: WebGPU's default per-stage limit.
// Dispatch: linear, kv_heads * ceil(tokens / 64) workgroups of 64: workgroup w takes kv head
// w % kv_heads and keys from (w / kv_heads) * 64; invocation i key row i of those.
// attention_params.wgsl and attention_common.wgsl are appended (q, k, v, Params, first_key).

// Queries a tile (QUERIES * D4 <= TILE_V4, QUERIES <= MAX_QUERIES).
override QUERIES: u32 = 32u;
const TILE_V4: u32 = 480u;
const MAX_QUERIES: u32 = 64u;

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, TILE_V4>;
var<workgroup> do_tile: array<vec4<f32>, TILE_V4>;
// Per query of the tile: (lse, delta), and the first key it sees.
var<workgroup> lse_delta_tile: array<vec2<f32>, MAX_QUERIES>;
var<workgroup> first_tile: array<u32, MAX_QUERIES>;

@compute @workgroup_size(64)
fn attention_flash_backward_dkv(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = params.heads / params.kv_heads;
    let w = wg.x + wg.y * nwg.x;
    let kv = w % params.kv_heads;
    let j0 = (w / params.kv_heads) * ROWS;
    if j0 >= params.tokens {
        return;
    }
    let j_last = min(j0 + ROWS, params.tokens) - 1u;
    // One past the last query that sees any of these keys: the last key's sequence end, or
    // its window's.
    let end = min(
        j_last - j_last % params.seq_len + params.seq_len,
        j_last + min(params.window, params.seq_len),
    );
    let j = j0 + lid;
    let live = j < params.tokens;
    let kv_row = j * params.kv_heads + kv;

    var k_row: array<vec4<f32>, MAX_D4>;
    var v_row: array<vec4<f32>, MAX_D4>;
    var acc_k: array<vec4<f32>, MAX_D4>;
    var acc_v: array<vec4<f32>, MAX_D4>;
    if live {
        for (var d = 0u; d < D4; d++) {
            k_row[d] = k[kv_row * D4 + d] * params.scale;
            v_row[d] = v[kv_row * D4 + d];
        }
    }
    for (var h = kv * group; h < (kv + 1u) * group; h++) {
        for (var i0 = j0; i0 < end; i0 += QUERIES) {
            for (var x = lid; x < QUERIES * D4; x += ROWS) {
                let i = i0 + x / D4;
                if i < end {
                    let at = (i * params.heads + h) * D4 + x % D4;
                    q_tile[x] = q[at];
                    do_tile[x] = d_out[at];
                }
            }
            if lid < QUERIES {
                let i = i0 + lid;
                if i < end {
                    let r = i * params.heads + h;
                    lse_delta_tile[lid] = vec2<f32>(lse[r], delta[r]);
                    first_tile[lid] = first_key(i, params);
                }
            }
            workgroupBarrier();
            if live {
                for (var ii = 0u; ii < QUERIES; ii++) {
                    let i = i0 + ii;
                    if i >= end || j > i || j < first_tile[ii] {
                        continue;
                    }
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < D4; d++) {
                        s += dot(q_tile[ii * D4 + d], k_row[d]);
                        dp += dot(do_tile[ii * D4 + d], v_row[d]);
                    }
                    let ld = lse_delta_tile[ii];
                    let p = exp(s - ld.x);
                    let ds = p * (dp - ld.y) * params.scale;
                    for (var d = 0u; d < D4; d++) {
                        acc_v[d] += p * do_tile[ii * D4 + d];
                        acc_k[d] += ds * q_tile[ii * D4 + d];
                    }
                }
            }
            workgroupBarrier();
        }
    }
    if live {
        for (var d = 0u; d < D4; d++) {
            dk[kv_row * D4 + d] = acc_k[d];
            dv[kv_row * D4 + d] = acc_v[d];
        }
    }
}
