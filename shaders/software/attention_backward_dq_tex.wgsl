// attention_backward_dq.wgsl for software devices: the same computation and dispatch, with the
// keys and values (read once per key by every query row) fetched from textures (see
// attention_forward_tex.wgsl); the query row, its output gradient, lse and delta are read
// from their buffers once.
//
// Bindings (group 0):
//   0 q       storage, read        f32[tokens, heads, head_dim]
//   1 d_out   storage, read        f32[tokens, heads, head_dim]
//   2 lse     storage, read        f32[tokens, heads]
//   3 delta   storage, read        f32[tokens, heads]
//   4 dq      storage, read_write  f32[tokens, heads, head_dim]   every element written
//   5 params  uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
//   6 k_tex   texture, read-only   rgba32float [tokens * kv_heads, head_dim / 4]
//   7 v_tex   texture, read-only   rgba32float [tokens * kv_heads, head_dim / 4]
// Dispatch: linear, ceil(tokens * heads / 64) workgroups of 64, one query row (t, h) each.

// HEAD_DIM, D4 and Params: attention_params.wgsl, appended.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> d_out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;
@group(0) @binding(6) var k_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var v_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(64)
fn attention_backward_dq_tex(
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
    let first = max(t - t % params.seq_len, select(0u, t + 1u - params.window, t >= params.window));
    let base = row * D4;
    let row_lse = lse[row];
    let row_delta = delta[row];
    var qv: array<vec4<f32>, MAX_D4>;
    var dov: array<vec4<f32>, MAX_D4>;
    for (var d = 0u; d < D4; d++) {
        qv[d] = q[base + d];
        dov[d] = d_out[base + d];
    }
    var acc: array<vec4<f32>, MAX_D4>;
    for (var j = first; j <= t; j++) {
        let kv_row = i32(j * params.kv_heads + kv);
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < D4; d++) {
            s += dot(qv[d], textureLoad(k_tex, vec2<i32>(i32(d), kv_row)));
            dp += dot(dov[d], textureLoad(v_tex, vec2<i32>(i32(d), kv_row)));
        }
        let p = exp(s * params.scale - row_lse);
        let ds = p * (dp - row_delta) * params.scale;
        for (var d = 0u; d < D4; d++) {
            acc[d] += ds * textureLoad(k_tex, vec2<i32>(i32(d), kv_row));
        }
    }
    for (var d = 0u; d < D4; d++) {
        dq[base + d] = acc[d];
    }
}
