// Rotary position embedding in the Hugging Face rotate-half layout. For each token t, head h
// and pair i < half = head_dim / 2, with p = pos_offset + t % seq_len:
//   forward: y[i] = x[i] cos - x[i + half] sin,  y[i + half] = x[i + half] cos + x[i] sin
//   inverse: the rotation by the opposite angle, which is also the backward (a rotation is
//            orthogonal, so its transpose is its inverse).
// cos and sin come from a table the host computes once (in f64, stored f32), not from the
// GPU's trigonometry, whose accuracy for large angles varies between devices. With a rotary
// width under the head dim (partial_rotary_factor: Phi-4-mini) the pairs are (i, i + rotary/2)
// for i < rotary / 2, and the channels from rotary on are copied unchanged.
//
// Bindings (group 0):
//   0 x        storage, read        f32[tokens, heads, head_dim]
//   1 cos_sin  storage, read        f32[positions, rotary / 2, 2]    (cos, sin) pairs
//   2 y        storage, read_write  f32[tokens, heads, head_dim]  every element written
//   3 params   uniform              { tokens, heads, head_dim, seq_len, pos_offset, inverse,
//                                     rotary }
// Dispatch: linear, ceil(tokens * heads * half / 64) workgroups of 64, one pair each.

struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    seq_len: u32,
    pos_offset: u32,
    inverse: u32,
    rotary: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> cos_sin: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn rope(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let half = params.head_dim / 2u;
    let id = (wg.x + wg.y * nwg.x) * 64u + lid;
    if id >= params.tokens * params.heads * half {
        return;
    }
    let i = id % half;
    let head_row = id / half; // token * heads + head
    let base = head_row * params.head_dim;
    let r = params.rotary / 2u;
    if i >= r {
        // Past the rotary part: two channels copied.
        let j = base + params.rotary + 2u * (i - r);
        y[j] = x[j];
        y[j + 1u] = x[j + 1u];
        return;
    }
    let t = head_row / params.heads;
    let p = params.pos_offset + t % params.seq_len;
    let c = cos_sin[(p * r + i) * 2u];
    var s = cos_sin[(p * r + i) * 2u + 1u];
    if params.inverse != 0u {
        s = -s;
    }
    let lo = base + i;
    let hi = lo + r;
    let x_lo = x[lo];
    let x_hi = x[hi];
    y[lo] = x_lo * c - x_hi * s;
    y[hi] = x_hi * c + x_lo * s;
}
