// Attention backward over packed rows with a per-token mask, the key or the value gradient
// (the override DV picks which, as in attention_backward_dkv_masked.wgsl: with the mask, one
// kernel writing both would bind nine storage buffers), FlashAttention-2 style (the portable
// kernel): attention_flash_backward_dkv.wgsl's workgroups and query tiles. A workgroup takes
// 64 keys of one kv head and walks the queries from its first key while the tile's first
// query's `first` is at or before its last key (`first` never decreases along a row), so keys
// inside a short packed example read only that example's queries; the mask rules are
// attention_forward_masked.wgsl's.
//   dk_j = scale * sum p_ij (dp_ij - delta_i) q_i        (DV false)
//   dv_j = sum p_ij d_out_i                              (DV true)
//
// Bindings (group 0), as attention_backward_dkv_masked.wgsl:
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 lse     storage, read        f32[tokens, heads]
//   5 delta   storage, read        f32[tokens, heads]
//   6 mask    storage, read        f32[tokens, 4]: (first, branch, position, 0)
//   7 grad    storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// Dispatch: as attention_flash_backward_dkv.wgsl.
// attention_params.wgsl and attention_common.wgsl are appended (q, k, v, Params).

/// Which gradient: the values' (true) or the keys' (false).
override DV: bool = false;
// Queries a tile (QUERIES * D4 <= TILE_V4, QUERIES <= MAX_QUERIES).
override QUERIES: u32 = 30u;
const TILE_V4: u32 = 480u;
const MAX_QUERIES: u32 = 32u;

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> q_tile: array<vec4<f32>, TILE_V4>;
var<workgroup> do_tile: array<vec4<f32>, TILE_V4>;
// Per query of the tile: (lse, delta, branch, position), and the first key it sees.
var<workgroup> query_tile: array<vec4<f32>, MAX_QUERIES>;
var<workgroup> first_tile: array<u32, MAX_QUERIES>;
// Whether the next tile holds a query that sees any of the workgroup's keys.
var<workgroup> tile_open: u32;

@compute @workgroup_size(64)
fn attention_flash_backward_dkv_masked(
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
    let j = j0 + lid;
    let live = j < params.tokens;
    let kv_row = j * params.kv_heads + kv;
    let key = mask[min(j, params.tokens - 1u)];
    let window = f32(params.window);

    var k_row: array<vec4<f32>, MAX_D4>;
    var v_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    if live {
        for (var d = 0u; d < D4; d++) {
            k_row[d] = k[kv_row * D4 + d] * params.scale;
            v_row[d] = v[kv_row * D4 + d];
        }
    }
    for (var h = kv * group; h < (kv + 1u) * group; h++) {
        var i0 = j0;
        loop {
            if lid == 0u {
                tile_open = select(0u, 1u, i0 < params.tokens && u32(mask[i0].x) <= j_last);
            }
            if workgroupUniformLoad(&tile_open) == 0u {
                break;
            }
            for (var x = lid; x < QUERIES * D4; x += ROWS) {
                let i = i0 + x / D4;
                if i < params.tokens {
                    let at = (i * params.heads + h) * D4 + x % D4;
                    q_tile[x] = q[at];
                    do_tile[x] = d_out[at];
                }
            }
            if lid < QUERIES {
                let i = i0 + lid;
                if i < params.tokens {
                    let r = i * params.heads + h;
                    let m = mask[i];
                    query_tile[lid] = vec4<f32>(lse[r], delta[r], m.y, m.z);
                    first_tile[lid] = u32(m.x);
                }
            }
            workgroupBarrier();
            if live {
                for (var ii = 0u; ii < QUERIES; ii++) {
                    let i = i0 + ii;
                    let qm = query_tile[ii];
                    if i >= params.tokens || j > i || j < first_tile[ii]
                        || (key.y != 0.0 && key.y != qm.z) || qm.w - key.z >= window {
                        continue;
                    }
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < D4; d++) {
                        s += dot(q_tile[ii * D4 + d], k_row[d]);
                        dp += dot(do_tile[ii * D4 + d], v_row[d]);
                    }
                    let p = exp(s - qm.x);
                    let ds = p * (dp - qm.y) * params.scale;
                    for (var d = 0u; d < D4; d++) {
                        acc[d] += select(ds * q_tile[ii * D4 + d], p * do_tile[ii * D4 + d], DV);
                    }
                }
            }
            workgroupBarrier();
            i0 += QUERIES;
        }
    }
    if live {
        for (var d = 0u; d < D4; d++) {
            grad[kv_row * D4 + d] = acc[d];
        }
    }
}
