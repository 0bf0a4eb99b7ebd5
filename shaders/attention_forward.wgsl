// Causal attention with grouped-query heads, forward, flash style: probabilities are never
// stored; each query row keeps a running max and sum (online softmax) and the row's
// log-sum-exp is saved for the backward pass.
//   Tokens are `batch` sequences of seq_len; token t = b * seq_len + i attends tokens
//   b * seq_len + j for j <= i, and i - j < window on sliding-window layers. Query head h
//   reads kv head h / (heads / kv_heads).
//   s_ij = scale * q_i · k_j;  out_i = sum_j softmax_j(s_ij) v_j;  lse_i = log sum_j exp(s_ij)
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 out     storage, read_write  f32[tokens, heads, head_dim]   every element written
//   4 lse     storage, read_write  f32[tokens, heads]             every element written
//   5 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
// head_dim is a multiple of 4, at most 256.
// Dispatch: linear, ceil(tokens * heads / 64) workgroups of 64, one query row (t, h) each.
// attention_params.wgsl and attention_common.wgsl are appended (Params, HEAD_DIM, q, k, v, first_key).

@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wg.x + wg.y * nwg.x) * 64u + lid; // t * heads + h
    if row >= params.tokens * params.heads {
        return;
    }
    let t = row / params.heads;
    let h = row % params.heads;
    let kv = h / (params.heads / params.kv_heads);
    let first = first_key(t, params); // the sequence's first token
    let q_base = row * D4;

    var acc: array<vec4<f32>, MAX_D4>;
    var m = -3.40282346e38;
    var l = 0.0;
    for (var j = first; j <= t; j++) {
        let kv_base = (j * params.kv_heads + kv) * D4;
        var score = 0.0;
        for (var d = 0u; d < D4; d++) {
            score += dot(q[q_base + d], k[kv_base + d]);
        }
        let s = score * params.scale;
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * correction + p;
        for (var d = 0u; d < D4; d++) {
            acc[d] = acc[d] * correction + p * v[kv_base + d];
        }
        m = m_new;
    }
    for (var d = 0u; d < D4; d++) {
        out[q_base + d] = acc[d] / l;
    }
    lse[row] = m + log(l);
}
