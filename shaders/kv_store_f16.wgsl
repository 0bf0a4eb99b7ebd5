// KV cache write for decoding one token into a half-precision cache: cache[pos, :] =
// f16(src[:]). The f32 version (kv_store.wgsl) explains the position buffer; this one halves
// the cache's memory and the bytes attention_decode_f16 reads per token, on devices with
// `shader-f16`.
//
// Bindings (group 0):
//   0 src      storage, read        f32[kv_dim]
//   1 step     storage, read        u32[1]                     pos
//   2 cache    storage, read_write  f16[max_ctx, kv_dim]       row pos written
//   3 params   uniform              { kv_dim, max_ctx }
// Dispatch: linear, ceil(kv_dim / 64) workgroups of 64, one element each.

enable f16;

struct Params {
    kv_dim: u32,
    max_ctx: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f16>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn kv_store_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let pos = step[0];
    if i >= params.kv_dim || pos >= params.max_ctx {
        return;
    }
    cache[pos * params.kv_dim + i] = f16(src[i]);
}
