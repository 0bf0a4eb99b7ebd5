// Attention backward over packed rows with a per-token mask, the query gradient,
// FlashAttention-2 style (the portable kernel): attention_flash_backward_dq.wgsl's workgroups
// and key tiles with the mask of attention_flash_forward_masked.wgsl. The deltas come from
// attention_delta.wgsl (with the mask bound, computing them here would bind nine storage
// buffers, one over WebGPU's default limit).
//   p_ij = exp(scale * q_i · k_j - lse_i),  dp_ij = d_out_i · v_j
//   dq_i = scale * sum_{j seen} p_ij (dp_ij - delta_i) k_j
//
// Bindings (group 0), as attention_backward_dq_masked.wgsl:
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 lse     storage, read        f32[tokens, heads]
//   5 delta   storage, read        f32[tokens, heads]
//   6 mask    storage, read        f32[tokens, 4]: (first, branch, position, 0)
//   7 dq      storage, read_write  f32[tokens, heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// Dispatch: as attention_flash_forward.wgsl.
// attention_params.wgsl, attention_common.wgsl, attention_flash_queries.wgsl and
// attention_flash_mask.wgsl are appended.

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_flash_backward_dq_masked(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = query_block(wg.x + wg.y * nwg.x, params);
    if b.t0 >= params.tokens {
        return;
    }
    let r = query_row(b, lid, params);
    let live = r.live;
    let t = r.t;
    let row = r.row;
    let own = mask[min(t, params.tokens - 1u)];
    let first = u32(own.x);

    var q_row: array<vec4<f32>, MAX_D4>;
    var do_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    var lse_row = 0.0;
    var delta_row = 0.0;
    if live {
        for (var d = 0u; d < D4; d++) {
            q_row[d] = q[row * D4 + d] * params.scale;
            do_row[d] = d_out[row * D4 + d];
        }
        lse_row = lse[row];
        delta_row = delta[row];
    }
    // first never decreases along a row: the block's first token sees the block's first key.
    for (var j0 = block_first_key(u32(mask[b.t0].x), lid); j0 <= b.t_last; j0 += KEYS) {
        load_key_tile(b, j0, lid, params);
        if lid < KEYS && j0 + lid <= b.t_last {
            key_mask_tile[lid] = mask[j0 + lid].yz;
        }
        workgroupBarrier();
        if live {
            for (var jj = 0u; jj < KEYS; jj++) {
                let j = j0 + jj;
                if j < first || j > t || !tile_key_seen(own, jj, params) {
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
