// Rotary position embedding of q and k in one dispatch (rope_vec4.wgsl's arithmetic, layout
// and table, four pairs an invocation; head dims of a multiple of 8). Invocations first cover
// q's [tokens, q_heads] rows, then k's [tokens, k_heads]:
//   forward: y[i] = x[i] cos - x[i + half] sin,  y[i + half] = x[i + half] cos + x[i] sin
//   inverse: the rotation by the opposite angle (the backward)
// with p = pos_offset + t % seq_len for token t. A rotary width under the head dim rotates
// pairs (i, i + rotary / 2) and copies the rest (rope.wgsl); a multiple of 8 here too.
//
// Bindings (group 0):
//   0 q        storage, read        vec4<f32>[tokens, q_heads, head_dim / 4]
//   1 k        storage, read        vec4<f32>[tokens, k_heads, head_dim / 4]
//   2 cos_sin  storage, read        vec4<f32>[positions, rotary / 4]
//   3 q_out    storage, read_write  like q, every element written
//   4 k_out    storage, read_write  like k, every element written
//   5 params   uniform              { tokens, q_heads, k_heads, head_dim, seq_len, pos_offset,
//                                     inverse, rotary }
// Dispatch: linear, ceil(tokens * (q_heads + k_heads) * head_dim / 8 / 64) workgroups of 64.

struct Params {
    tokens: u32,
    q_heads: u32,
    k_heads: u32,
    head_dim: u32,
    seq_len: u32,
    pos_offset: u32,
    inverse: u32,
    rotary: u32,
}

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> cos_sin: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> q_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> k_out: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rope_qk(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let quads = params.head_dim / 8u;
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    let q_items = params.tokens * params.q_heads * quads;
    let is_q = id < q_items;
    var local = id;
    var heads = params.q_heads;
    if !is_q {
        local = id - q_items;
        heads = params.k_heads;
    }
    if local >= params.tokens * heads * quads {
        return;
    }
    let quad = local % quads;
    let head_row = local / quads; // token * heads + head
    let rq = params.rotary / 8u;
    let lo = head_row * 2u * quads + quad;
    if quad >= rq {
        // Past the rotary part: two texels copied.
        let j = head_row * 2u * quads + 2u * quad;
        if is_q {
            q_out[j] = q[j];
            q_out[j + 1u] = q[j + 1u];
        } else {
            k_out[j] = k[j];
            k_out[j + 1u] = k[j + 1u];
        }
        return;
    }
    let t = head_row / heads;
    let p = params.pos_offset + t % params.seq_len;
    let cs01 = cos_sin[p * 2u * rq + 2u * quad];
    let cs23 = cos_sin[p * 2u * rq + 2u * quad + 1u];
    let c = vec4<f32>(cs01.x, cs01.z, cs23.x, cs23.z);
    var s = vec4<f32>(cs01.y, cs01.w, cs23.y, cs23.w);
    if params.inverse != 0u {
        s = -s;
    }
    let hi = lo + rq;
    if is_q {
        let x_lo = q[lo];
        let x_hi = q[hi];
        q_out[lo] = x_lo * c - x_hi * s;
        q_out[hi] = x_hi * c + x_lo * s;
    } else {
        let x_lo = k[lo];
        let x_hi = k[hi];
        k_out[lo] = x_lo * c - x_hi * s;
        k_out[hi] = x_hi * c + x_lo * s;
    }
}
