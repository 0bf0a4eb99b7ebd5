// f32 matrix product for software devices (lavapipe, SwiftShader), both operands read from
// textures:  c[m, n] = alpha * sum_k A(m, k) * B(k, n)  (+ c[m, n] with the ACCUMULATE constant)
//
// Why textures: llvmpipe runs eight invocations in one SIMD register and turns every
// storage-buffer load whose address it cannot prove uniform into a loop over the eight lanes
// with two branches each; a texel fetch is a branch-free gather of 16 bytes a lane. The
// textures are read-only storage textures, not sampled ones: llvmpipe fetches a sampled
// texel through an out-of-line function that looks the mip level's size and strides up per
// lane even for level 0, and loads a storage texel inline from one width and stride (the
// products ran 0.69-0.82x the time). The operands are first written to textures by pack.wgsl
// (any strides, so any transposition), four consecutive k in one rgba32float texel, k past K
// as zero.
//
// Bindings (group 0):
//   0 c       storage, read_write  f32: element (m, n) at c_off + m * c_sm + n * c_sn
//   1 params  uniform              { M, N, KT (texels along k = ceil(K / 4); K for
//                                    matmul_tex_tn), alpha, c_sm, c_sn, c_off }
//                                    (c_off: a block of columns of a wider c, e.g. a
//                                    vocabulary chunk of the logits)
//   2 a_tex   texture, read-only   rgba32float [M rows, KT texels]: texel (t, m) = A(m, 4t..4t+4)
//   3 b_tex   texture, read-only   rgba32float [N rows, KT texels]: texel (t, n) = B(4t..4t+4, n)
// Dispatch: grid (ceil(N / 128), ceil(M / 64), 1) of 8x8 invocations. An invocation keeps an
// 8x16 tile of c in eight mat4x4 registers: rows wg.y*64 + lid.y*8 + i (i < 8), columns
// wg.x*128 + lid.x + 8j (j < 16); column group g of row i's matrix is columns 4g..4g+4.
// Out-of-range rows and columns are clamped to the last one: computed, never stored.
// Per texel step an invocation fetches 8 + 16 texels for 512 multiply-adds (measured on
// lavapipe at 1024x576x1536: 8x16 ~30 GFLOP/s, 8x8 ~24, 4x8 ~17, the buffer kernel ~8).
//
// A second entry point, matmul_tex_narrow, for N <= 32 (the LoRA products with r columns; a
// product with few rows is run transposed by swapping the textures and c's strides): grid
// (ceil(N / 16), ceil(M / 128), 1) of 32 invocations, each owning rows
// (wg.y*32 + lid)*4 + i (i < 4) and all sixteen columns wg.x*16 + j (j < 16).
//
// A third, matmul_tex_tn, for c = alpha * A^T B with A [K, M] and B [K, N] both stored with
// K as rows (the LoRA gradients dB = s dY^T (X A^T) and dA = s (dY B)^T X, reductions over the
// tokens): its textures are those matrices as stored, so their packs are plain row packs (the
// same textures the NF4 products pack dY and X into, often still holding them):
//   2 a_tex [K rows, ceil(M/4) texels]: texel (t, k) = A[k, 4t..4t+4]
//   3 b_tex [K rows, ceil(N/4) texels]: texel (t, k) = B[k, 4t..4t+4]
// grid (ceil(N / 16), ceil(M / 256), 1) of 32 invocations, each owning rows
// (wg.y*32 + lid)*8 + i (i < 8, two texels of A) and columns wg.x*16 + j (j < 16, four texels
// of B); per k it fetches 6 texels for 128 multiply-adds.
//
// Built followed by matmul_tex_common.wgsl: Params, the bindings, and the multiply-add and
// store helpers these kernels share with matmul_tex_narrow_sg.wgsl.

@compute @workgroup_size(8, 8)
fn matmul_tex(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 64u + lid.y * 8u;
    let n0 = wg.x * 128u + lid.x;
    let last_m = i32(params.M) - 1;
    let last_n = vec4<i32>(i32(params.N) - 1);
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
    for (var t = 0; t < i32(params.KT); t++) {
        let w0 = b_group(t, c0);
        let w1 = b_group(t, c1);
        let w2 = b_group(t, c2);
        let w3 = b_group(t, c3);
        acc0 = row_update(acc0, a_at(t, r.x), w0, w1, w2, w3);
        acc1 = row_update(acc1, a_at(t, r.y), w0, w1, w2, w3);
        acc2 = row_update(acc2, a_at(t, r.z), w0, w1, w2, w3);
        acc3 = row_update(acc3, a_at(t, r.w), w0, w1, w2, w3);
        acc4 = row_update(acc4, a_at(t, s.x), w0, w1, w2, w3);
        acc5 = row_update(acc5, a_at(t, s.y), w0, w1, w2, w3);
        acc6 = row_update(acc6, a_at(t, s.z), w0, w1, w2, w3);
        acc7 = row_update(acc7, a_at(t, s.w), w0, w1, w2, w3);
    }
    store_row(m0, n0, acc0);
    store_row(m0 + 1u, n0, acc1);
    store_row(m0 + 2u, n0, acc2);
    store_row(m0 + 3u, n0, acc3);
    store_row(m0 + 4u, n0, acc4);
    store_row(m0 + 5u, n0, acc5);
    store_row(m0 + 6u, n0, acc6);
    store_row(m0 + 7u, n0, acc7);
}

/// Column 4g + j of the row's tile is output column n0 + 32g + 8j.
fn store_row(m: u32, n0: u32, acc: mat4x4<f32>) {
    if m >= params.M {
        return;
    }
    for (var g = 0u; g < 4u; g++) {
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 32u * g + 8u * j;
            if n < params.N {
                store(m, n, acc[g][j]);
            }
        }
    }
}

// --- matmul_tex_narrow: at most 32 columns ------------------------------------------------

@compute @workgroup_size(32)
fn matmul_tex_narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = (wg.y * 32u + lid) * 4u;
    let n0 = wg.x * 16u;
    let last_m = i32(params.M) - 1;
    let last_n = vec4<i32>(i32(params.N) - 1);
    let r = min(vec4<i32>(i32(m0)) + vec4<i32>(0, 1, 2, 3), vec4<i32>(last_m));
    let c0 = min(vec4<i32>(i32(n0)) + vec4<i32>(0, 1, 2, 3), last_n);
    let c1 = min(vec4<i32>(i32(n0)) + vec4<i32>(4, 5, 6, 7), last_n);
    let c2 = min(vec4<i32>(i32(n0)) + vec4<i32>(8, 9, 10, 11), last_n);
    let c3 = min(vec4<i32>(i32(n0)) + vec4<i32>(12, 13, 14, 15), last_n);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    for (var t = 0; t < i32(params.KT); t++) {
        let w0 = b_group(t, c0);
        let w1 = b_group(t, c1);
        let w2 = b_group(t, c2);
        let w3 = b_group(t, c3);
        acc0 = row_update(acc0, a_at(t, r.x), w0, w1, w2, w3);
        acc1 = row_update(acc1, a_at(t, r.y), w0, w1, w2, w3);
        acc2 = row_update(acc2, a_at(t, r.z), w0, w1, w2, w3);
        acc3 = row_update(acc3, a_at(t, r.w), w0, w1, w2, w3);
    }
    store_narrow_row(m0, n0, acc0);
    store_narrow_row(m0 + 1u, n0, acc1);
    store_narrow_row(m0 + 2u, n0, acc2);
    store_narrow_row(m0 + 3u, n0, acc3);
}

// --- matmul_tex_tn: c = alpha * A^T B, both stored with k as rows ---------------------------

@compute @workgroup_size(32)
fn matmul_tex_tn(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = (wg.y * 32u + lid) * 8u;
    let n0 = wg.x * 16u;
    // Texel columns; past the last one: clamped (computed, never stored).
    let last_a = i32((params.M + 3u) / 4u) - 1;
    let last_b = vec4<i32>(i32((params.N + 3u) / 4u) - 1);
    let ta = min(vec2<i32>(i32(m0 / 4u)) + vec2<i32>(0, 1), vec2<i32>(last_a));
    let tb = min(vec4<i32>(i32(n0 / 4u)) + vec4<i32>(0, 1, 2, 3), last_b);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    // KT carries K itself here: rows of the textures.
    for (var k = 0; k < i32(params.KT); k++) {
        let a0 = textureLoad(a_tex, vec2<i32>(ta.x, k));
        let a1 = textureLoad(a_tex, vec2<i32>(ta.y, k));
        let b0 = textureLoad(b_tex, vec2<i32>(tb.x, k));
        let b1 = textureLoad(b_tex, vec2<i32>(tb.y, k));
        let b2 = textureLoad(b_tex, vec2<i32>(tb.z, k));
        let b3 = textureLoad(b_tex, vec2<i32>(tb.w, k));
        acc0 = outer_update(acc0, a0.x, b0, b1, b2, b3);
        acc1 = outer_update(acc1, a0.y, b0, b1, b2, b3);
        acc2 = outer_update(acc2, a0.z, b0, b1, b2, b3);
        acc3 = outer_update(acc3, a0.w, b0, b1, b2, b3);
        acc4 = outer_update(acc4, a1.x, b0, b1, b2, b3);
        acc5 = outer_update(acc5, a1.y, b0, b1, b2, b3);
        acc6 = outer_update(acc6, a1.z, b0, b1, b2, b3);
        acc7 = outer_update(acc7, a1.w, b0, b1, b2, b3);
    }
    store_narrow_row(m0, n0, acc0);
    store_narrow_row(m0 + 1u, n0, acc1);
    store_narrow_row(m0 + 2u, n0, acc2);
    store_narrow_row(m0 + 3u, n0, acc3);
    store_narrow_row(m0 + 4u, n0, acc4);
    store_narrow_row(m0 + 5u, n0, acc5);
    store_narrow_row(m0 + 6u, n0, acc6);
    store_narrow_row(m0 + 7u, n0, acc7);
}
