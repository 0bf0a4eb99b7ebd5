// Attention backward, step 3 of 3: key and value gradients, one key row and kv head per
// invocation, summing over the query heads of its group and the queries that see it
// (i >= j in the same sequence), probabilities recomputed as in attention_backward_dq.wgsl:
//   dv_j = sum p_ij d_out_i,   dk_j = scale * sum p_ij (dp_ij - delta_i) q_i
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
// Dispatch: linear, ceil(tokens * kv_heads / 64) workgroups of 64, one (key, kv head) each.
// attention_params.wgsl and attention_common.wgsl are appended (Params, HEAD_DIM, q, k, v, first_key).

@group(0) @binding(3) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_backward_dkv(
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
    // One past the last query that sees key j: the sequence's end or the window's.
    let end = min(j - j % params.seq_len + params.seq_len, j + min(params.window, params.seq_len));
    let kv_base = row * D4;

    var acc_k: array<vec4<f32>, MAX_D4>;
    var acc_v: array<vec4<f32>, MAX_D4>;
    for (var h = kv * group; h < (kv + 1u) * group; h++) {
        for (var i = j; i < end; i++) {
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
                acc_v[d] += p * d_out[q_base + d];
                acc_k[d] += ds * q[q_base + d];
            }
        }
    }
    for (var d = 0u; d < D4; d++) {
        dk[kv_base + d] = acc_k[d];
        dv[kv_base + d] = acc_v[d];
    }
}
