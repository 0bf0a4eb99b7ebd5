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
// workgroups and rows as attention_flash_queries.wgsl says.
// attention_params.wgsl, attention_common.wgsl and attention_flash_queries.wgsl are appended (q, k, v, Params, the
// key tiles).

@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_flash_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = query_block(wg.x + wg.y * nwg.x, params);
    if b.t0 >= params.tokens {
        return; // the whole workgroup: past the last block
    }
    let r = query_row(b, lid, params);
    let live = r.live;
    let t = r.t;
    let row = r.row;
    let first = first_key(t, params);

    var q_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    if live {
        for (var d = 0u; d < D4; d++) {
            q_row[d] = q[row * D4 + d] * params.scale;
        }
    }
    var m = -3.40282346e38;
    var l = 0.0;
    for (var j0 = first_key(b.t0, params); j0 <= b.t_last; j0 += KEYS) {
        load_key_tile(b, j0, lid, params);
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
