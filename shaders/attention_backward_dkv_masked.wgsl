// Attention backward over packed rows with a per-token mask, the key or the value gradient
// (the override DV picks which: with the mask, one kernel writing both would bind nine storage
// buffers, one over WebGPU's default limit). One key row and kv head per invocation, summing
// over the query heads of its group and the queries that see the key: from the key itself
// while a query's first key is at or before it (`first` never decreases along a row: packed
// examples and question groups both hold to it), with the branch and window rules of
// attention_forward_masked.wgsl.
//   dk_j = scale * sum p_ij (dp_ij - delta_i) q_i        (DV false)
//   dv_j = sum p_ij d_out_i                              (DV true)
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 d_out   storage, read        f32[tokens, heads, head_dim]
//   4 lse     storage, read        f32[tokens, heads]
//   5 delta   storage, read        f32[tokens, heads]
//   6 mask    storage, read        f32[tokens, 4]: (first, branch, position, 0)
//   7 grad    storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   8 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// Dispatch: linear, ceil(tokens * kv_heads / 64) workgroups of 64, one (key, kv head) each.
// attention_params.wgsl and attention_common.wgsl are appended (Params, HEAD_DIM, q, k, v).

/// Which gradient: the values' (true) or the keys' (false).
override DV: bool = false;

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_backward_dkv_masked(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid; // j * kv_heads + kv
    if row >= params.tokens * params.kv_heads {
        return;
    }
    let j = row / params.kv_heads;
    let kv = row % params.kv_heads;
    let group = params.heads / params.kv_heads;
    let key_branch = mask[j].y;
    let key_position = mask[j].z;
    let window = f32(params.window);
    let kv_base = row * D4;

    var acc: array<vec4<f32>, MAX_D4>;
    for (var i = j; i < params.tokens && u32(mask[i].x) <= j; i++) {
        let m = mask[i];
        if (key_branch != 0.0 && key_branch != m.y) || m.z - key_position >= window {
            continue;
        }
        for (var h = kv * group; h < (kv + 1u) * group; h++) {
            let q_row = i * params.heads + h;
            let q_base = q_row * D4;
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < D4; d++) {
                s += dot(q[q_base + d], k[kv_base + d]);
                dp += dot(d_out[q_base + d], v[kv_base + d]);
            }
            let p = exp(s * params.scale - lse[q_row]);
            let ds = p * (dp - delta[q_row]) * params.scale;
            for (var d = 0u; d < D4; d++) {
                acc[d] += select(ds * q[q_base + d], p * d_out[q_base + d], DV);
            }
        }
    }
    for (var d = 0u; d < D4; d++) {
        grad[kv_base + d] = acc[d];
    }
}
