// NF4 dequant-matmuls. W is NF4 [out, in] in the GPU layout: codes of the flattened weight
// eight a u32 word, element 8w + j in bits 4j..4j+4; w_absmax[b] scales block b of `blocksize`
// flattened elements (reconstructed from bitsandbytes' double quantization on the CPU).
// W is decoded in registers and never written to memory in f32.
//
//   nf4_matmul_forward:  y[t, o]  = sum_i x[t, i] * W[o, i]          (Y = X W^T)
//   nf4_matmul_backward: dx[t, i] = sum_o dy[t, o] * W[o, i]         (dX = dY W)
//   nf4_matvec:          y[o]     = sum_i x[i] * W[o, i]             (decode, one token)
// With the ACCUMULATE constant the result is added to the output instead of replacing it.
//
// Bindings (group 0), in every entry point:
//   0 x         storage, read        f32 [T, in]     (dy [T, out] for the backward)
//   1 w         storage, read        u32 [ceil(out * in / 8)]  NF4 codes
//   2 w_absmax  storage, read        f32 [ceil(out * in / blocksize)]
//   3 y         storage, read_write  f32 [T, out]    (dx [T, in] for the backward)
//   4 params    uniform              { rows (T), n_in, n_out, blocksize }
// Dispatch:
//   forward:  grid (ceil(out / 64), ceil(T / 32), 1) of 8x8; an invocation owns rows
//             wg.y*32 + lid.y + 8i (i < 4) and outputs wg.x*64 + lid.x + 8j (j < 8): a 4x8
//             tile in two mat4x4 registers, as in matmul.wgsl.
//   backward: grid (ceil(in / 64), ceil(T / 32), 1) of 8x8; an invocation owns rows as above
//             and eight consecutive inputs from (wg.x*8 + lid.x) * 8 (one code word when in is
//             a multiple of 8), so neighbouring invocations read neighbouring words.
//   matvec:   linear, ceil(out / 64) workgroups of 64, one output each.
// When n_in is a multiple of 8 every row starts on a word and whole words are decoded at
// once; otherwise each element is decoded on its own.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    blocksize: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> w_absmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<private> NF4: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
);

/// W at flattened index `idx`, decoded alone.
fn weight_at(idx: u32) -> f32 {
    let code = (w[idx / 8u] >> (4u * (idx % 8u))) & 15u;
    return NF4[code] * w_absmax[idx / params.blocksize];
}

/// Element `kk` of four code words, decoded (before scaling).
fn decode4(words: vec4<u32>, kk: u32) -> vec4<f32> {
    let codes = (words >> vec4<u32>(4u * kk)) & vec4<u32>(15u);
    return vec4<f32>(NF4[codes.x], NF4[codes.y], NF4[codes.z], NF4[codes.w]);
}

/// Eight decoded weights of one code word: elements 0..4 and 4..8.
fn decode8(word: u32, scale: f32) -> array<vec4<f32>, 2> {
    var lo: vec4<f32>;
    var hi: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        lo[j] = NF4[(word >> (4u * j)) & 15u];
        hi[j] = NF4[(word >> (4u * j + 16u)) & 15u];
    }
    return array<vec4<f32>, 2>(lo * scale, hi * scale);
}

/// acc + u vᵀ (column j of the matrix gains u * v[j]) with fused multiply-adds.
fn fma_outer(acc: mat4x4<f32>, u: vec4<f32>, v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma(u, vec4<f32>(v.x), acc[0]),
        fma(u, vec4<f32>(v.y), acc[1]),
        fma(u, vec4<f32>(v.z), acc[2]),
        fma(u, vec4<f32>(v.w), acc[3]),
    );
}

fn store(index: u32, value: f32) {
    var v = value;
    if ACCUMULATE {
        v += y[index];
    }
    y[index] = v;
}

@compute @workgroup_size(8, 8)
fn nf4_matmul_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 32u + lid.y;
    let n0 = wg.x * 64u + lid.x;
    let n_in = params.n_in;
    let step = vec4<u32>(0u, 8u, 16u, 24u);
    // Clamped like matmul.wgsl: out-of-range rows and outputs are computed, never stored.
    let x_rows = min(vec4<u32>(m0) + step, vec4<u32>(params.rows - 1u)) * n_in;
    let w_lo = min(vec4<u32>(n0) + step, vec4<u32>(params.n_out - 1u)) * n_in;
    let w_hi = min(vec4<u32>(n0 + 32u) + step, vec4<u32>(params.n_out - 1u)) * n_in;
    var acc_l = mat4x4<f32>();
    var acc_h = mat4x4<f32>();
    if n_in % 8u == 0u {
        // Every row starts on a word: one word of each of the 8 outputs covers 8 inputs.
        let bs = params.blocksize;
        for (var k0 = 0u; k0 < n_in; k0 += 8u) {
            let i_lo = w_lo + vec4<u32>(k0);
            let i_hi = w_hi + vec4<u32>(k0);
            let word_lo = vec4<u32>(w[i_lo.x / 8u], w[i_lo.y / 8u], w[i_lo.z / 8u], w[i_lo.w / 8u]);
            let word_hi = vec4<u32>(w[i_hi.x / 8u], w[i_hi.y / 8u], w[i_hi.z / 8u], w[i_hi.w / 8u]);
            let scale_lo = vec4<f32>(w_absmax[i_lo.x / bs], w_absmax[i_lo.y / bs], w_absmax[i_lo.z / bs], w_absmax[i_lo.w / bs]);
            let scale_hi = vec4<f32>(w_absmax[i_hi.x / bs], w_absmax[i_hi.y / bs], w_absmax[i_hi.z / bs], w_absmax[i_hi.w / bs]);
            for (var kk = 0u; kk < 8u; kk++) {
                let k = k0 + kk;
                let xv = vec4<f32>(x[x_rows.x + k], x[x_rows.y + k], x[x_rows.z + k], x[x_rows.w + k]);
                acc_l = fma_outer(acc_l, xv, decode4(word_lo, kk) * scale_lo);
                acc_h = fma_outer(acc_h, xv, decode4(word_hi, kk) * scale_hi);
            }
        }
    } else {
        for (var k = 0u; k < n_in; k++) {
            let xv = vec4<f32>(x[x_rows.x + k], x[x_rows.y + k], x[x_rows.z + k], x[x_rows.w + k]);
            let i_lo = w_lo + vec4<u32>(k);
            let i_hi = w_hi + vec4<u32>(k);
            let wv_lo = vec4<f32>(weight_at(i_lo.x), weight_at(i_lo.y), weight_at(i_lo.z), weight_at(i_lo.w));
            let wv_hi = vec4<f32>(weight_at(i_hi.x), weight_at(i_hi.y), weight_at(i_hi.z), weight_at(i_hi.w));
            acc_l = fma_outer(acc_l, xv, wv_lo);
            acc_h = fma_outer(acc_h, xv, wv_hi);
        }
    }
    for (var j = 0u; j < 4u; j++) {
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + 8u * i;
            if m < params.rows {
                let n_lo = n0 + 8u * j;
                let n_hi = n0 + 32u + 8u * j;
                if n_lo < params.n_out {
                    store(m * params.n_out + n_lo, acc_l[j][i]);
                }
                if n_hi < params.n_out {
                    store(m * params.n_out + n_hi, acc_h[j][i]);
                }
            }
        }
    }
}

@compute @workgroup_size(8, 8)
fn nf4_matmul_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 32u + lid.y;
    let k0 = (wg.x * 8u + lid.x) * 8u; // first of this invocation's eight inputs
    let n_in = params.n_in;
    let n_out = params.n_out;
    let step = vec4<u32>(0u, 8u, 16u, 24u);
    let dy_rows = min(vec4<u32>(m0) + step, vec4<u32>(params.rows - 1u)) * n_out;
    // acc_l: inputs k0..k0+4, acc_h: k0+4..k0+8; row i of a matrix is output row i.
    var acc_l = mat4x4<f32>();
    var acc_h = mat4x4<f32>();
    if k0 < n_in {
        if n_in % 8u == 0u {
            for (var n = 0u; n < n_out; n++) {
                let idx = n * n_in + k0;
                let wv = decode8(w[idx / 8u], w_absmax[idx / params.blocksize]);
                let dyv = vec4<f32>(x[dy_rows.x + n], x[dy_rows.y + n], x[dy_rows.z + n], x[dy_rows.w + n]);
                acc_l = fma_outer(acc_l, dyv, wv[0]);
                acc_h = fma_outer(acc_h, dyv, wv[1]);
            }
        } else {
            let last = vec4<u32>(n_in - 1u);
            let k_lo = min(vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u), last);
            let k_hi = min(vec4<u32>(k0 + 4u) + vec4<u32>(0u, 1u, 2u, 3u), last);
            for (var n = 0u; n < n_out; n++) {
                let row = vec4<u32>(n * n_in);
                let i_lo = row + k_lo;
                let i_hi = row + k_hi;
                let wv_lo = vec4<f32>(weight_at(i_lo.x), weight_at(i_lo.y), weight_at(i_lo.z), weight_at(i_lo.w));
                let wv_hi = vec4<f32>(weight_at(i_hi.x), weight_at(i_hi.y), weight_at(i_hi.z), weight_at(i_hi.w));
                let dyv = vec4<f32>(x[dy_rows.x + n], x[dy_rows.y + n], x[dy_rows.z + n], x[dy_rows.w + n]);
                acc_l = fma_outer(acc_l, dyv, wv_lo);
                acc_h = fma_outer(acc_h, dyv, wv_hi);
            }
        }
    }
    for (var j = 0u; j < 4u; j++) {
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + 8u * i;
            if m < params.rows {
                if k0 + j < n_in {
                    store(m * n_in + k0 + j, acc_l[j][i]);
                }
                if k0 + 4u + j < n_in {
                    store(m * n_in + k0 + 4u + j, acc_h[j][i]);
                }
            }
        }
    }
}

@compute @workgroup_size(64)
fn nf4_matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = (wg.x + wg.y * nwg.x) * 64u + lid;
    if n >= params.n_out {
        return;
    }
    let n_in = params.n_in;
    let row = n * n_in;
    var acc = 0.0;
    if n_in % 8u == 0u {
        for (var k0 = 0u; k0 < n_in; k0 += 8u) {
            let word = w[(row + k0) / 8u];
            let scale = w_absmax[(row + k0) / params.blocksize];
            var part = 0.0;
            for (var kk = 0u; kk < 8u; kk++) {
                part = fma(x[k0 + kk], NF4[(word >> (4u * kk)) & 15u], part);
            }
            acc = fma(part, scale, acc);
        }
    } else {
        for (var k = 0u; k < n_in; k++) {
            acc = fma(x[k], weight_at(row + k), acc);
        }
    }
    store(n, acc);
}

// nf4_matvec_rows: nf4_matvec for GPUs (the portable path): a workgroup of 256 takes four
// outputs, 64 invocations each; invocation l of an output reads code words l, l + 64, ... of
// its row (neighbouring invocations, neighbouring words), and the row's 64 partial sums are
// added pairwise in workgroup memory. Rows of n_in a multiple of 8 only (whole words); other
// shapes take nf4_matvec.
// Dispatch: linear, ceil(out / 4) workgroups of 256 (folded into (x, y) past the limit).

var<workgroup> row_sums: array<f32, 256>;

@compute @workgroup_size(256)
fn nf4_matvec_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = (wg.x + wg.y * nwg.x) * 4u + lid / 64u;
    let lane = lid % 64u;
    let n_in = params.n_in;
    var acc = 0.0;
    if n < params.n_out {
        let words = n_in / 8u;
        let row_word = n * words;
        for (var q = lane; q < words; q += 64u) {
            let word = w[row_word + q];
            let scale = w_absmax[(row_word + q) * 8u / params.blocksize];
            let k0 = q * 8u;
            var part = 0.0;
            for (var kk = 0u; kk < 8u; kk++) {
                part = fma(x[k0 + kk], NF4[(word >> (4u * kk)) & 15u], part);
            }
            acc = fma(part, scale, acc);
        }
    }
    row_sums[lid] = acc;
    for (var half = 32u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if lane < half {
            row_sums[lid] += row_sums[lid + half];
        }
    }
    if lane == 0u && n < params.n_out {
        store(n, row_sums[lid]);
    }
}
