// Attention backward over packed rows with a per-token mask, the value gradient: the queries
// attention_backward_dk_masked.wgsl visits, with
//   dv_j = sum p_ij d_out_i
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 d_out   storage, read        f32[tokens, heads, head_dim]
//   3 lse     storage, read        f32[tokens, heads]
//   4 mask    storage, read        f32[tokens, 4]: (first, branch, position, 0)
//   5 dv      storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   6 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// Dispatch: linear, ceil(tokens * kv_heads / 64) workgroups of 64, one (key, kv head) each.
// attention_params.wgsl is appended (Params, HEAD_DIM); no v is bound.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_backward_dv_masked(
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

    var acc_v: array<vec4<f32>, MAX_D4>;
    for (var i = j; i < params.tokens && u32(mask[i].x) <= j; i++) {
        let m = mask[i];
        if (key_branch != 0.0 && key_branch != m.y) || m.z - key_position >= window {
            continue;
        }
        for (var h = kv * group; h < (kv + 1u) * group; h++) {
            let q_row = i * params.heads + h;
            let q_base = q_row * D4;
            var s = 0.0;
            for (var d = 0u; d < D4; d++) {
                s += dot(q[q_base + d], k[kv_base + d]);
            }
            let p = exp(s * params.scale - lse[q_row]);
            for (var d = 0u; d < D4; d++) {
                acc_v[d] += p * d_out[q_base + d];
            }
        }
    }
    for (var d = 0u; d < D4; d++) {
        dv[kv_base + d] = acc_v[d];
    }
}
