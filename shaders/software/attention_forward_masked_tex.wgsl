// attention_forward_masked.wgsl for software devices (see attention_forward_tex.wgsl): keys,
// values and the per-token mask fetched from textures. Query t attends key j iff
// first(t) <= j <= t and (branch(j) == 0 or branch(j) == branch(t)).
//
// Bindings (group 0):
//   0 q         storage, read        f32[tokens, heads, head_dim]
//   1 out       storage, read_write  f32[tokens, heads, head_dim]   every element written
//   2 lse       storage, read_write  f32[tokens, heads]             every element written
//   3 params    uniform              { tokens, seq_len (unused), heads, kv_heads, head_dim, scale, window }
//   4 k_tex     texture, read-only   rgba32float [tokens * kv_heads, head_dim / 4]
//   5 v_tex     texture, read-only   rgba32float [tokens * kv_heads, head_dim / 4]
//   6 mask_tex  texture, read-only   rgba32float [tokens, 1]: (first, branch, 0, 0)
// Dispatch: linear, ceil(tokens * heads / 64) workgroups of 64, one query row (t, h) each.

// HEAD_DIM, D4 and Params: attention_params.wgsl, appended.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var k_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var v_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var mask_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(64)
fn attention_forward_masked_tex(
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
    let own = textureLoad(mask_tex, vec2<i32>(0, i32(t)));
    let first = u32(own.x);
    let branch = own.y;
    let window = f32(params.window);
    let q_base = row * D4;

    var qv: array<vec4<f32>, MAX_D4>;
    for (var d = 0u; d < D4; d++) {
        qv[d] = q[q_base + d];
    }
    var acc: array<vec4<f32>, MAX_D4>;
    var m = -3.40282346e38;
    var l = 0.0;
    for (var j = first; j <= t; j++) {
        let key = textureLoad(mask_tex, vec2<i32>(0, i32(j)));
        if (key.y != 0.0 && key.y != branch) || own.z - key.z >= window {
            continue;
        }
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
