// The multiply-add steps the subgroup products share (matmul_tex_sg.wgsl and
// nf4_matmul_tex_sg.wgsl, which shaders.rs builds as their own file followed by this one):
// a lane's accumulators for four rows gain those rows' texel x (broadcast from the lane that
// fetched it) times the lane's 4x4 block of B; a subgroup's 32x32 tile of accumulators
// (`Tile`) gains one k-texel of its 32 rows, fetched either a texel of eight rows a fetch
// (`tile_update`) or eight texels of one row a fetch (`row_texels`, then `texel_0` ..
// `texel_7`: 128 contiguous bytes a fetch instead of eight rows' cache lines, about a tenth
// faster on lavapipe). No bindings, no entry point.

/// acc + x · w for the matrix w whose column kk holds the lane's four columns of B (weights)
/// at the texel's k = kk.
fn fma4(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(x.w), w[3], fma(vec4<f32>(x.z), w[2], fma(vec4<f32>(x.y), w[1], fma(vec4<f32>(x.x), w[0], acc))));
}

/// Rows 0..4 (lanes 0..4's texel x) of an eight-row group.
fn rows_0_to_3(acc: mat4x4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma4(acc[0], subgroupBroadcast(x, 0u), w),
        fma4(acc[1], subgroupBroadcast(x, 1u), w),
        fma4(acc[2], subgroupBroadcast(x, 2u), w),
        fma4(acc[3], subgroupBroadcast(x, 3u), w),
    );
}

/// Rows 4..8 (lanes 4..8's texel x) of an eight-row group.
fn rows_4_to_7(acc: mat4x4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma4(acc[0], subgroupBroadcast(x, 4u), w),
        fma4(acc[1], subgroupBroadcast(x, 5u), w),
        fma4(acc[2], subgroupBroadcast(x, 6u), w),
        fma4(acc[3], subgroupBroadcast(x, 7u), w),
    );
}

/// The subgroup's accumulators: acc[2g + h][i] holds row m0 + 8g + 4h + i.
// Indexed by constants only: with one loop-counter index (a store loop) llvmpipe kept the whole
// tile in memory and the kernels ran 3-4x slower.
struct Tile {
    acc: array<mat4x4<f32>, 8>,
}

/// The tile gains x · w, x the lanes' row texels (column g: rows m0 + 8g + l).
fn tile_update(tile: Tile, x: mat4x4<f32>, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = rows_0_to_3(t.acc[0], x[0], w);
    t.acc[1] = rows_4_to_7(t.acc[1], x[0], w);
    t.acc[2] = rows_0_to_3(t.acc[2], x[1], w);
    t.acc[3] = rows_4_to_7(t.acc[3], x[1], w);
    t.acc[4] = rows_0_to_3(t.acc[4], x[2], w);
    t.acc[5] = rows_4_to_7(t.acc[5], x[2], w);
    t.acc[6] = rows_0_to_3(t.acc[6], x[3], w);
    t.acc[7] = rows_4_to_7(t.acc[7], x[3], w);
    return t;
}

/// Eight consecutive texels of each of the subgroup's 32 rows: r[i], lane l holds texel
/// t + l of row m0 + i (rows past `last` clamped to it, texels past `last_t` to that one).
struct RowTexels {
    r: array<vec4<f32>, 32>,
}

// Written out: a loop here (or in the texel_* functions) indexes the array by a loop
// counter, and llvmpipe then ran the kernel about 90x slower.
fn row_texels(tex: texture_storage_2d<rgba32float, read>, t: i32, last_t: i32, m0: u32, last: i32, lane: u32) -> RowTexels {
    let texel = vec2<i32>(min(t + i32(lane), last_t), 0);
    let m = i32(m0);
    var x: RowTexels;
    x.r[0] = textureLoad(tex, texel + vec2<i32>(0, min(m, last)));
    x.r[1] = textureLoad(tex, texel + vec2<i32>(0, min(m + 1, last)));
    x.r[2] = textureLoad(tex, texel + vec2<i32>(0, min(m + 2, last)));
    x.r[3] = textureLoad(tex, texel + vec2<i32>(0, min(m + 3, last)));
    x.r[4] = textureLoad(tex, texel + vec2<i32>(0, min(m + 4, last)));
    x.r[5] = textureLoad(tex, texel + vec2<i32>(0, min(m + 5, last)));
    x.r[6] = textureLoad(tex, texel + vec2<i32>(0, min(m + 6, last)));
    x.r[7] = textureLoad(tex, texel + vec2<i32>(0, min(m + 7, last)));
    x.r[8] = textureLoad(tex, texel + vec2<i32>(0, min(m + 8, last)));
    x.r[9] = textureLoad(tex, texel + vec2<i32>(0, min(m + 9, last)));
    x.r[10] = textureLoad(tex, texel + vec2<i32>(0, min(m + 10, last)));
    x.r[11] = textureLoad(tex, texel + vec2<i32>(0, min(m + 11, last)));
    x.r[12] = textureLoad(tex, texel + vec2<i32>(0, min(m + 12, last)));
    x.r[13] = textureLoad(tex, texel + vec2<i32>(0, min(m + 13, last)));
    x.r[14] = textureLoad(tex, texel + vec2<i32>(0, min(m + 14, last)));
    x.r[15] = textureLoad(tex, texel + vec2<i32>(0, min(m + 15, last)));
    x.r[16] = textureLoad(tex, texel + vec2<i32>(0, min(m + 16, last)));
    x.r[17] = textureLoad(tex, texel + vec2<i32>(0, min(m + 17, last)));
    x.r[18] = textureLoad(tex, texel + vec2<i32>(0, min(m + 18, last)));
    x.r[19] = textureLoad(tex, texel + vec2<i32>(0, min(m + 19, last)));
    x.r[20] = textureLoad(tex, texel + vec2<i32>(0, min(m + 20, last)));
    x.r[21] = textureLoad(tex, texel + vec2<i32>(0, min(m + 21, last)));
    x.r[22] = textureLoad(tex, texel + vec2<i32>(0, min(m + 22, last)));
    x.r[23] = textureLoad(tex, texel + vec2<i32>(0, min(m + 23, last)));
    x.r[24] = textureLoad(tex, texel + vec2<i32>(0, min(m + 24, last)));
    x.r[25] = textureLoad(tex, texel + vec2<i32>(0, min(m + 25, last)));
    x.r[26] = textureLoad(tex, texel + vec2<i32>(0, min(m + 26, last)));
    x.r[27] = textureLoad(tex, texel + vec2<i32>(0, min(m + 27, last)));
    x.r[28] = textureLoad(tex, texel + vec2<i32>(0, min(m + 28, last)));
    x.r[29] = textureLoad(tex, texel + vec2<i32>(0, min(m + 29, last)));
    x.r[30] = textureLoad(tex, texel + vec2<i32>(0, min(m + 30, last)));
    x.r[31] = textureLoad(tex, texel + vec2<i32>(0, min(m + 31, last)));
    return x;
}

/// Rows 4a .. 4a + 4's accumulators gain their texel values x0 .. x3 (broadcast) times w.
fn fma_rows(acc: mat4x4<f32>, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, w: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(fma4(acc[0], x0, w), fma4(acc[1], x1, w), fma4(acc[2], x2, w), fma4(acc[3], x3, w));
}

/// The tile gains texel j of `x` (lane j's) times w, for j = 0. subgroupBroadcast takes a
/// constant lane, so there is one of these a lane, texel_0 .. texel_7, the same but for j.
fn texel_0(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 0u), subgroupBroadcast(x.r[1], 0u), subgroupBroadcast(x.r[2], 0u), subgroupBroadcast(x.r[3], 0u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 0u), subgroupBroadcast(x.r[5], 0u), subgroupBroadcast(x.r[6], 0u), subgroupBroadcast(x.r[7], 0u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 0u), subgroupBroadcast(x.r[9], 0u), subgroupBroadcast(x.r[10], 0u), subgroupBroadcast(x.r[11], 0u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 0u), subgroupBroadcast(x.r[13], 0u), subgroupBroadcast(x.r[14], 0u), subgroupBroadcast(x.r[15], 0u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 0u), subgroupBroadcast(x.r[17], 0u), subgroupBroadcast(x.r[18], 0u), subgroupBroadcast(x.r[19], 0u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 0u), subgroupBroadcast(x.r[21], 0u), subgroupBroadcast(x.r[22], 0u), subgroupBroadcast(x.r[23], 0u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 0u), subgroupBroadcast(x.r[25], 0u), subgroupBroadcast(x.r[26], 0u), subgroupBroadcast(x.r[27], 0u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 0u), subgroupBroadcast(x.r[29], 0u), subgroupBroadcast(x.r[30], 0u), subgroupBroadcast(x.r[31], 0u), w);
    return t;
}

/// `texel_0` for texel 1.
fn texel_1(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 1u), subgroupBroadcast(x.r[1], 1u), subgroupBroadcast(x.r[2], 1u), subgroupBroadcast(x.r[3], 1u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 1u), subgroupBroadcast(x.r[5], 1u), subgroupBroadcast(x.r[6], 1u), subgroupBroadcast(x.r[7], 1u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 1u), subgroupBroadcast(x.r[9], 1u), subgroupBroadcast(x.r[10], 1u), subgroupBroadcast(x.r[11], 1u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 1u), subgroupBroadcast(x.r[13], 1u), subgroupBroadcast(x.r[14], 1u), subgroupBroadcast(x.r[15], 1u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 1u), subgroupBroadcast(x.r[17], 1u), subgroupBroadcast(x.r[18], 1u), subgroupBroadcast(x.r[19], 1u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 1u), subgroupBroadcast(x.r[21], 1u), subgroupBroadcast(x.r[22], 1u), subgroupBroadcast(x.r[23], 1u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 1u), subgroupBroadcast(x.r[25], 1u), subgroupBroadcast(x.r[26], 1u), subgroupBroadcast(x.r[27], 1u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 1u), subgroupBroadcast(x.r[29], 1u), subgroupBroadcast(x.r[30], 1u), subgroupBroadcast(x.r[31], 1u), w);
    return t;
}

/// `texel_0` for texel 2.
fn texel_2(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 2u), subgroupBroadcast(x.r[1], 2u), subgroupBroadcast(x.r[2], 2u), subgroupBroadcast(x.r[3], 2u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 2u), subgroupBroadcast(x.r[5], 2u), subgroupBroadcast(x.r[6], 2u), subgroupBroadcast(x.r[7], 2u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 2u), subgroupBroadcast(x.r[9], 2u), subgroupBroadcast(x.r[10], 2u), subgroupBroadcast(x.r[11], 2u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 2u), subgroupBroadcast(x.r[13], 2u), subgroupBroadcast(x.r[14], 2u), subgroupBroadcast(x.r[15], 2u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 2u), subgroupBroadcast(x.r[17], 2u), subgroupBroadcast(x.r[18], 2u), subgroupBroadcast(x.r[19], 2u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 2u), subgroupBroadcast(x.r[21], 2u), subgroupBroadcast(x.r[22], 2u), subgroupBroadcast(x.r[23], 2u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 2u), subgroupBroadcast(x.r[25], 2u), subgroupBroadcast(x.r[26], 2u), subgroupBroadcast(x.r[27], 2u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 2u), subgroupBroadcast(x.r[29], 2u), subgroupBroadcast(x.r[30], 2u), subgroupBroadcast(x.r[31], 2u), w);
    return t;
}

/// `texel_0` for texel 3.
fn texel_3(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 3u), subgroupBroadcast(x.r[1], 3u), subgroupBroadcast(x.r[2], 3u), subgroupBroadcast(x.r[3], 3u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 3u), subgroupBroadcast(x.r[5], 3u), subgroupBroadcast(x.r[6], 3u), subgroupBroadcast(x.r[7], 3u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 3u), subgroupBroadcast(x.r[9], 3u), subgroupBroadcast(x.r[10], 3u), subgroupBroadcast(x.r[11], 3u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 3u), subgroupBroadcast(x.r[13], 3u), subgroupBroadcast(x.r[14], 3u), subgroupBroadcast(x.r[15], 3u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 3u), subgroupBroadcast(x.r[17], 3u), subgroupBroadcast(x.r[18], 3u), subgroupBroadcast(x.r[19], 3u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 3u), subgroupBroadcast(x.r[21], 3u), subgroupBroadcast(x.r[22], 3u), subgroupBroadcast(x.r[23], 3u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 3u), subgroupBroadcast(x.r[25], 3u), subgroupBroadcast(x.r[26], 3u), subgroupBroadcast(x.r[27], 3u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 3u), subgroupBroadcast(x.r[29], 3u), subgroupBroadcast(x.r[30], 3u), subgroupBroadcast(x.r[31], 3u), w);
    return t;
}

/// `texel_0` for texel 4.
fn texel_4(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 4u), subgroupBroadcast(x.r[1], 4u), subgroupBroadcast(x.r[2], 4u), subgroupBroadcast(x.r[3], 4u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 4u), subgroupBroadcast(x.r[5], 4u), subgroupBroadcast(x.r[6], 4u), subgroupBroadcast(x.r[7], 4u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 4u), subgroupBroadcast(x.r[9], 4u), subgroupBroadcast(x.r[10], 4u), subgroupBroadcast(x.r[11], 4u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 4u), subgroupBroadcast(x.r[13], 4u), subgroupBroadcast(x.r[14], 4u), subgroupBroadcast(x.r[15], 4u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 4u), subgroupBroadcast(x.r[17], 4u), subgroupBroadcast(x.r[18], 4u), subgroupBroadcast(x.r[19], 4u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 4u), subgroupBroadcast(x.r[21], 4u), subgroupBroadcast(x.r[22], 4u), subgroupBroadcast(x.r[23], 4u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 4u), subgroupBroadcast(x.r[25], 4u), subgroupBroadcast(x.r[26], 4u), subgroupBroadcast(x.r[27], 4u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 4u), subgroupBroadcast(x.r[29], 4u), subgroupBroadcast(x.r[30], 4u), subgroupBroadcast(x.r[31], 4u), w);
    return t;
}

/// `texel_0` for texel 5.
fn texel_5(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 5u), subgroupBroadcast(x.r[1], 5u), subgroupBroadcast(x.r[2], 5u), subgroupBroadcast(x.r[3], 5u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 5u), subgroupBroadcast(x.r[5], 5u), subgroupBroadcast(x.r[6], 5u), subgroupBroadcast(x.r[7], 5u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 5u), subgroupBroadcast(x.r[9], 5u), subgroupBroadcast(x.r[10], 5u), subgroupBroadcast(x.r[11], 5u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 5u), subgroupBroadcast(x.r[13], 5u), subgroupBroadcast(x.r[14], 5u), subgroupBroadcast(x.r[15], 5u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 5u), subgroupBroadcast(x.r[17], 5u), subgroupBroadcast(x.r[18], 5u), subgroupBroadcast(x.r[19], 5u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 5u), subgroupBroadcast(x.r[21], 5u), subgroupBroadcast(x.r[22], 5u), subgroupBroadcast(x.r[23], 5u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 5u), subgroupBroadcast(x.r[25], 5u), subgroupBroadcast(x.r[26], 5u), subgroupBroadcast(x.r[27], 5u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 5u), subgroupBroadcast(x.r[29], 5u), subgroupBroadcast(x.r[30], 5u), subgroupBroadcast(x.r[31], 5u), w);
    return t;
}

/// `texel_0` for texel 6.
fn texel_6(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 6u), subgroupBroadcast(x.r[1], 6u), subgroupBroadcast(x.r[2], 6u), subgroupBroadcast(x.r[3], 6u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 6u), subgroupBroadcast(x.r[5], 6u), subgroupBroadcast(x.r[6], 6u), subgroupBroadcast(x.r[7], 6u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 6u), subgroupBroadcast(x.r[9], 6u), subgroupBroadcast(x.r[10], 6u), subgroupBroadcast(x.r[11], 6u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 6u), subgroupBroadcast(x.r[13], 6u), subgroupBroadcast(x.r[14], 6u), subgroupBroadcast(x.r[15], 6u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 6u), subgroupBroadcast(x.r[17], 6u), subgroupBroadcast(x.r[18], 6u), subgroupBroadcast(x.r[19], 6u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 6u), subgroupBroadcast(x.r[21], 6u), subgroupBroadcast(x.r[22], 6u), subgroupBroadcast(x.r[23], 6u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 6u), subgroupBroadcast(x.r[25], 6u), subgroupBroadcast(x.r[26], 6u), subgroupBroadcast(x.r[27], 6u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 6u), subgroupBroadcast(x.r[29], 6u), subgroupBroadcast(x.r[30], 6u), subgroupBroadcast(x.r[31], 6u), w);
    return t;
}

/// `texel_0` for texel 7.
fn texel_7(tile: Tile, x: RowTexels, w: mat4x4<f32>) -> Tile {
    var t = tile;
    t.acc[0] = fma_rows(t.acc[0], subgroupBroadcast(x.r[0], 7u), subgroupBroadcast(x.r[1], 7u), subgroupBroadcast(x.r[2], 7u), subgroupBroadcast(x.r[3], 7u), w);
    t.acc[1] = fma_rows(t.acc[1], subgroupBroadcast(x.r[4], 7u), subgroupBroadcast(x.r[5], 7u), subgroupBroadcast(x.r[6], 7u), subgroupBroadcast(x.r[7], 7u), w);
    t.acc[2] = fma_rows(t.acc[2], subgroupBroadcast(x.r[8], 7u), subgroupBroadcast(x.r[9], 7u), subgroupBroadcast(x.r[10], 7u), subgroupBroadcast(x.r[11], 7u), w);
    t.acc[3] = fma_rows(t.acc[3], subgroupBroadcast(x.r[12], 7u), subgroupBroadcast(x.r[13], 7u), subgroupBroadcast(x.r[14], 7u), subgroupBroadcast(x.r[15], 7u), w);
    t.acc[4] = fma_rows(t.acc[4], subgroupBroadcast(x.r[16], 7u), subgroupBroadcast(x.r[17], 7u), subgroupBroadcast(x.r[18], 7u), subgroupBroadcast(x.r[19], 7u), w);
    t.acc[5] = fma_rows(t.acc[5], subgroupBroadcast(x.r[20], 7u), subgroupBroadcast(x.r[21], 7u), subgroupBroadcast(x.r[22], 7u), subgroupBroadcast(x.r[23], 7u), w);
    t.acc[6] = fma_rows(t.acc[6], subgroupBroadcast(x.r[24], 7u), subgroupBroadcast(x.r[25], 7u), subgroupBroadcast(x.r[26], 7u), subgroupBroadcast(x.r[27], 7u), w);
    t.acc[7] = fma_rows(t.acc[7], subgroupBroadcast(x.r[28], 7u), subgroupBroadcast(x.r[29], 7u), subgroupBroadcast(x.r[30], 7u), subgroupBroadcast(x.r[31], 7u), w);
    return t;
}
