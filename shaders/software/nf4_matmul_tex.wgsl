// NF4 dequant-matmuls for software devices (lavapipe, SwiftShader), all operands read from
// textures (why: see matmul_tex.wgsl). W is NF4 [out, in]; its code words and block scales
// are copied into textures as they lie in their buffers right before each use, and decoded in
// registers (never written out in f32).
//
//   nf4_forward_tex:  y[t, o]  = sum_i x[t, i] * W[o, i]   (Y = X W^T)
//   nf4_backward_tex: dx[t, i] = sum_o dy[t, o] * W[o, i]  (dX = dY W)
// With the ACCUMULATE constant the result is added to the output.
// Needs in % 32 == 0 and blocksize a multiple of 32 dividing in (a texel of codes lies in one
// block and every row of W starts a block); the op builder checks and otherwise uses
// nf4_matmul.wgsl.
//
// Bindings (group 0):
//   0 y           storage, read_write  f32 [T, out] (forward) or [T, in] (backward)
//   1 params      uniform              { rows (T), n_in, n_out, blocksize }
//   2 x_tex       texture, read-only   rgba32float: x [T, in/4] (forward) or dy [T, ceil(out/4)]
//                                      (backward), four consecutive values a texel, 0 past the end
//   3 w_tex       texture, read-only   rgba32uint, W's code words in order four to a texel
//                                      (row o's texel t, words 4t..4t+4 = the codes of inputs
//                                      32t..32t+32, is texel o·in/32 + t), in a linear layout
//                                      (ops::pack::Linear: texel l at (l % width, l / width),
//                                      width a power of two)
//   4 absmax_tex  texture, read-only   rgba32float, W's scales in order four to a texel (block b
//                                      of row o is value o·in/blocksize + b), linear layout
// Built followed by nf4_weights_tex.wgsl (the NF4 table, decode4, codes_at, scale_of).
// Dispatch, 8x8 invocations a workgroup:
//   forward:  grid (ceil(out / 128), ceil(T / 64), 1); an invocation owns rows
//             wg.y*64 + lid.y*8 + i (i < 8) and outputs wg.x*128 + lid.x + 8j (j < 16), in eight
//             mat4x4 (row i; column group g = outputs j = 4g..4g+4), like matmul_tex.wgsl.
//   backward: grid (ceil(in / 128), ceil(T / 64), 1); an invocation owns rows as above and the
//             sixteen inputs (wg.x*8 + lid.x)*16 .. +16 (half a texel of codes), in eight
//             mat4x4 (row i; column q = inputs 4q..4q+4).
// The NF4 table is looked up with a tree of selects on the code's bits, four codes at once:
// on llvmpipe this measured faster than indexing a private array or a lookup texture.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    blocksize: u32,
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var x_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var w_tex: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(4) var absmax_tex: texture_storage_2d<rgba32float, read>;

/// acc + x · M for the matrix whose column kk is element kk of four weight vectors (see
/// matmul_tex.wgsl: fused multiply-adds of whole vec4s).
fn fma4(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(x.w), w[3], fma(vec4<f32>(x.z), w[2], fma(vec4<f32>(x.y), w[1], fma(vec4<f32>(x.x), w[0], acc))));
}

fn store(index: u32, value: f32) {
    var v = value;
    if ACCUMULATE {
        v += y[index];
    }
    y[index] = v;
}

// --- forward --------------------------------------------------------------------------------

/// Four outputs' code texels at texel column t, and their scales.
struct Group {
    w: array<vec4<u32>, 4>,
    scale: vec4<f32>,
}

fn load_group(at: WeightAt, t: u32, cols: vec4<i32>, b: u32) -> Group {
    var g: Group;
    g.w[0] = codes_at(w_tex, at, t, cols.x);
    g.w[1] = codes_at(w_tex, at, t, cols.y);
    g.w[2] = codes_at(w_tex, at, t, cols.z);
    g.w[3] = codes_at(w_tex, at, t, cols.w);
    g.scale = vec4<f32>(scale_of(absmax_tex, at, b, cols.x), scale_of(absmax_tex, at, b, cols.y), scale_of(absmax_tex, at, b, cols.z), scale_of(absmax_tex, at, b, cols.w));
    return g;
}

/// Weights of word q (inputs 8q..8q+8 of the texel) for a group's four outputs, as two
/// matrices whose column kk holds input kk (lo: 0..4, hi: 4..8) of the four outputs.
fn group_lo(g: Group, q: u32) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(
        decode4(g.w[0][q], 0u, g.scale.x),
        decode4(g.w[1][q], 0u, g.scale.y),
        decode4(g.w[2][q], 0u, g.scale.z),
        decode4(g.w[3][q], 0u, g.scale.w),
    ));
}

fn group_hi(g: Group, q: u32) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(
        decode4(g.w[0][q], 16u, g.scale.x),
        decode4(g.w[1][q], 16u, g.scale.y),
        decode4(g.w[2][q], 16u, g.scale.z),
        decode4(g.w[3][q], 16u, g.scale.w),
    ));
}

fn row_update(acc: mat4x4<f32>, t: i32, row: i32, l0: mat4x4<f32>, h0: mat4x4<f32>, l1: mat4x4<f32>, h1: mat4x4<f32>, l2: mat4x4<f32>, h2: mat4x4<f32>, l3: mat4x4<f32>, h3: mat4x4<f32>) -> mat4x4<f32> {
    let xa = textureLoad(x_tex, vec2<i32>(t, row));
    let xb = textureLoad(x_tex, vec2<i32>(t + 1, row));
    return mat4x4<f32>(
        fma4(fma4(acc[0], xa, l0), xb, h0),
        fma4(fma4(acc[1], xa, l1), xb, h1),
        fma4(fma4(acc[2], xa, l2), xb, h2),
        fma4(fma4(acc[3], xa, l3), xb, h3),
    );
}

@compute @workgroup_size(8, 8)
fn nf4_forward_tex(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 64u + lid.y * 8u;
    let n0 = wg.x * 128u + lid.x;
    let last_m = i32(params.rows) - 1;
    let last_n = vec4<i32>(i32(params.n_out) - 1);
    let r = min(vec4<i32>(i32(m0)) + vec4<i32>(0, 1, 2, 3), vec4<i32>(last_m));
    let s = min(vec4<i32>(i32(m0)) + vec4<i32>(4, 5, 6, 7), vec4<i32>(last_m));
    let step = vec4<i32>(0, 8, 16, 24);
    let c0 = min(vec4<i32>(i32(n0)) + step, last_n);
    let c1 = min(vec4<i32>(i32(n0) + 32) + step, last_n);
    let c2 = min(vec4<i32>(i32(n0) + 64) + step, last_n);
    let c3 = min(vec4<i32>(i32(n0) + 96) + step, last_n);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    let at = weight_at(w_tex, absmax_tex, params.n_in, params.blocksize);
    let texels = params.n_in / 32u;
    for (var t = 0u; t < texels; t++) {
        let b = t * 32u / params.blocksize;
        let g0 = load_group(at, t, c0, b);
        let g1 = load_group(at, t, c1, b);
        let g2 = load_group(at, t, c2, b);
        let g3 = load_group(at, t, c3, b);
        for (var q = 0u; q < 4u; q++) {
            let l0 = group_lo(g0, q);
            let h0 = group_hi(g0, q);
            let l1 = group_lo(g1, q);
            let h1 = group_hi(g1, q);
            let l2 = group_lo(g2, q);
            let h2 = group_hi(g2, q);
            let l3 = group_lo(g3, q);
            let h3 = group_hi(g3, q);
            // x texels 8t + 2q and 8t + 2q + 1 hold inputs 32t + 8q .. + 8.
            let xt = i32(8u * t + 2u * q);
            acc0 = row_update(acc0, xt, r.x, l0, h0, l1, h1, l2, h2, l3, h3);
            acc1 = row_update(acc1, xt, r.y, l0, h0, l1, h1, l2, h2, l3, h3);
            acc2 = row_update(acc2, xt, r.z, l0, h0, l1, h1, l2, h2, l3, h3);
            acc3 = row_update(acc3, xt, r.w, l0, h0, l1, h1, l2, h2, l3, h3);
            acc4 = row_update(acc4, xt, s.x, l0, h0, l1, h1, l2, h2, l3, h3);
            acc5 = row_update(acc5, xt, s.y, l0, h0, l1, h1, l2, h2, l3, h3);
            acc6 = row_update(acc6, xt, s.z, l0, h0, l1, h1, l2, h2, l3, h3);
            acc7 = row_update(acc7, xt, s.w, l0, h0, l1, h1, l2, h2, l3, h3);
        }
    }
    store_forward_row(m0, n0, acc0);
    store_forward_row(m0 + 1u, n0, acc1);
    store_forward_row(m0 + 2u, n0, acc2);
    store_forward_row(m0 + 3u, n0, acc3);
    store_forward_row(m0 + 4u, n0, acc4);
    store_forward_row(m0 + 5u, n0, acc5);
    store_forward_row(m0 + 6u, n0, acc6);
    store_forward_row(m0 + 7u, n0, acc7);
}

/// Column 4g + j of the row's tile is output n0 + 32g + 8j.
fn store_forward_row(m: u32, n0: u32, acc: mat4x4<f32>) {
    if m >= params.rows {
        return;
    }
    for (var g = 0u; g < 4u; g++) {
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 32u * g + 8u * j;
            if n < params.n_out {
                store(m * params.n_out + n, acc[g][j]);
            }
        }
    }
}

// --- backward -------------------------------------------------------------------------------

/// acc (row i's sixteen inputs) + d * (the sixteen decoded weights of one output).
fn back_update(acc: mat4x4<f32>, d: f32, w: mat4x4<f32>) -> mat4x4<f32> {
    let dv = vec4<f32>(d);
    return mat4x4<f32>(fma(dv, w[0], acc[0]), fma(dv, w[1], acc[1]), fma(dv, w[2], acc[2]), fma(dv, w[3], acc[3]));
}

/// Output o's sixteen weights for this invocation's inputs: words 2h and 2h + 1 of its texel.
fn back_weights(at: WeightAt, t: i32, h: u32, b: u32, o: i32) -> mat4x4<f32> {
    let words = codes_at(w_tex, at, u32(t), o);
    let scale = scale_of(absmax_tex, at, b, o);
    let w0 = select(words.x, words.z, h == 1u);
    let w1 = select(words.y, words.w, h == 1u);
    return mat4x4<f32>(decode4(w0, 0u, scale), decode4(w0, 16u, scale), decode4(w1, 0u, scale), decode4(w1, 16u, scale));
}

fn dy_at(t: i32, row: i32) -> vec4<f32> {
    return textureLoad(x_tex, vec2<i32>(t, row));
}

@compute @workgroup_size(8, 8)
fn nf4_backward_tex(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 64u + lid.y * 8u;
    let i0 = (wg.x * 8u + lid.x) * 16u; // first of this invocation's sixteen inputs
    let last_m = i32(params.rows) - 1;
    let r = min(vec4<i32>(i32(m0)) + vec4<i32>(0, 1, 2, 3), vec4<i32>(last_m));
    let s = min(vec4<i32>(i32(m0)) + vec4<i32>(4, 5, 6, 7), vec4<i32>(last_m));
    // Past the last input: compute on the last texel, store nothing.
    let t = i32(min(i0, params.n_in - 1u) / 32u);
    let h = (min(i0, params.n_in - 1u) / 16u) % 2u;
    let b = u32(t) * 32u / params.blocksize;
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    let at = weight_at(w_tex, absmax_tex, params.n_in, params.blocksize);
    let last_o = i32(params.n_out) - 1;
    for (var o0 = 0; o0 <= last_o; o0 += 4) {
        // dy texel o0 / 4 holds outputs o0..o0+4 of each row (0 past the last output).
        let d0 = dy_at(o0 / 4, r.x);
        let d1 = dy_at(o0 / 4, r.y);
        let d2 = dy_at(o0 / 4, r.z);
        let d3 = dy_at(o0 / 4, r.w);
        let d4 = dy_at(o0 / 4, s.x);
        let d5 = dy_at(o0 / 4, s.y);
        let d6 = dy_at(o0 / 4, s.z);
        let d7 = dy_at(o0 / 4, s.w);
        for (var oo = 0; oo < 4; oo++) {
            let w = back_weights(at, t, h, b, min(o0 + oo, last_o));
            acc0 = back_update(acc0, d0[oo], w);
            acc1 = back_update(acc1, d1[oo], w);
            acc2 = back_update(acc2, d2[oo], w);
            acc3 = back_update(acc3, d3[oo], w);
            acc4 = back_update(acc4, d4[oo], w);
            acc5 = back_update(acc5, d5[oo], w);
            acc6 = back_update(acc6, d6[oo], w);
            acc7 = back_update(acc7, d7[oo], w);
        }
    }
    store_backward_row(m0, i0, acc0);
    store_backward_row(m0 + 1u, i0, acc1);
    store_backward_row(m0 + 2u, i0, acc2);
    store_backward_row(m0 + 3u, i0, acc3);
    store_backward_row(m0 + 4u, i0, acc4);
    store_backward_row(m0 + 5u, i0, acc5);
    store_backward_row(m0 + 6u, i0, acc6);
    store_backward_row(m0 + 7u, i0, acc7);
}

/// Column q, element j of the row's tile is input i0 + 4q + j.
fn store_backward_row(m: u32, i0: u32, acc: mat4x4<f32>) {
    if m >= params.rows {
        return;
    }
    for (var q = 0u; q < 4u; q++) {
        for (var j = 0u; j < 4u; j++) {
            let i = i0 + 4u * q + j;
            if i < params.n_in {
                store(m * params.n_in + i, acc[q][j]);
            }
        }
    }
}
