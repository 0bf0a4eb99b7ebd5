// f32 matrix product for software devices whose subgroups are eight lanes wide (lavapipe at
// its default 256-bit vectors), both operands read from textures:
//   c[m, n] = alpha * sum_k A(m, k) * B(k, n)  (+ c[m, n] with the ACCUMULATE constant)
// Same bindings (c as vec4s; and a tile queue), texture layouts (B's stored rows instead with
// B_ROWS, see b_tex) and results (bit for bit: the same fused multiply-adds in the same
// order) as matmul_tex in matmul_tex.wgsl, for
// outputs whose rows are c_sn = 1 and whose N, c_sm and c_off are multiples of four (a
// lane stores four consecutive columns of a row as one vec4: llvmpipe stores to a storage
// buffer in a loop over the lanes, one loop a store); the graph picks this one for those
// when the device has subgroups of exactly eight lanes. Built followed by rows_fma_sg.wgsl
// (Tile, tile_update, row_texels, texel_0 .. texel_7) and tile_queue.wgsl.
//
// Why subgroups: llvmpipe runs a subgroup as one SIMD register, so subgroupBroadcast with a
// constant lane is a register shuffle, while every texel fetch is a gather. The subgroup
// fetches eight k-texels of each of its 32 rows of A at a time, one row a fetch
// (`row_texels`; the last KT % 8 texels a texel of eight rows a fetch, `tile_update`), and
// the lanes share them by broadcast; each lane owns its own columns of B. An 8x16 tile an
// invocation fetched 24 texels per 512 multiply-adds; here an invocation fetches 8 for 512
// (at 1024x576x1536 on lavapipe, packs included: 92 ms -> 43 ms).
//
// Bindings (group 0):
//   0 c       storage, read_write  f32 as vec4s: element (m, n) at c_off + m * c_sm + n
//   1 params  uniform              { M, N, KT (texels along k = ceil(K / 4)),
//                                    alpha, c_sm, c_sn, c_off }
//   2 a_tex   texture, read-only   rgba32float [M rows, KT texels]: texel (t, m) = A(m, 4t..4t+4)
//   3 b_tex   texture, read-only   rgba32float [N rows, KT texels]: texel (t, n) = B(4t..4t+4, n);
//                                      with B_ROWS, B's rows as stored instead, [K rows, N / 4
//                                      texels]: texel (j, k) = B(k, 4j..4j+4) (K % 4 == 0)
//  15 queue   tile_queue.wgsl's
// Dispatch: `Dispatch::TileQueue` workgroups of 8 invocations (one subgroup), taking 32x32
// tiles of c (ceil(M / 32) · ceil(N / 32), row-major) from the queue: rows m0 + 8g + i (g < 4
// texel groups, i < 8 lanes) and, for lane l, columns n0 + 4l + j (j < 4). Accumulator
// tile.acc[2g + h][i] holds row m0 + 8g + 4h + i, its component j column n0 + 4l + j. In a
// tile that straddles the edge, rows and columns past it are clamped to the last one:
// computed, never stored.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    M: u32,
    N: u32,
    KT: u32,
    alpha: f32,
    c_sm: u32,
    c_sn: u32,
    c_off: u32,
}

// B's texture holds B's rows (see b_tex above): a [K, N] operand stored so, like an lm-head
// chunk in the backward, needs no transposing pack (and its forward's pack of the same rows
// serves). The lane's four columns at a k are then one texel: the same values, the same bits.
override B_ROWS: bool = false;

@group(0) @binding(0) var<storage, read_write> c: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var b_tex: texture_storage_2d<rgba32float, read>;

fn a_at(t: i32, row: i32) -> vec4<f32> {
    return textureLoad(a_tex, vec2<i32>(t, row));
}

/// The lane's four columns at texel t, transposed: column kk holds k = 4t + kk.
fn b_group(t: i32, cols: vec4<i32>) -> mat4x4<f32> {
    if B_ROWS {
        // cols.x is a multiple of four (N % 4 == 0), or N - 1 past the edge: the last texel.
        let j = cols.x / 4;
        return mat4x4<f32>(
            textureLoad(b_tex, vec2<i32>(j, 4 * t)),
            textureLoad(b_tex, vec2<i32>(j, 4 * t + 1)),
            textureLoad(b_tex, vec2<i32>(j, 4 * t + 2)),
            textureLoad(b_tex, vec2<i32>(j, 4 * t + 3)),
        );
    }
    return transpose(mat4x4<f32>(
        textureLoad(b_tex, vec2<i32>(t, cols.x)),
        textureLoad(b_tex, vec2<i32>(t, cols.y)),
        textureLoad(b_tex, vec2<i32>(t, cols.z)),
        textureLoad(b_tex, vec2<i32>(t, cols.w)),
    ));
}

@compute @workgroup_size(8)
fn matmul_tex_sg(@builtin(subgroup_invocation_id) lane: u32) {
    let col_tiles = (params.N + 31u) / 32u;
    let tiles = (params.M + 31u) / 32u * col_tiles;
    for (var tile = next_tile(lane); tile < tiles; tile = next_tile(lane)) {
        product_tile(tile / col_tiles * 32u, tile % col_tiles * 32u + 4u * lane, lane);
    }
}

/// Rows m0 .. m0 + 32 of c, the lane's columns n0 .. n0 + 4.
fn product_tile(m0: u32, n0: u32, lane: u32) {
    let last_m = i32(params.M) - 1;
    let rows = min(vec4<i32>(i32(m0 + lane)) + vec4<i32>(0, 8, 16, 24), vec4<i32>(last_m));
    let cols = min(vec4<i32>(i32(n0)) + vec4<i32>(0, 1, 2, 3), vec4<i32>(i32(params.N) - 1));
    var tile: Tile;
    let blocks = i32(params.KT) / 8;
    for (var t0 = 0; t0 < 8 * blocks; t0 += 8) {
        let a = row_texels(a_tex, t0, i32(params.KT) - 1, m0, last_m, lane);
        tile = texel_0(tile, a, b_group(t0, cols));
        tile = texel_1(tile, a, b_group(t0 + 1, cols));
        tile = texel_2(tile, a, b_group(t0 + 2, cols));
        tile = texel_3(tile, a, b_group(t0 + 3, cols));
        tile = texel_4(tile, a, b_group(t0 + 4, cols));
        tile = texel_5(tile, a, b_group(t0 + 5, cols));
        tile = texel_6(tile, a, b_group(t0 + 6, cols));
        tile = texel_7(tile, a, b_group(t0 + 7, cols));
    }
    for (var t = 8 * blocks; t < i32(params.KT); t++) {
        let a = mat4x4<f32>(a_at(t, rows.x), a_at(t, rows.y), a_at(t, rows.z), a_at(t, rows.w));
        tile = tile_update(tile, a, b_group(t, cols));
    }
    store_rows(m0, n0, tile.acc[0]);
    store_rows(m0 + 4u, n0, tile.acc[1]);
    store_rows(m0 + 8u, n0, tile.acc[2]);
    store_rows(m0 + 12u, n0, tile.acc[3]);
    store_rows(m0 + 16u, n0, tile.acc[4]);
    store_rows(m0 + 20u, n0, tile.acc[5]);
    store_rows(m0 + 24u, n0, tile.acc[6]);
    store_rows(m0 + 28u, n0, tile.acc[7]);
}

/// acc[i] is row m + i, columns n0 .. n0 + 4 (N % 4 == 0: all in or all out).
fn store_rows(m: u32, n0: u32, acc: mat4x4<f32>) {
    if n0 >= params.N {
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        if m + i < params.M {
            let index = (params.c_off + (m + i) * params.c_sm + n0) / 4u;
            var v = params.alpha * acc[i];
            if ACCUMULATE {
                v += c[index];
            }
            c[index] = v;
        }
    }
}
