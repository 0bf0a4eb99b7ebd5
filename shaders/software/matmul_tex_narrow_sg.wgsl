// The LoRA products for software devices whose subgroups are eight lanes wide (lavapipe at
// its default 256-bit vectors): matmul_tex_narrow and matmul_tex_tn of matmul_tex.wgsl with
// the operand every invocation reads alike fetched once a subgroup and shared by broadcast.
// Same bindings, texture layouts and results (bit for bit: the same fused multiply-adds in
// the same order) as those two, and the narrow one's dispatch; the graph picks these when
// the device has subgroups of exactly eight lanes. Built followed by matmul_tex_common.wgsl
// (Params, the bindings, row_update, outer_update, the stores).
//
// Why: in both kernels an invocation owns a few rows and all sixteen columns of a block,
// so the sixteen columns' texels of B are the same for every invocation, and llvmpipe
// fetches a texel lane by lane (a gather) even when all lanes ask for the same one. There
// they were most of the fetches (narrow: 16 of 20 a texel step, tn: 4 of 6 a k); here the
// subgroup's lanes fetch them once between them, and a broadcast from a constant lane is
// one register shuffle.
//
//   matmul_tex_narrow_sg: c = alpha * A B for N <= 32 (x·Aᵀ with r columns, or transposed).
//     Per texel step, lane l fetches the texels of columns n0 + l and n0 + 8 + l (two
//     fetches where there were sixteen), its four rows' texels of A as before.
//   matmul_tex_tn_sg: c = alpha * A^T B, both stored with k as rows (the LoRA gradients).
//     Two k a step: lane l fetches B's texel l % 4 of row k + l / 4 (one fetch where there
//     were eight), A's two texels of rows k and k + 1 as before; an odd K's last k alone.
//
// Bindings (group 0), as in matmul_tex.wgsl:
//   0 c       storage, read_write  f32: element (m, n) at c_off + m * c_sm + n * c_sn
//   1 params  uniform              { M, N, KT (texels along k; K itself for the tn kernel),
//                                    alpha, c_sm, c_sn, c_off }
//   2 a_tex   texture, read-only   rgba32float: narrow [M rows, KT texels], texel (t, m) =
//                                  A(m, 4t..4t+4); tn [K rows, ceil(M/4) texels]
//   3 b_tex   texture, read-only   rgba32float: narrow [N rows, KT texels], texel (t, n) =
//                                  B(4t..4t+4, n); tn [K rows, ceil(N/4) texels]
// Dispatch:
//   narrow: grid (ceil(N / 16), ceil(M / 128), 1) of 32 invocations (four subgroups,
//           invocation i = 8 * subgroup + lane), rows (wg.y*32 + i)*4 + r (r < 4), as
//           matmul_tex_narrow
//   tn:     grid (ceil(N / 16), ceil(M / 64), 1) of 8 invocations (one subgroup), rows
//           (wg.y*8 + lane)*8 + r (r < 8): a quarter of matmul_tex_tn's 256-row workgroups,
//           so that a gradient of 192 or 576 rows still spreads over the device's threads
// both with the sixteen columns wg.x*16 + j (j < 16). Rows and columns past the end are
// clamped to the last one: computed, never stored.

// --- matmul_tex_narrow_sg -------------------------------------------------------------------

/// Four columns of B at one texel step, transposed (column kk holds k = 4t + kk): the
/// texels that lanes 0..4 fetched.
fn shared_group_0(texels: vec4<f32>) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(subgroupBroadcast(texels, 0u), subgroupBroadcast(texels, 1u), subgroupBroadcast(texels, 2u), subgroupBroadcast(texels, 3u)));
}

/// `shared_group_0` for lanes 4..8.
fn shared_group_1(texels: vec4<f32>) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(subgroupBroadcast(texels, 4u), subgroupBroadcast(texels, 5u), subgroupBroadcast(texels, 6u), subgroupBroadcast(texels, 7u)));
}

@compute @workgroup_size(32)
fn matmul_tex_narrow_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = (wg.y * 32u + 8u * sg + lane) * 4u;
    let n0 = wg.x * 16u;
    let last_m = i32(params.M) - 1;
    let last_n = i32(params.N) - 1;
    let r = min(vec4<i32>(i32(m0)) + vec4<i32>(0, 1, 2, 3), vec4<i32>(last_m));
    // The columns whose texels this lane fetches for the subgroup.
    let c_lo = min(i32(n0 + lane), last_n);
    let c_hi = min(i32(n0 + 8u + lane), last_n);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    for (var t = 0; t < i32(params.KT); t++) {
        let lo = textureLoad(b_tex, vec2<i32>(t, c_lo));
        let hi = textureLoad(b_tex, vec2<i32>(t, c_hi));
        let w0 = shared_group_0(lo);
        let w1 = shared_group_1(lo);
        let w2 = shared_group_0(hi);
        let w3 = shared_group_1(hi);
        acc0 = row_update(acc0, textureLoad(a_tex, vec2<i32>(t, r.x)), w0, w1, w2, w3);
        acc1 = row_update(acc1, textureLoad(a_tex, vec2<i32>(t, r.y)), w0, w1, w2, w3);
        acc2 = row_update(acc2, textureLoad(a_tex, vec2<i32>(t, r.z)), w0, w1, w2, w3);
        acc3 = row_update(acc3, textureLoad(a_tex, vec2<i32>(t, r.w)), w0, w1, w2, w3);
    }
    store_narrow_row(m0, n0, acc0);
    store_narrow_row(m0 + 1u, n0, acc1);
    store_narrow_row(m0 + 2u, n0, acc2);
    store_narrow_row(m0 + 3u, n0, acc3);
}

// --- matmul_tex_tn_sg -----------------------------------------------------------------------

/// The invocation's eight rows of c: a0 and a1 are A's texels of those rows at one k, b0 ..
/// b3 B's four texels at that k.
struct TnTile {
    acc: array<mat4x4<f32>, 8>,
}

fn tn_update(tile: TnTile, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> TnTile {
    var t = tile;
    t.acc[0] = outer_update(t.acc[0], a0.x, b0, b1, b2, b3);
    t.acc[1] = outer_update(t.acc[1], a0.y, b0, b1, b2, b3);
    t.acc[2] = outer_update(t.acc[2], a0.z, b0, b1, b2, b3);
    t.acc[3] = outer_update(t.acc[3], a0.w, b0, b1, b2, b3);
    t.acc[4] = outer_update(t.acc[4], a1.x, b0, b1, b2, b3);
    t.acc[5] = outer_update(t.acc[5], a1.y, b0, b1, b2, b3);
    t.acc[6] = outer_update(t.acc[6], a1.z, b0, b1, b2, b3);
    t.acc[7] = outer_update(t.acc[7], a1.w, b0, b1, b2, b3);
    return t;
}

@compute @workgroup_size(8)
fn matmul_tex_tn_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let m0 = (wg.y * 8u + lane) * 8u;
    let n0 = wg.x * 16u;
    // Texel columns; past the last one: clamped (computed, never stored).
    let last_a = i32((params.M + 3u) / 4u) - 1;
    let last_b = i32((params.N + 3u) / 4u) - 1;
    let ta = min(vec2<i32>(i32(m0 / 4u)) + vec2<i32>(0, 1), vec2<i32>(last_a));
    // The texel of B this lane fetches for the subgroup: texel lane % 4 of the block's four,
    // of row k + lane / 4.
    let tb = min(i32(n0 / 4u + lane % 4u), last_b);
    let dk = i32(lane / 4u);
    // KT carries K itself here: rows of the textures.
    let k_end = i32(params.KT);
    var tile: TnTile;
    // Pairs of k with no branch inside (llvmpipe runs a branch it cannot prove uniform under
    // a mask, blending the whole tile after it), then an odd K's last k alone.
    let pairs_end = k_end - k_end % 2;
    for (var k = 0; k < pairs_end; k += 2) {
        let b = textureLoad(b_tex, vec2<i32>(tb, k + dk));
        let a0 = textureLoad(a_tex, vec2<i32>(ta.x, k));
        let a1 = textureLoad(a_tex, vec2<i32>(ta.y, k));
        tile = tn_update(tile, a0, a1, subgroupBroadcast(b, 0u), subgroupBroadcast(b, 1u), subgroupBroadcast(b, 2u), subgroupBroadcast(b, 3u));
        let a2 = textureLoad(a_tex, vec2<i32>(ta.x, k + 1));
        let a3 = textureLoad(a_tex, vec2<i32>(ta.y, k + 1));
        tile = tn_update(tile, a2, a3, subgroupBroadcast(b, 4u), subgroupBroadcast(b, 5u), subgroupBroadcast(b, 6u), subgroupBroadcast(b, 7u));
    }
    if pairs_end < k_end {
        // Lanes 4..8 fetch the same row as lanes 0..4; only the latter are used.
        let b = textureLoad(b_tex, vec2<i32>(tb, pairs_end));
        let a0 = textureLoad(a_tex, vec2<i32>(ta.x, pairs_end));
        let a1 = textureLoad(a_tex, vec2<i32>(ta.y, pairs_end));
        tile = tn_update(tile, a0, a1, subgroupBroadcast(b, 0u), subgroupBroadcast(b, 1u), subgroupBroadcast(b, 2u), subgroupBroadcast(b, 3u));
    }
    store_narrow_row(m0, n0, tile.acc[0]);
    store_narrow_row(m0 + 1u, n0, tile.acc[1]);
    store_narrow_row(m0 + 2u, n0, tile.acc[2]);
    store_narrow_row(m0 + 3u, n0, tile.acc[3]);
    store_narrow_row(m0 + 4u, n0, tile.acc[4]);
    store_narrow_row(m0 + 5u, n0, tile.acc[5]);
    store_narrow_row(m0 + 6u, n0, tile.acc[6]);
    store_narrow_row(m0 + 7u, n0, tile.acc[7]);
}
