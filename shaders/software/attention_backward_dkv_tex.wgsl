// attention_backward_dkv.wgsl for software devices: the same computation and dispatch, with
// the queries, output gradients, lse and delta (read once per query by every key row)
// fetched from textures (see attention_forward_tex.wgsl); the key and value rows are read
// from their buffers once.
//
// Bindings (group 0):
//   0 k          storage, read        f32[tokens, kv_heads, head_dim]
//   1 v          storage, read        f32[tokens, kv_heads, head_dim]
//   2 dk         storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   3 dv         storage, read_write  f32[tokens, kv_heads, head_dim]   every element written
//   4 params     uniform              { tokens, seq_len, heads, kv_heads, head_dim, scale, window }
//   5 q_tex      texture, read-only   rgba32float [tokens * heads, head_dim / 4]
//   6 d_out_tex  texture, read-only   rgba32float [tokens * heads, head_dim / 4]
//   7 lse_tex    texture, read-only   rgba32float [tokens * heads, 1]: lse in .x
//   8 delta_tex  texture, read-only   rgba32float [tokens * heads, 1]: delta in .x
// Dispatch: linear, ceil(tokens * kv_heads / 64) workgroups of 64, one (key, kv head) each.

// HEAD_DIM, D4 and Params: attention_params.wgsl, appended.

@group(0) @binding(0) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> params: Params;
@group(0) @binding(5) var q_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var d_out_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var lse_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var delta_tex: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(64)
fn attention_backward_dkv_tex(
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
    var kr: array<vec4<f32>, MAX_D4>;
    var vr: array<vec4<f32>, MAX_D4>;
    for (var d = 0u; d < D4; d++) {
        kr[d] = k[kv_base + d];
        vr[d] = v[kv_base + d];
    }
    var acc_k: array<vec4<f32>, MAX_D4>;
    var acc_v: array<vec4<f32>, MAX_D4>;
    for (var h = kv * group; h < (kv + 1u) * group; h++) {
        for (var i = j; i < end; i++) {
            let q_row = i32(i * params.heads + h);
            var s = 0.0;
            var dp = 0.0;
            for (var d = 0u; d < D4; d++) {
                s += dot(textureLoad(q_tex, vec2<i32>(i32(d), q_row)), kr[d]);
                dp += dot(textureLoad(d_out_tex, vec2<i32>(i32(d), q_row)), vr[d]);
            }
            let p = exp(s * params.scale - textureLoad(lse_tex, vec2<i32>(0, q_row)).x);
            let ds = p * (dp - textureLoad(delta_tex, vec2<i32>(0, q_row)).x) * params.scale;
            for (var d = 0u; d < D4; d++) {
                acc_v[d] += p * textureLoad(d_out_tex, vec2<i32>(i32(d), q_row));
                acc_k[d] += ds * textureLoad(q_tex, vec2<i32>(i32(d), q_row));
            }
        }
    }
    for (var d = 0u; d < D4; d++) {
        dk[kv_base + d] = acc_k[d];
        dv[kv_base + d] = acc_v[d];
    }
}
