// Dropout with a counter-based mask: element i is kept when hash(seed, salt, i) falls at or
// above p, and kept elements are scaled by 1 / (1 - p). The mask is a function of
// (seed[0], salt, i) alone, so the backward (the same masking of the gradient) and a
// recomputed forward (gradient checkpointing) see the same mask without storing it.
//   out[i] = (ACCUMULATE ? out[i] : 0) + (keep(i) ? x[i] * scale : 0)
// The hash: h = i * 0x9E3779B1 ^ salt * 0x85EBCA77 ^ seed * 0xC2B2AE3D, then murmur3's
// 32-bit finalizer; keep(i) = (h >> 8) / 2^24 >= p.
//
// Bindings (group 0):
//   0 x       storage, read        f32[n]
//   1 seed    storage, read        u32[1]     the step's seed, written by the host
//   2 out     storage, read_write  f32[n]     every element written
//   3 params  uniform              { n, p, scale, salt }
// Dispatch: linear, ceil(n / 64) workgroups of 64, one element each; counts over the
// per-dimension limit are folded into (x, y).

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    n: u32,
    p: f32,
    scale: f32,
    salt: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> seed: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn keep(i: u32) -> bool {
    var h = (i * 0x9E3779B1u) ^ (params.salt * 0x85EBCA77u) ^ (seed[0] * 0xC2B2AE3Du);
    h ^= h >> 16u;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13u;
    h *= 0xC2B2AE35u;
    h ^= h >> 16u;
    return f32(h >> 8u) * (1.0 / 16777216.0) >= params.p;
}

@compute @workgroup_size(64)
fn dropout(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wg.x + wg.y * nwg.x) * 64u + lid;
    if i >= params.n {
        return;
    }
    var v = select(0.0, x[i] * params.scale, keep(i));
    if ACCUMULATE {
        v += out[i];
    }
    out[i] = v;
}
