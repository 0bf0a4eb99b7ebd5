// Rotary position embedding (rope.wgsl's rotate-half layout and table) four pairs an
// invocation, for head dims that are multiples of 8 (rope.wgsl takes any even one; the same
// arithmetic). One vec4 storage access instead of four scalar ones: llvmpipe
// runs each lane's storage access as its own load. For token t, head h, pairs i..i+4 of
// half = head_dim / 2, with p = pos_offset + t % seq_len:
//   forward: y[i] = x[i] cos - x[i + half] sin,  y[i + half] = x[i + half] cos + x[i] sin
//   inverse: the rotation by the opposite angle (the backward).
//
// A rotary width under the head dim rotates pairs (i, i + rotary / 2) and copies the rest
// (rope.wgsl); it is a multiple of 8 here too.
//
// Bindings (group 0):
//   0 x        storage, read        vec4<f32>[tokens, heads, head_dim / 4]
//   1 cos_sin  storage, read        vec4<f32>[positions, rotary / 4]: (cos, sin) of pairs i, i + 1
//   2 y        storage, read_write  vec4<f32>[tokens, heads, head_dim / 4]  every element written
//   3 params   uniform              { tokens, heads, head_dim, seq_len, pos_offset, inverse,
//                                     rotary }
// Dispatch: linear, ceil(tokens * heads * half / 4 / 64) workgroups of 64, four pairs each.

struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    seq_len: u32,
    pos_offset: u32,
    inverse: u32,
    rotary: u32,
}

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> cos_sin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rope_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let quads = params.head_dim / 8u; // groups of four pairs per head
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if id >= params.tokens * params.heads * quads {
        return;
    }
    let q = id % quads;
    let head_row = id / quads; // token * heads + head
    let rq = params.rotary / 8u;
    if q >= rq {
        // Past the rotary part: two texels copied.
        let j = head_row * 2u * quads + 2u * q;
        y[j] = x[j];
        y[j + 1u] = x[j + 1u];
        return;
    }
    let t = head_row / params.heads;
    let p = params.pos_offset + t % params.seq_len;
    // Pairs 4q..4q+4 of position p: two texels of (cos, sin) pairs.
    let cs01 = cos_sin[p * 2u * rq + 2u * q];
    let cs23 = cos_sin[p * 2u * rq + 2u * q + 1u];
    let c = vec4<f32>(cs01.x, cs01.z, cs23.x, cs23.z);
    var s = vec4<f32>(cs01.y, cs01.w, cs23.y, cs23.w);
    if params.inverse != 0u {
        s = -s;
    }
    let lo = head_row * 2u * quads + q;
    let hi = lo + rq;
    let x_lo = x[lo];
    let x_hi = x[hi];
    y[lo] = x_lo * c - x_hi * s;
    y[hi] = x_hi * c + x_lo * s;
}
