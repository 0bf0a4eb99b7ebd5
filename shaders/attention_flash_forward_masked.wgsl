// Attention over packed rows with a per-token mask, forward, FlashAttention-2 style (the
// portable kernel): attention_flash_forward.wgsl's workgroups and key tiles with the keys a
// query sees taken from the mask, as attention_forward_masked.wgsl takes them:
//   query t attends key j iff first(t) <= j <= t, branch(j) is 0 or branch(t), and (on
//   sliding-window layers) position(t) - position(j) < window.
// The key walk starts at the first key of the block's first token (first never decreases
// along a row: packed examples and question groups both hold to it), so a block inside a
// short packed example reads only that example's keys.
//
// Bindings (group 0), as attention_forward_masked.wgsl:
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 mask    storage, read        f32[tokens, 4]: (first, branch, position, 0)
//   4 out     storage, read_write  f32[tokens, heads, head_dim]   every element written
//   5 lse     storage, read_write  f32[tokens, heads]             every element written
//   6 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// head_dim is a multiple of 4, at most 256; group at most 64.
// Dispatch: as attention_flash_forward.wgsl.
// attention_params.wgsl, attention_common.wgsl, attention_flash_queries.wgsl and
// attention_flash_mask.wgsl are appended.

@group(0) @binding(3) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_flash_forward_masked(
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
    let own = mask[min(t, params.tokens - 1u)];
    let first = u32(own.x);

    var q_row: array<vec4<f32>, MAX_D4>;
    var acc: array<vec4<f32>, MAX_D4>;
    if live {
        for (var d = 0u; d < D4; d++) {
            q_row[d] = q[row * D4 + d] * params.scale;
        }
    }
    var m = -3.40282346e38;
    var l = 0.0;
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
