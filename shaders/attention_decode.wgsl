// Attention of one new token over a KV cache (decoding), grouped-query heads:
//   out[h] = sum_{j <= pos} softmax_j(scale * q[h] · k_cache[j, kv(h)]) v_cache[j, kv(h)]
//   kv(h) = h / (heads / kv_heads)
// The position is read from `step[0]`, a buffer the host writes before each run, so one
// compiled graph serves every position; keys past max_ctx are never read. The cache holds C:
// f32 or f16 (the source is built after cache_f32.wgsl or cache_f16.wgsl), widened to f32 as
// it is read.
//
// Bindings (group 0):
//   0 q        storage, read        f32[heads, head_dim]
//   1 k_cache  storage, read        C[max_ctx, kv_heads, head_dim]
//   2 v_cache  storage, read        C[max_ctx, kv_heads, head_dim]
//   3 step     storage, read        u32[1]                     pos
//   4 out      storage, read_write  f32[heads, head_dim]       every element written
//   5 params   uniform              { heads, kv_heads, max_ctx, scale, window }
// Dispatch: linear, ceil(heads / 64) workgroups of 64, one query head each, online softmax
// as in attention_forward.wgsl. head_dim is the HEAD_DIM override (a multiple of 4, at most
// 256) so the loops over it unroll: llvmpipe ends an invocation's loops after 65,535
// iterations in total.

override HEAD_DIM: u32 = 64u;
override D4: u32 = HEAD_DIM / 4u;
const MAX_D4: u32 = 64u;

struct Params {
    heads: u32,
    kv_heads: u32,
    max_ctx: u32,
    scale: f32,
    /// Keys more than window - 1 positions back are not seen (sliding-window layers);
    /// 0xffffffff for none.
    window: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k_cache: array<vec4<C>>;
@group(0) @binding(2) var<storage, read> v_cache: array<vec4<C>>;
@group(0) @binding(3) var<storage, read> step: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn attention_decode(@builtin(global_invocation_id) gid: vec3<u32>) {
    let h = gid.x;
    if h >= params.heads {
        return;
    }
    let kv = h / (params.heads / params.kv_heads);
    let last = min(step[0], params.max_ctx - 1u);
    let q_base = h * D4;
    var acc: array<vec4<f32>, MAX_D4>;
    var m = -3.40282346e38;
    var l = 0.0;
    let first = select(0u, last + 1u - params.window, last >= params.window);
    for (var j = first; j <= last; j++) {
        let kv_base = (j * params.kv_heads + kv) * D4;
        var score = 0.0;
        for (var d = 0u; d < D4; d++) {
            score += dot(q[q_base + d], vec4<f32>(k_cache[kv_base + d]));
        }
        let s = score * params.scale;
        let m_new = max(m, s);
        let correction = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * correction + p;
        for (var d = 0u; d < D4; d++) {
            acc[d] = acc[d] * correction + p * vec4<f32>(v_cache[kv_base + d]);
        }
        m = m_new;
    }
    for (var d = 0u; d < D4; d++) {
        out[q_base + d] = acc[d] / l;
    }
}
