// The portable products' shared tile (appended to gemm.wgsl and nf4_gemm.wgsl, which stage
// the operands): a workgroup of SIDE x SIDE invocations computes a TILE x TILE block of
// C = A · B (TILE = 4 SIDE), TILE_K values of k at a time staged in workgroup memory:
//   tile_a[kk * ROW + i / 4][i % 4] = A(row0 + i, k0 + kk)    i < TILE, kk < TILE_K
//   tile_b[kk * ROW + j / 4][j % 4] = B(k0 + kk, col0 + j)    j < TILE
// with zeros past the matrices' ends. A k row is TILE values and one vec4 of padding
// (ROW = SIDE + 1 vec4s), so that invocations staging neighbouring k of one row (an operand
// whose k is its unit stride) write to different memory banks. Invocation (tx, ty) keeps the
// 4 x 4 outputs of rows row0 + 4 ty .. +4 and columns col0 + 4 tx .. +4 in four vec4
// registers and reads one vec4 of each tile a k: the SIDE invocations of a workgroup row read
// the same vec4 of tile_a (a broadcast) and neighbouring vec4s of tile_b (no bank
// conflicts), 16 multiply-adds for two loads. The kernels decide how to read global memory so
// that neighbouring invocations read neighbouring addresses whatever the operand's layout
// (coalesced), and decode quantized operands once a tile here rather than once an output.
//
// SIDE and TILE_K are pipeline constants (ops::matmul::GemmTiles chooses them for the f32
// product: 32 x 32 tiles for products with few outputs, k steps of 32 where the device has
// the workgroup memory). The tiles take 2 TILE_K (SIDE + 1) vec4s: 8.5 KiB in f32 at the
// defaults (64 x 64, TILE_K 16), about half of WebGPU's guaranteed 16 KiB; half that in f16.
// nf4_gemm.wgsl runs at the defaults only (its decoding assumes them).

override SIDE: u32 = 16u;
override TILE_K: u32 = 16u;
override TILE: u32 = 4u * SIDE;
/// vec4s a k row of a tile takes: TILE / 4 and one of padding.
override ROW: u32 = SIDE + 1u;

// T: f32, or f16 where asked for (tile_f32.wgsl, tile_f16.wgsl); sums are f32 either way.
/// vec4s a tile takes: [TILE_K][ROW].
override TILE_VEC4S: u32 = TILE_K * ROW;
var<workgroup> tile_a: array<vec4<T>, TILE_VEC4S>;
var<workgroup> tile_b: array<vec4<T>, TILE_VEC4S>;

/// acc[i] (row 4 ty + i, columns 4 tx .. +4) += the staged tiles' product.
fn tile_fma(acc: ptr<function, array<vec4<f32>, 4>>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < TILE_K; kk++) {
        let a4 = vec4<f32>(tile_a[kk * ROW + ty]);
        let b4 = vec4<f32>(tile_b[kk * ROW + tx]);
        (*acc)[0] = fma(vec4<f32>(a4.x), b4, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(a4.y), b4, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(a4.z), b4, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(a4.w), b4, (*acc)[3]);
    }
}

/// Place A(row0 + i, k0 + kk) (or B(k0 + kk, col0 + i)) in a tile.
fn tile_a_set(i: u32, kk: u32, v: f32) {
    tile_a[kk * ROW + i / 4u][i % 4u] = T(v);
}

fn tile_b_set(kk: u32, j: u32, v: f32) {
    tile_b[kk * ROW + j / 4u][j % 4u] = T(v);
}
