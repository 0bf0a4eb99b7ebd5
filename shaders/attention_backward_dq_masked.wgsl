// Attention backward over packed rows with a per-token mask, the query gradient:
// attention_backward_dq.wgsl with the keys a query sees taken from the mask, as
// attention_forward_masked.wgsl does (first(t) <= j <= t, branch 0 or the query's own, and on
// sliding-window layers a position less than window before its own).
//   p_ij = exp(scale q_i·k_j - lse_i),  dp_ij = d_out_i · v_j
//   dq_i = scale * sum_{j seen} p_ij (dp_ij - delta_i) k_j
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 lse     storage, read        f32[tokens, heads]
//   5 delta   storage, read        f32[tokens, heads]
//   6 mask    storage, read        f32[tokens, 4]: (first, branch, position, 0)
//   7 dq      storage, read_write  f32[tokens, heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// Dispatch: linear, ceil(tokens * heads / 64) workgroups of 64, one query row (t, h) each.
// attention_params.wgsl and attention_common.wgsl are appended (Params, HEAD_DIM, q, k, v).

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_backward_dq_masked(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid;
    if row >= params.tokens * params.heads {
        return;
    }
    let t = row / params.heads;
    let h = row % params.heads;
    let kv = h / (params.heads / params.kv_heads);
    let first = u32(mask[t].x);
    let branch = mask[t].y;
    let position = mask[t].z;
    let window = f32(params.window);
    let base = row * D4;
    let row_lse = lse[row];
    let row_delta = delta[row];

    var acc: array<vec4<f32>, MAX_D4>;
    for (var j = first; j <= t; j++) {
        let key_branch = mask[j].y;
        if (key_branch != 0.0 && key_branch != branch) || position - mask[j].z >= window {
            continue;
        }
        let kv_base = (j * params.kv_heads + kv) * D4;
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D4; d++) {
            s += dot(q[base + d], k[kv_base + d]);
            dp += dot(d_out[base + d], v[kv_base + d]);
        }
        let p = exp(s * params.scale - row_lse);
        let ds = p * (dp - row_delta) * params.scale;
        for (var d = 0u; d < D4; d++) {
            acc[d] += ds * k[kv_base + d];
        }
    }
    for (var d = 0u; d < D4; d++) {
        dq[base + d] = acc[d];
    }
}
