// Attention over packed rows with a mask given per token, forward: attention_forward.wgsl
// where each token names the first key it may see and its branch, instead of sequences of
// seq_len.
//   Query t attends key j iff first(t) <= j <= t and (branch(j) == 0 or branch(j) == branch(t))
// Packing examples into one row is branch 0 everywhere with first = the example's first
// token. A question with its choices is one group: the prompt has branch 0 and choice c
// branch c + 1, so each choice sees the prompt and itself and the prompt is computed once.
// Positions (RoPE) are the caller's: a choice continues from the prompt's end.
//   and, on sliding-window layers, only keys whose position is less than window before its own.
//   mask [tokens] vec4<f32>: (first, branch, position, 0) as exact small integers; f32 so that
//   software devices read it from a texture like K and V (attention_forward_masked_tex.wgsl).
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 k       storage, read        f32[tokens, kv_heads, head_dim]
//   2 v       storage, read        f32[tokens, kv_heads, head_dim]
//   3 mask    storage, read        f32[tokens, 4]
//   4 out     storage, read_write  f32[tokens, heads, head_dim]   every element written
//   5 lse     storage, read_write  f32[tokens, heads]             every element written
//   6 params  uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
// head_dim is a multiple of 4, at most 256.
// Dispatch: linear, ceil(tokens * heads / 64) workgroups of 64, one query row (t, h) each.
// attention_params.wgsl and attention_common.wgsl are appended (Params, HEAD_DIM, q, k, v, first_key).

@group(0) @binding(3) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_forward_masked(
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
    let first = u32(mask[t].x);
    let branch = mask[t].y;
    let position = mask[t].z;
    let window = f32(params.window);
    let q_base = row * D4;

    var acc: array<vec4<f32>, MAX_D4>;
    var m = -3.40282346e38;
    var l = 0.0;
    for (var j = first; j <= t; j++) {
        let key_branch = mask[j].y;
        if (key_branch != 0.0 && key_branch != branch) || position - mask[j].z >= window {
            continue;
        }
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
