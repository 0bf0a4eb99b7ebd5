// attention_forward.wgsl for software devices: the same computation and dispatch, with the
// keys and values (read once per key by every query row) fetched from textures, where
// llvmpipe gathers without a branch per lane (see matmul_tex.wgsl); the query row is read
// from its buffer once.
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 out     storage, read_write  f32[tokens, heads, head_dim]   every element written
//   2 lse     storage, read_write  f32[tokens, heads]             every element written
//   3 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
//   4 k_tex   texture, read-only   rgba32float [tokens * kv_heads, head_dim / 4]
//   5 v_tex   texture, read-only   rgba32float [tokens * kv_heads, head_dim / 4]
// Dispatch: linear, ceil(tokens * heads / 64) workgroups of 64, one query row (t, h) each.

// HEAD_DIM, D4 and Params: attention_params.wgsl, appended.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var k_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var v_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(64)
fn attention_forward_tex(
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
    let first = max(t - t % params.seq_len, select(0u, t + 1u - params.window, t >= params.window));
    let q_base = row * D4;

    var qv: array<vec4<f32>, MAX_D4>;
    for (var d = 0u; d < D4; d++) {
        qv[d] = q[q_base + d];
    }
    var acc: array<vec4<f32>, MAX_D4>;
    var m = -3.40282346e38;
    var l = 0.0;
    for (var j = first; j <= t; j++) {
        let kv_row = i32(j * params.kv_heads + kv);
        var score = 0.0;
        for (var d = 0u; d < D4; d++) {
            score += dot(qv[d], textureLoad(k_tex, vec2<i32>(i32(d), kv_row)));
        }
        let s = score * params.scale;
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * correction + p;
        for (var d = 0u; d < D4; d++) {
            acc[d] = acc[d] * correction + p * textureLoad(v_tex, vec2<i32>(i32(d), kv_row));
        }
        m = m_new;
    }
    for (var d = 0u; d < D4; d++) {
        out[q_base + d] = acc[d] / l;
    }
    lse[row] = m + log(l);
}
