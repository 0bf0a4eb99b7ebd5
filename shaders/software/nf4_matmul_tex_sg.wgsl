// NF4 dequant-matmuls for software devices whose subgroups are eight lanes wide (lavapipe at
// its default 256-bit vectors), all operands read from textures:
//   nf4_forward_tex_sg:  y[t, o]  = sum_i x[t, i] * W[o, i]   (Y = X W^T)
//   nf4_backward_tex_sg: dx[t, i] = sum_o dy[t, o] * W[o, i]  (dX = dY W)
// With the ACCUMULATE constant the result is added to the output. With params.rank > 0 the
// product gains a LoRA adapter's low-rank term in the same k loop, after the weight's:
//   forward:  y[t, o]  += scale * sum_j x_a[t, j]  * B[o, j]    (x_a = x·Aᵀ, B [out, rank])
//   backward: dx[t, i] += scale * sum_j dy_b[t, j] * A[j, i]    (dy_b = dy·B, A [rank, in])
// which spares the adapter's own product its read-modify-write of the whole output.
// Without the term: same texture layouts, requirements (in % 32 == 0, blocksize a multiple of
// 32 dividing in; here also out % 4 == 0, for the vec4 stores) and results (bit for
// bit: the same products and fused multiply-adds in the same order) as nf4_forward_tex /
// nf4_backward_tex in nf4_matmul_tex.wgsl; the graph picks these when the device has subgroups of exactly eight
// lanes. Built followed by rows_fma_sg.wgsl (fma4, rows_0_to_3, rows_4_to_7),
// nf4_weights_tex.wgsl (the NF4 table, decode4, codes_at, scale_of) and tile_queue.wgsl.
//
// Why subgroups (see matmul_tex_sg.wgsl): a subgroup is one SIMD register in llvmpipe, so a
// broadcast from a constant lane is a register shuffle while a texel fetch is a gather. The
// subgroup fetches eight texels of x (or dy) of each of its 32 rows at a time, one row a
// fetch (lane l texel t + l: 128 contiguous bytes, where lanes fetching one texel of eight
// rows touched eight rows' cache lines; about a tenth faster on lavapipe), and shares them by
// broadcast from the lane holding the texel (`texel_0` .. `texel_7`); each lane decodes its
// own weights (eight lanes decode eight different code words in one SIMD operation, and each
// decoded weight serves 32 rows instead of 8), looking the NF4 table up by shuffles from the
// subgroup's lanes (`decode4_sg`).
//
// Bindings (group 0):
//   0 y           storage, read_write  f32 [T, out] (forward) or [T, in] (backward), as vec4s
//   1 params      uniform              { rows (T), n_in, n_out, blocksize, rank
//                                      (a multiple of 4, 0: no adapter term), scale }
//   2 x_tex       texture, read-only   rgba32float: x [T, in/4] (forward) or dy [T, ceil(out/4)]
//                                      (backward), four consecutive values a texel, 0 past the end
//   3 w_tex       texture, read-only   rgba32uint, W's code words in order four to a texel
//                                      (row o's texel t, words 4t..4t+4 = the codes of inputs
//                                      32t..32t+32, is texel o·in/32 + t), in a linear layout
//                                      (ops::pack::Linear: texel l at (l % width, l / width),
//                                      width a power of two)
//   4 absmax_tex  texture, read-only   rgba32float, W's scales in order four to a texel (block b
//                                      of row o is value o·in/blocksize + b), linear layout
//   5 lhs_tex     texture, read-only   rgba32float [T, rank/4]: x_a (forward) or dy_b (backward)
//   6 factor_tex  texture, read-only   rgba32float: B [out, rank/4] (forward), A [rank, in/4]
//                                      (backward); with rank 0 any rgba32float texture, unread
//  15 queue         tile_queue.wgsl's
// Dispatch: `Dispatch::TileQueue` workgroups of 8 invocations (one subgroup), taking tiles of
// 32 rows by 32 columns from the queue, row-major:
//   forward:  ceil(T / 32) · ceil(out / 32) tiles; lane l owns outputs n0 + 4l + j (j < 4)
//   backward: ceil(T / 32) · in / 32 tiles, one texel of codes (32 inputs) each, lane l its
//             inputs 4l..4l+4 (half of code word l / 2); per 32 outputs lane l fetches the
//             codes and scales of outputs l + 8e (e < 4), shared by broadcast
// and rows m0 + 8g + i (g < 4, i < 8). Accumulator acc[2g + h][i] holds row m0 + 8g + 4h + i,
// its component j the lane's column j. In a tile that straddles the edge, rows and columns
// past it are clamped to the last one: computed, never stored.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    blocksize: u32,
    rank: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var x_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var w_tex: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(4) var absmax_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var lhs_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var factor_tex: texture_storage_2d<rgba32float, read>;

/// The NF4 table spread over the subgroup: lane l holds the values of codes l and l + 8.
fn lane_table(lane: u32) -> vec2<f32> {
    return vec2<f32>(nf4(vec4<u32>(lane)).x, nf4(vec4<u32>(lane + 8u)).x);
}

/// `decode4` (nf4_weights_tex.wgsl) with the table looked up by shuffles from the lanes'
/// `lane_table` instead of the select tree: one register permute a lookup on llvmpipe, about
/// a fifth of the select tree's instructions. The same values, so the same bits.
fn decode4_sg(word: u32, shift: u32, scale: f32, table: vec2<f32>) -> vec4<f32> {
    let codes = (vec4<u32>(word) >> (vec4<u32>(0u, 4u, 8u, 12u) + shift)) & vec4<u32>(15u);
    let i = codes & vec4<u32>(7u);
    let lo = vec4<f32>(subgroupShuffle(table.x, i.x), subgroupShuffle(table.x, i.y), subgroupShuffle(table.x, i.z), subgroupShuffle(table.x, i.w));
    let hi = vec4<f32>(subgroupShuffle(table.y, i.x), subgroupShuffle(table.y, i.y), subgroupShuffle(table.y, i.z), subgroupShuffle(table.y, i.w));
    return select(lo, hi, codes >= vec4<u32>(8u)) * scale;
}

/// Row texel t of the lane's four rows of `tex` (x, dy, x_a or dy_b).
fn rows_at(tex: texture_storage_2d<rgba32float, read>, t: i32, rows: vec4<i32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        textureLoad(tex, vec2<i32>(t, rows.x)),
        textureLoad(tex, vec2<i32>(t, rows.y)),
        textureLoad(tex, vec2<i32>(t, rows.z)),
        textureLoad(tex, vec2<i32>(t, rows.w)),
    );
}

/// tile.acc[a][i] is row m0 + 4a + i (a = 2g + h), columns col .. col + 4 of y, whose rows
/// hold `n_cols` values (a multiple of 4, so the four columns are all in or all out).
// One vec4 a row: llvmpipe stores to a storage buffer in a loop over the lanes, and a vec4
// store is one such loop where four f32 stores were four (nf4_forward 0.79x the time,
// nf4_backward 0.92x).
fn store_tile(tile: Tile, m0: u32, col: u32, n_cols: u32) {
    if col >= n_cols {
        return;
    }
    store_rows(tile.acc[0], m0, col, n_cols);
    store_rows(tile.acc[1], m0 + 4u, col, n_cols);
    store_rows(tile.acc[2], m0 + 8u, col, n_cols);
    store_rows(tile.acc[3], m0 + 12u, col, n_cols);
    store_rows(tile.acc[4], m0 + 16u, col, n_cols);
    store_rows(tile.acc[5], m0 + 20u, col, n_cols);
    store_rows(tile.acc[6], m0 + 24u, col, n_cols);
    store_rows(tile.acc[7], m0 + 28u, col, n_cols);
}

fn store_rows(acc: mat4x4<f32>, m0: u32, col: u32, n_cols: u32) {
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if m < params.rows {
            let index = (m * n_cols + col) / 4u;
            var v = acc[i];
            if ACCUMULATE {
                v += y[index];
            }
            y[index] = v;
        }
    }
}

/// The lane's four rows of the tile from row m0.
fn subgroup_rows(m0: u32, lane: u32) -> vec4<u32> {
    return vec4<u32>(m0) + vec4<u32>(0u, 8u, 16u, 24u) + vec4<u32>(lane);
}

fn clamp_rows(rows: vec4<u32>) -> vec4<i32> {
    return min(vec4<i32>(rows), vec4<i32>(i32(params.rows) - 1));
}

/// The lane's four columns' weights for half `shift` of their code words `words` (one a
/// column), times their scales: column kk holds input kk of the four.
fn column_weights(words: vec4<u32>, shift: u32, s: vec4<f32>, table: vec2<f32>) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(decode4_sg(words.x, shift, s.x, table), decode4_sg(words.y, shift, s.y, table), decode4_sg(words.z, shift, s.z, table), decode4_sg(words.w, shift, s.w, table)));
}

// --- forward --------------------------------------------------------------------------------

@compute @workgroup_size(8)
fn nf4_forward_tex_sg(@builtin(subgroup_invocation_id) lane: u32) {
    let col_tiles = (params.n_out + 31u) / 32u;
    let tiles = (params.rows + 31u) / 32u * col_tiles;
    for (var tile = next_tile(lane); tile < tiles; tile = next_tile(lane)) {
        forward_tile(tile / col_tiles * 32u, tile % col_tiles * 32u, lane);
    }
}

/// Rows m0 .. m0 + 32, outputs n0 .. n0 + 32 of y.
fn forward_tile(m0: u32, n0: u32, lane: u32) {
    let rows = subgroup_rows(m0, lane);
    let fetch = clamp_rows(rows);
    let cols = vec4<u32>(n0 + 4u * lane) + vec4<u32>(0u, 1u, 2u, 3u);
    let w_rows = min(vec4<i32>(cols), vec4<i32>(i32(params.n_out) - 1));
    let at = weight_at(w_tex, absmax_tex, params.n_in, params.blocksize);
    let table = lane_table(lane);
    let last_row = i32(params.rows) - 1;
    var tile: Tile;
    let texels = params.n_in / 32u;
    for (var t = 0u; t < texels; t++) {
        let b = t * 32u / params.blocksize;
        let w0 = codes_at(w_tex, at, t, w_rows.x);
        let w1 = codes_at(w_tex, at, t, w_rows.y);
        let w2 = codes_at(w_tex, at, t, w_rows.z);
        let w3 = codes_at(w_tex, at, t, w_rows.w);
        let s = vec4<f32>(scale_of(absmax_tex, at, b, w_rows.x), scale_of(absmax_tex, at, b, w_rows.y), scale_of(absmax_tex, at, b, w_rows.z), scale_of(absmax_tex, at, b, w_rows.w));
        // x texels 8t .. 8t + 8; word q holds inputs 32t + 8q .. + 8: texels 8t + 2q (its low
        // half) and 8t + 2q + 1 (its high half).
        let x = row_texels(x_tex, i32(8u * t), i32(params.n_in / 4u) - 1, rows.x - lane, last_row, lane);
        let q0 = vec4<u32>(w0.x, w1.x, w2.x, w3.x);
        tile = texel_0(tile, x, column_weights(q0, 0u, s, table));
        tile = texel_1(tile, x, column_weights(q0, 16u, s, table));
        let q1 = vec4<u32>(w0.y, w1.y, w2.y, w3.y);
        tile = texel_2(tile, x, column_weights(q1, 0u, s, table));
        tile = texel_3(tile, x, column_weights(q1, 16u, s, table));
        let q2 = vec4<u32>(w0.z, w1.z, w2.z, w3.z);
        tile = texel_4(tile, x, column_weights(q2, 0u, s, table));
        tile = texel_5(tile, x, column_weights(q2, 16u, s, table));
        let q3 = vec4<u32>(w0.w, w1.w, w2.w, w3.w);
        tile = texel_6(tile, x, column_weights(q3, 0u, s, table));
        tile = texel_7(tile, x, column_weights(q3, 16u, s, table));
    }
    // The adapter's term: column kk of b holds B[cols, 4t + kk].
    for (var t = 0u; t < params.rank / 4u; t++) {
        let b = transpose(mat4x4<f32>(
            textureLoad(factor_tex, vec2<i32>(i32(t), w_rows.x)),
            textureLoad(factor_tex, vec2<i32>(i32(t), w_rows.y)),
            textureLoad(factor_tex, vec2<i32>(i32(t), w_rows.z)),
            textureLoad(factor_tex, vec2<i32>(i32(t), w_rows.w)),
        ));
        tile = tile_update(tile, params.scale * rows_at(lhs_tex, i32(t), fetch), b);
    }
    store_tile(tile, rows.x - lane, cols.x, params.n_out);
}

// --- backward -------------------------------------------------------------------------------

/// Column kk: the lane's four inputs' weights (half `shift` of code word `word`) for the
/// output whose codes and scale lane kk fetched, kk < 4.
fn weights_0_to_3(codes: vec4<u32>, scale: f32, word: u32, shift: u32, table: vec2<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        decode4_sg(subgroupBroadcast(codes, 0u)[word], shift, subgroupBroadcast(scale, 0u), table),
        decode4_sg(subgroupBroadcast(codes, 1u)[word], shift, subgroupBroadcast(scale, 1u), table),
        decode4_sg(subgroupBroadcast(codes, 2u)[word], shift, subgroupBroadcast(scale, 2u), table),
        decode4_sg(subgroupBroadcast(codes, 3u)[word], shift, subgroupBroadcast(scale, 3u), table),
    );
}

/// `weights_0_to_3` for the outputs of lanes 4..8.
fn weights_4_to_7(codes: vec4<u32>, scale: f32, word: u32, shift: u32, table: vec2<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        decode4_sg(subgroupBroadcast(codes, 4u)[word], shift, subgroupBroadcast(scale, 4u), table),
        decode4_sg(subgroupBroadcast(codes, 5u)[word], shift, subgroupBroadcast(scale, 5u), table),
        decode4_sg(subgroupBroadcast(codes, 6u)[word], shift, subgroupBroadcast(scale, 6u), table),
        decode4_sg(subgroupBroadcast(codes, 7u)[word], shift, subgroupBroadcast(scale, 7u), table),
    );
}

@compute @workgroup_size(8)
fn nf4_backward_tex_sg(@builtin(subgroup_invocation_id) lane: u32) {
    let texels = params.n_in / 32u;
    let tiles = (params.rows + 31u) / 32u * texels;
    for (var tile = next_tile(lane); tile < tiles; tile = next_tile(lane)) {
        backward_tile(tile / texels * 32u, tile % texels, lane);
    }
}

/// Rows m0 .. m0 + 32 of dx, the 32 inputs of code texel `texel`.
fn backward_tile(m0: u32, texel: u32, lane: u32) {
    let rows = subgroup_rows(m0, lane);
    let fetch = clamp_rows(rows);
    let t = i32(texel);
    let word = lane / 2u;
    let shift = 16u * (lane % 2u);
    let b = u32(t) * 32u / params.blocksize;
    let at = weight_at(w_tex, absmax_tex, params.n_in, params.blocksize);
    let table = lane_table(lane);
    let last_row = i32(params.rows) - 1;
    var tile: Tile;
    let last_o = i32(params.n_out) - 1;
    let last_t = i32((params.n_out + 3u) / 4u) - 1;
    for (var o0 = 0; o0 <= last_o; o0 += 32) {
        // dy texels o0 / 4 .. + 8 (outputs o0 .. o0 + 32). Lane l fetches the codes and scale
        // of outputs o0 + 8e + l and the subgroup shares them: eight fetches for 32 outputs.
        // In a last chunk cut by the end, outputs past it get the scale 0 (their weights are
        // zeros; dy is 0 past the end within its last texel, and texels past that one are
        // clamped to it), so the chunk runs the same branch-free code as the others: with
        // an `if` a texel, llvmpipe blended the whole tile with its old value under a mask
        // after each (nf4_backward 1.1x the time).
        let x = row_texels(x_tex, o0 / 4, last_t, rows.x - lane, last_row, lane);
        let outputs = vec4<i32>(o0 + i32(lane)) + vec4<i32>(0, 8, 16, 24);
        let o = min(outputs, vec4<i32>(last_o));
        let c0 = codes_at(w_tex, at, u32(t), o.x);
        let c1 = codes_at(w_tex, at, u32(t), o.y);
        let c2 = codes_at(w_tex, at, u32(t), o.z);
        let c3 = codes_at(w_tex, at, u32(t), o.w);
        let scales = vec4<f32>(scale_of(absmax_tex, at, b, o.x), scale_of(absmax_tex, at, b, o.y), scale_of(absmax_tex, at, b, o.z), scale_of(absmax_tex, at, b, o.w));
        let s = select(vec4<f32>(0.0), scales, outputs <= vec4<i32>(last_o));
        tile = texel_0(tile, x, weights_0_to_3(c0, s.x, word, shift, table));
        tile = texel_1(tile, x, weights_4_to_7(c0, s.x, word, shift, table));
        tile = texel_2(tile, x, weights_0_to_3(c1, s.y, word, shift, table));
        tile = texel_3(tile, x, weights_4_to_7(c1, s.y, word, shift, table));
        tile = texel_4(tile, x, weights_0_to_3(c2, s.z, word, shift, table));
        tile = texel_5(tile, x, weights_4_to_7(c2, s.z, word, shift, table));
        tile = texel_6(tile, x, weights_0_to_3(c3, s.w, word, shift, table));
        tile = texel_7(tile, x, weights_4_to_7(c3, s.w, word, shift, table));
    }
    // The adapter's term: column kk of a holds A[4j + kk, the lane's four inputs].
    for (var j = 0; j < i32(params.rank / 4u); j++) {
        let a = mat4x4<f32>(
            textureLoad(factor_tex, vec2<i32>(8 * t + i32(lane), 4 * j)),
            textureLoad(factor_tex, vec2<i32>(8 * t + i32(lane), 4 * j + 1)),
            textureLoad(factor_tex, vec2<i32>(8 * t + i32(lane), 4 * j + 2)),
            textureLoad(factor_tex, vec2<i32>(8 * t + i32(lane), 4 * j + 3)),
        );
        tile = tile_update(tile, params.scale * rows_at(lhs_tex, j, fetch), a);
    }
    store_tile(tile, rows.x - lane, texel * 32u + 4u * lane, params.n_in);
}
