// KV cache write for decoding one token: cache[pos, :] = src[:] (src [kv_dim] is one token's
// K or V, after RoPE). The position is read from `step[0]`, a buffer the host writes before
// each run, so one compiled graph serves every position. A pos at or beyond max_ctx writes
// nothing (the host never runs past the cache). The cache holds C: f32 or f16 (the source is
// built after cache_f32.wgsl or cache_f16.wgsl).
//
// Bindings (group 0):
//   0 src      storage, read        f32[kv_dim]
//   1 step     storage, read        u32[1]                     pos
//   2 cache    storage, read_write  C[max_ctx, kv_dim]         row pos written
//   3 params   uniform              { kv_dim, max_ctx }
// Dispatch: linear, ceil(kv_dim / 64) workgroups of 64, one element each.

struct Params {
    kv_dim: u32,
    max_ctx: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> cache: array<C>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn kv_store(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let pos = step[0];
    if i >= params.kv_dim || pos >= params.max_ctx {
        return;
    }
    cache[pos * params.kv_dim + i] = C(src[i]);
}
