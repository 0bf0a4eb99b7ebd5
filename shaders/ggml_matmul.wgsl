// Dequant-matmuls on a GGUF file's own block codes (`--base gguf`): the weight W [out, in]
// stays in its ggml type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and is
// decoded 32 values at a time into workgroup memory, once per tile.
//
//   ggml_matmul_forward:  y[t, o]  = sum_i x[t, i] * W[o, i]       (Y = X W^T)
//   ggml_matmul_backward: dx[t, i] = sum_o dy[t, o] * W[o, i]      (dX = dY W)
//   ggml_matvec:          y[o]     = sum_i x[i] * W[o, i]          (decode, one token)
// With the ACCUMULATE constant the result is added to the output instead of replacing it.
// A LoRA adapter's term rides along as r more columns of k, staged into the same tiles after
// the weight's (as nf4_gemm.wgsl does): forward y += s sum_j lora_lhs[t, j] factor[o, j]
// (s X_a Bᵀ, factor = B [out, r]), backward dx += s sum_j lora_lhs[t, j] factor[j, i]
// (s dY_b A, factor = A [r, in]); the matvec adds the forward's term row by row. With r = 0
// there is no term (lora_lhs and factor are bound to any tensor and not read).
//
// W's layout: row o is in / block_values blocks of the file's bytes, each block padded with
// zero bytes to a whole number of u32 words (block_words; the bytes are the file's, unchanged,
// little-endian within a word). Quantities named as in ggml's block structs; the value formulas
// are gguf-py's (src/quant/ggml.rs, the CPU reference, has them in the same order).
//
// Bindings (group 0), in every entry point:
//   0 x       storage, read        f32 [T, in]    (dy [T, out] for the backward)
//   1 w       storage, read        u32 [out, in / block_values * block_words]
//   2 lora_lhs storage, read       f32 [T, r]
//   3 factor  storage, read        f32 [out, r] forward, [r, in] backward
//   4 y       storage, read_write  f32 [T, out]   (dx [T, in] for the backward)
//   5 params  uniform              { rows (T), n_in, n_out, block_words,
//                                    block_values, r, scale }
// Override constant BLOCK_TYPE: the ggml type number, so each type's pipeline holds only its
// own decoder (the other cases fold away when the pipeline is created).
// Dispatch (workgroups of 64; an invocation owns 4 rows by 8 outputs of the tile, rows
// 4·(lid / 8) + i and outputs 4·(lid % 8) + j and 32 + 4·(lid % 8) + j):
//   forward:  grid (ceil(out / 64), ceil(T / 32), 1): a tile of 32 rows by 64 outputs; k in
//             steps of 32, each invocation decoding 32 values of one output's row.
//   backward: grid (ceil(in / 64), ceil(T / 32), 1): 32 rows by 64 inputs; outputs in steps of
//             32, each invocation decoding 32 inputs of one output.
//   matvec:   linear, ceil(out / 64) workgroups, one output an invocation.
// Every type's block holds a whole number of 32-value units, and GGUF rows whole blocks, so
// in is a multiple of 32.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    block_words: u32,
    block_values: u32,
    r: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> lora_lhs: array<f32>;
@group(0) @binding(3) var<storage, read> factor: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

override BLOCK_TYPE: u32;

// ggml's type numbers.
const Q4_0: u32 = 2u;
const Q4_1: u32 = 3u;
const Q5_0: u32 = 6u;
const Q5_1: u32 = 7u;
const Q8_0: u32 = 8u;
const Q2_K: u32 = 10u;
const Q3_K: u32 = 11u;
const Q4_K: u32 = 12u;
const Q5_K: u32 = 13u;
const Q6_K: u32 = 14u;

/// Byte `j` of the block starting at word `b`.
fn byte_at(b: u32, j: u32) -> u32 {
    return (w[b + (j >> 2u)] >> ((j & 3u) * 8u)) & 255u;
}

/// The f16 at (even) byte `j` of the block at `b`.
fn half_at(b: u32, j: u32) -> f32 {
    return f16_bits_to_f32((w[b + (j >> 2u)] >> ((j & 2u) * 8u)) & 0xffffu);
}

/// A byte as the signed value it stores.
fn signed(v: u32) -> i32 {
    return i32(v) - select(0, 256, v >= 128u);
}

/// Q4_K's and Q5_K's 6-bit (scale, min) of sub-block `j` from the 12 bytes at byte 4.
fn k_scale_min(b: u32, j: u32) -> vec2<u32> {
    if j < 4u {
        return vec2<u32>(byte_at(b, 4u + j) & 63u, byte_at(b, 8u + j) & 63u);
    }
    let both = byte_at(b, 8u + j);
    return vec2<u32>(
        (both & 15u) | ((byte_at(b, j) >> 2u) & 0x30u),
        (both >> 4u) | ((byte_at(b, 4u + j) >> 2u) & 0x30u),
    );
}

/// The 32 values of unit `u` (values 32u .. 32u + 32) of the block at word `b`.
fn unit_values(b: u32, u: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    switch BLOCK_TYPE {
        case Q4_0: {
            let d = half_at(b, 0u);
            for (var j = 0u; j < 16u; j++) {
                let c = byte_at(b, 2u + j);
                v[j] = f32(i32(c & 15u) - 8) * d;
                v[j + 16u] = f32(i32(c >> 4u) - 8) * d;
            }
        }
        case Q4_1: {
            let d = half_at(b, 0u);
            let m = half_at(b, 2u);
            for (var j = 0u; j < 16u; j++) {
                let c = byte_at(b, 4u + j);
                v[j] = d * f32(c & 15u) + m;
                v[j + 16u] = d * f32(c >> 4u) + m;
            }
        }
        case Q5_0: {
            let d = half_at(b, 0u);
            let high = byte_at(b, 2u) | (byte_at(b, 3u) << 8u) | (byte_at(b, 4u) << 16u) | (byte_at(b, 5u) << 24u);
            for (var j = 0u; j < 16u; j++) {
                let c = byte_at(b, 6u + j);
                let lo = (c & 15u) | (((high >> j) & 1u) << 4u);
                let hi = (c >> 4u) | (((high >> (j + 16u)) & 1u) << 4u);
                v[j] = d * f32(i32(lo) - 16);
                v[j + 16u] = d * f32(i32(hi) - 16);
            }
        }
        case Q5_1: {
            let d = half_at(b, 0u);
            let m = half_at(b, 2u);
            let high = w[b + 1u];
            for (var j = 0u; j < 16u; j++) {
                let c = byte_at(b, 8u + j);
                let lo = (c & 15u) | (((high >> j) & 1u) << 4u);
                let hi = (c >> 4u) | (((high >> (j + 16u)) & 1u) << 4u);
                v[j] = d * f32(lo) + m;
                v[j + 16u] = d * f32(hi) + m;
            }
        }
        case Q8_0: {
            let d = half_at(b, 0u);
            for (var j = 0u; j < 32u; j++) {
                v[j] = f32(signed(byte_at(b, 2u + j))) * d;
            }
        }
        case Q2_K: {
            // 16 scale bytes, 64 bytes of 2-bit codes, d, dmin; sub-blocks of 16.
            let d = half_at(b, 80u);
            let dmin = half_at(b, 82u);
            let shift = 2u * (u % 4u);
            let codes = 16u + (u / 4u) * 32u;
            for (var l = 0u; l < 32u; l++) {
                let sc = byte_at(b, 2u * u + l / 16u);
                let dl = d * f32(sc & 15u);
                let ml = dmin * f32(sc >> 4u);
                let q = (byte_at(b, codes + l) >> shift) & 3u;
                v[l] = dl * f32(q) - ml;
            }
        }
        case Q3_K: {
            // 32 bytes of high bits, 64 of 2-bit codes, 12 of 6-bit scales, d; sub-blocks of 16.
            let d = half_at(b, 108u);
            let shift = 2u * (u % 4u);
            let codes = 32u + (u / 4u) * 32u;
            for (var l = 0u; l < 32u; l++) {
                let s = 2u * u + l / 16u;
                let low = (byte_at(b, 96u + s % 8u) >> (4u * (s / 8u))) & 15u;
                let top = (byte_at(b, 104u + s % 4u) >> (2u * (s / 4u))) & 3u;
                let dl = d * f32(i32(low | (top << 4u)) - 32);
                let high = (byte_at(b, l) >> u) & 1u;
                let q = i32((byte_at(b, codes + l) >> shift) & 3u) - i32((high ^ 1u) << 2u);
                v[l] = dl * f32(q);
            }
        }
        case Q4_K, Q5_K: {
            // d, dmin, 12 bytes of scales and mins, [Q5_K: 32 bytes of fifth bits], codes.
            let d = half_at(b, 0u);
            let dmin = half_at(b, 2u);
            let sm = k_scale_min(b, u);
            let dl = d * f32(sm.x);
            let ml = dmin * f32(sm.y);
            let fifth = BLOCK_TYPE == Q5_K;
            let codes = select(16u, 48u, fifth) + (u / 2u) * 32u;
            let shift = 4u * (u % 2u);
            for (var l = 0u; l < 32u; l++) {
                var q = (byte_at(b, codes + l) >> shift) & 15u;
                if fifth {
                    q |= ((byte_at(b, 16u + l) >> u) & 1u) << 4u;
                }
                v[l] = dl * f32(q) - ml;
            }
        }
        case Q6_K: {
            // 128 bytes of low nibbles, 64 of high 2 bits, 16 signed scales, d.
            let d = half_at(b, 208u);
            let half = u / 4u;
            let quarter = u % 4u;
            for (var l = 0u; l < 32u; l++) {
                let within = 32u * quarter + l;
                let c = byte_at(b, half * 64u + within % 64u);
                let low = select(c & 15u, c >> 4u, within >= 64u);
                let high = (byte_at(b, 128u + half * 32u + l) >> (2u * quarter)) & 3u;
                let q = i32(low | (high << 4u)) - 32;
                let dl = d * f32(signed(byte_at(b, 192u + 2u * u + l / 16u)));
                v[l] = dl * f32(q);
            }
        }
        default: {}
    }
    return v;
}

/// The 32 values of W[row, 32·unit ..].
fn weight_unit(row: u32, unit: u32) -> array<f32, 32> {
    let per_block = params.block_values / 32u;
    let blocks_per_row = params.n_in / params.block_values;
    let block = row * blocks_per_row + unit / per_block;
    return unit_values(block * params.block_words, unit % per_block);
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

/// Store an invocation's 4 rows by 8 columns (`n_cols` columns in all, 64 in the tile).
fn store_tile(m0: u32, c0: u32, n_cols: u32, acc_l: mat4x4<f32>, acc_h: mat4x4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if m >= params.rows {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            if c0 + j < n_cols {
                store(m * n_cols + c0 + j, acc_l[j][i]);
            }
            if c0 + 32u + j < n_cols {
                store(m * n_cols + c0 + 32u + j, acc_h[j][i]);
            }
        }
    }
}

// The rows of the tile's left operand, [32 k][32 rows], and the decoded weights,
// [32 k][64 columns].
// Both as vec4: four consecutive rows (columns) in one read.
var<workgroup> lhs: array<vec4<f32>, 256>;
var<workgroup> wt: array<vec4<f32>, 512>;

/// Products over one staged k step of 32: rows 4·ly.., columns 4·lx.. and 32 + 4·lx...
fn tile_step(ly: u32, lx: u32, acc: ptr<function, array<mat4x4<f32>, 2>>) {
    for (var k = 0u; k < 32u; k++) {
        let xv = lhs[k * 8u + ly];
        let lo = wt[k * 16u + lx];
        let hi = wt[k * 16u + 8u + lx];
        (*acc)[0] = fma_outer((*acc)[0], xv, lo);
        (*acc)[1] = fma_outer((*acc)[1], xv, hi);
    }
}

/// Stage the adapter term's rows: lora_lhs[m_base.., j0 + k] for k < 32 into `lhs` (zero past
/// r; rows past the end clamped, never stored).
fn stage_lora_lhs(t: u32, m_base: u32, j0: u32) {
    let k = t % 32u;
    let r = params.r;
    for (var i = 0u; i < 16u; i++) {
        let m = t / 32u + 2u * i;
        let row = min(m_base + m, params.rows - 1u);
        let v = lora_lhs[row * r + min(j0 + k, r - 1u)];
        lhs[k * 8u + m / 4u][m % 4u] = select(0.0, v, j0 + k < r);
    }
}

/// The adapter's term over the tile: r more steps of k, the factor's column `c` (this
/// invocation's, 0..64) scaled by s: factor[col · r + j] forward (B), factor[j · n_in + col]
/// backward (A), for j = j0..j0 + 32 below r.
fn lora_steps(t: u32, ly: u32, lx: u32, m_base: u32, col: u32, n_cols: u32, forward: bool, acc: ptr<function, array<mat4x4<f32>, 2>>) {
    let r = params.r;
    let c = min(col, n_cols - 1u);
    for (var j0 = 0u; j0 < r; j0 += 32u) {
        stage_lora_lhs(t, m_base, j0);
        for (var k = 0u; k < 32u; k++) {
            let j = min(j0 + k, r - 1u);
            var v: f32;
            if forward {
                v = factor[c * r + j];
            } else {
                v = factor[j * params.n_in + c];
            }
            wt[k * 16u + t / 4u][t % 4u] = select(0.0, params.scale * v, j0 + k < r);
        }
        workgroupBarrier();
        tile_step(ly, lx, acc);
        workgroupBarrier();
    }
}

@compute @workgroup_size(64)
fn ggml_matmul_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let lx = t % 8u;
    let ly = t / 8u;
    let m_base = wg.y * 32u;
    let n_base = wg.x * 64u;
    let n_in = params.n_in;
    // Out-of-range rows and outputs are computed from clamped indices, never stored.
    let my_output = min(n_base + t, params.n_out - 1u);
    var acc: array<mat4x4<f32>, 2>;
    for (var unit = 0u; unit < n_in / 32u; unit++) {
        // x: invocations 0-31 and 32-63 read two rows' 32 consecutive k at a time.
        let k = t % 32u;
        for (var i = 0u; i < 16u; i++) {
            let m = t / 32u + 2u * i;
            let row = min(m_base + m, params.rows - 1u);
            lhs[k * 8u + m / 4u][m % 4u] = x[row * n_in + unit * 32u + k];
        }
        let values = weight_unit(my_output, unit);
        for (var j = 0u; j < 32u; j++) {
            wt[j * 16u + t / 4u][t % 4u] = values[j];
        }
        workgroupBarrier();
        tile_step(ly, lx, &acc);
        workgroupBarrier();
    }
    lora_steps(t, ly, lx, m_base, n_base + t, params.n_out, true, &acc);
    store_tile(m_base + 4u * ly, n_base + 4u * lx, params.n_out, acc[0], acc[1]);
}

@compute @workgroup_size(64)
fn ggml_matmul_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let lx = t % 8u;
    let ly = t / 8u;
    let m_base = wg.y * 32u;
    let i_base = wg.x * 64u;
    let n_out = params.n_out;
    // This invocation decodes output (o0 + t / 2)'s inputs i_base + 32·(t % 2) ...
    let my_unit = i_base / 32u + t % 2u;
    let unit_ok = my_unit < params.n_in / 32u;
    var acc: array<mat4x4<f32>, 2>;
    for (var o0 = 0u; o0 < n_out; o0 += 32u) {
        // dy [32 outputs][32 rows]; outputs past the end read as zero.
        let o = o0 + t % 32u;
        for (var i = 0u; i < 16u; i++) {
            let m = t / 32u + 2u * i;
            let row = min(m_base + m, params.rows - 1u);
            let v = x[row * n_out + min(o, n_out - 1u)];
            lhs[(t % 32u) * 8u + m / 4u][m % 4u] = select(0.0, v, o < n_out);
        }
        let mine = o0 + t / 2u;
        var values: array<f32, 32>;
        if mine < n_out && unit_ok {
            values = weight_unit(mine, my_unit);
        }
        let at = (t / 2u) * 64u + (t % 2u) * 32u;
        for (var j = 0u; j < 32u; j++) {
            wt[(at + j) / 4u][(at + j) % 4u] = values[j];
        }
        workgroupBarrier();
        tile_step(ly, lx, &acc);
        workgroupBarrier();
    }
    lora_steps(t, ly, lx, m_base, i_base + t, params.n_in, false, &acc);
    store_tile(m_base + 4u * ly, i_base + 4u * lx, params.n_in, acc[0], acc[1]);
}

@compute @workgroup_size(64)
fn ggml_matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let o = (wg.x + wg.y * nwg.x) * 64u + lid;
    if o >= params.n_out {
        return;
    }
    var acc = 0.0;
    for (var unit = 0u; unit < params.n_in / 32u; unit++) {
        let values = weight_unit(o, unit);
        var part = 0.0;
        for (var j = 0u; j < 32u; j++) {
            part = fma(x[unit * 32u + j], values[j], part);
        }
        acc += part;
    }
    var term = 0.0;
    for (var j = 0u; j < params.r; j++) {
        term = fma(lora_lhs[j], factor[o * params.r + j], term);
    }
    store(o, acc + params.scale * term);
}
