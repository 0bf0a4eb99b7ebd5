// Portable NF4 dequant-matmuls (hardware GPUs), with nf4_matmul.wgsl's results (W in the GPU
// layout: codes of the flattened weight eight a u32 word, element 8w + j in bits 4j..4j+4;
// w_absmax[b] scales block b of `blocksize` elements), and a LoRA adapter's term as r more
// columns of k ([x | s·x_a] · [W | B]ᵀ forward, [dy | s·dy_b] · [W; A] backward):
//   nf4_gemm_forward:  y[t, o]  (+)= sum_i x[t, i] W[o, i] + s sum_j lhs[t, j] factor[o, j]
//                      (Y = X Wᵀ + s X_a Bᵀ, factor = B [out, r])
//   nf4_gemm_backward: dx[t, i] (+)= sum_o dy[t, o] W[o, i] + s sum_j lhs[t, j] factor[j, i]
//                      (dX = dY W + s dY_b A, factor = A [r, in])
// With r = 0 there is no term (lhs and factor are bound to any tensor and not read).
// Tiles of 64 x 64 outputs through workgroup memory (tile_product.wgsl, appended): each step
// of 16 along k stages 64 x 16 activations (k-contiguous reads) and decodes 16 x 64 weights
// once into the tile, so every weight is decoded once per 64 rows of activations, not once
// per row. When n_in is a multiple of 8 every row of W starts on a word: every invocation
// decodes four weights, half a code word, with their scale (neighbouring invocations read
// neighbouring words); otherwise each weight is decoded on its own. The code book is in
// workgroup memory (a private array indexed at run time lives in slow local memory on many
// GPUs), filled at the start; the block size is a pipeline constant, so dividing
// by it is a shift.
// Bank conflicts (32 banks): the forward's weight stores are 2-way (kk and kk + 8 of a column
// share a bank), the backward's vec4 stores conflict-free, the activations as tile_product.wgsl
// says.
//
// Bindings (group 0):
//   0 x         storage, read        f32 [T, in]     (dy [T, out] for the backward)
//   1 w         storage, read        u32 [ceil(out * in / 8)]  NF4 codes
//   2 w_absmax  storage, read        f32 [ceil(out * in / blocksize)]
//   3 lhs       storage, read        f32 [T, r]
//   4 factor    storage, read        f32 [out, r] forward, [r, in] backward
//   5 y         storage, read_write  f32 [T, out]    (dx [T, in] for the backward)
//   6 params    uniform              { rows (T), n_in, n_out, blocksize, r, scale }
// Dispatch: grid (ceil(out / 64), ceil(T / 64), 1) forward, (ceil(in / 64), ceil(T / 64), 1)
// backward, of 16 x 16 invocations.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

// Elements a scale covers (the weight's blocksize; a multiple of 8).
override BLOCKSIZE: u32 = 64u;

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    blocksize: u32,
    r: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> w_absmax: array<f32>;
@group(0) @binding(3) var<storage, read> lhs: array<f32>;
@group(0) @binding(4) var<storage, read> factor: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> book: array<f32, 16>;

var<private> NF4: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
);

/// The code book into workgroup memory, by every invocation at the start (the barrier orders
/// it before any decoding).
fn fill_book(flat: u32) {
    if flat < 16u {
        book[flat] = NF4[flat];
    }
    workgroupBarrier();
}

/// W at flattened index `idx`, decoded alone.
fn weight_at(idx: u32) -> f32 {
    let code = (w[idx / 8u] >> (4u * (idx % 8u))) & 15u;
    return book[code] * w_absmax[idx / BLOCKSIZE];
}

/// The four weights from flattened index `idx` (a multiple of 4, within a row of whole
/// words): half a code word, one scale.
fn four_weights(idx: u32) -> vec4<f32> {
    let half = w[idx / 8u] >> (4u * (idx % 8u));
    let codes = vec4<u32>(half, half >> 4u, half >> 8u, half >> 12u) & vec4<u32>(15u);
    let scale = w_absmax[idx / BLOCKSIZE];
    return vec4<f32>(book[codes.x], book[codes.y], book[codes.z], book[codes.w]) * scale;
}

/// Stage the activations x[row0.., k0..] of a row-major [rows, width] matrix: neighbouring
/// invocations read neighbouring k.
fn stage_rows(row0: u32, k0: u32, width: u32, flat: u32) {
    for (var s = 0u; s < 4u; s++) {
        let e = flat + 256u * s;
        let i = e / TILE_K;
        let kk = e % TILE_K;
        let m = row0 + i;
        let k = k0 + kk;
        var v = 0.0;
        if m < params.rows && k < width {
            v = x[m * width + k];
        }
        tile_a_set(i, kk, v);
    }
}

/// The low-rank term's k step j0..j0 + 16 (j < r): s·lhs[row0.., j] into tile_a and the
/// factor into tile_b, B[o, j] at (j, o) forward (j is the factor's unit stride) or A[j, i]
/// backward (i is). `width`: the outputs (forward) or inputs (backward).
fn stage_low_rank(row0: u32, col0: u32, j0: u32, width: u32, forward: bool, flat: u32) {
    let r = params.r;
    for (var s = 0u; s < 4u; s++) {
        let e = flat + 256u * s;
        let i = e / TILE_K;
        let kk = e % TILE_K;
        let m = row0 + i;
        let j = j0 + kk;
        var v = 0.0;
        if m < params.rows && j < r {
            v = params.scale * lhs[m * r + j];
        }
        tile_a_set(i, kk, v);
    }
    for (var s = 0u; s < 4u; s++) {
        let e = flat + 256u * s;
        var n = e / TILE_K;
        var kk = e % TILE_K;
        if !forward {
            n = e % TILE;
            kk = e / TILE;
        }
        let col = col0 + n;
        let j = j0 + kk;
        var v = 0.0;
        if col < width && j < r {
            if forward {
                v = factor[col * r + j];
            } else {
                v = factor[j * width + col];
            }
        }
        tile_b_set(kk, n, v);
    }
}

/// Add the low-rank term's tiles to acc.
fn low_rank_fma(
    acc: ptr<function, array<vec4<f32>, 4>>,
    row0: u32,
    col0: u32,
    width: u32,
    forward: bool,
    lid: vec3<u32>,
    flat: u32,
) {
    for (var j0 = 0u; j0 < params.r; j0 += TILE_K) {
        stage_low_rank(row0, col0, j0, width, forward, flat);
        workgroupBarrier();
        tile_fma(acc, lid.x, lid.y);
        workgroupBarrier();
    }
}

fn store(m: u32, n: u32, width: u32, value: f32) {
    let index = m * width + n;
    var v = value;
    if ACCUMULATE {
        v += y[index];
    }
    y[index] = v;
}

/// y[row0 + 4 ty + i, col0 + 4 tx + j] (+)= acc[i][j] within [rows, width].
fn store_tile(acc: array<vec4<f32>, 4>, row0: u32, col0: u32, width: u32, lid: vec3<u32>) {
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + 4u * lid.y + i;
        for (var j = 0u; j < 4u; j++) {
            let n = col0 + 4u * lid.x + j;
            if m < params.rows && n < width {
                store(m, n, width, acc[i][j]);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn nf4_gemm_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE; // first output
    let n_in = params.n_in;
    let n_out = params.n_out;
    let aligned = n_in % 8u == 0u;
    fill_book(flat);
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < n_in; k0 += TILE_K) {
        stage_rows(row0, k0, n_in, flat);
        // B(kk, j) = W[col0 + j, k0 + kk]: 64 outputs x 16 inputs.
        if aligned {
            // Invocation f: output j = f / 4, the four inputs from 4 (f % 4).
            let j = flat / 4u;
            let kq = 4u * (flat % 4u);
            let o = col0 + j;
            let k = k0 + kq;
            var v = vec4<f32>(0.0);
            if o < n_out && k < n_in {
                v = four_weights(o * n_in + k);
            }
            for (var q = 0u; q < 4u; q++) {
                tile_b_set(kq + q, j, v[q]);
            }
        } else {
            for (var s = 0u; s < 4u; s++) {
                let e = flat + 256u * s;
                let j = e / TILE_K;
                let kk = e % TILE_K;
                let o = col0 + j;
                let k = k0 + kk;
                var v = 0.0;
                if o < n_out && k < n_in {
                    v = weight_at(o * n_in + k);
                }
                tile_b_set(kk, j, v);
            }
        }
        workgroupBarrier();
        tile_fma(&acc, lid.x, lid.y);
        workgroupBarrier();
    }
    low_rank_fma(&acc, row0, col0, n_out, true, lid, flat);
    store_tile(acc, row0, col0, n_out, lid);
}

@compute @workgroup_size(16, 16)
fn nf4_gemm_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE; // first input
    let n_in = params.n_in;
    let n_out = params.n_out;
    let aligned = n_in % 8u == 0u;
    fill_book(flat);
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < n_out; k0 += TILE_K) {
        stage_rows(row0, k0, n_out, flat);
        // B(kk, j) = W[k0 + kk, col0 + j]: 16 outputs x 64 inputs.
        if aligned {
            // Invocation f: output kk = f / 16, inputs 4 (f % 16) .. +4: half a word, so
            // sixteen neighbouring invocations read eight neighbouring words.
            let kk = flat / 16u;
            let jq = 4u * (flat % 16u);
            let o = k0 + kk;
            let i = col0 + jq;
            var v = vec4<f32>(0.0);
            if o < n_out && i < n_in {
                v = four_weights(o * n_in + i);
            }
            tile_b[kk * ROW + jq / 4u] = vec4<T>(v);
        } else {
            for (var s = 0u; s < 4u; s++) {
                let e = flat + 256u * s;
                let kk = e / TILE;
                let j = e % TILE;
                let o = k0 + kk;
                let i = col0 + j;
                var v = 0.0;
                if o < n_out && i < n_in {
                    v = weight_at(o * n_in + i);
                }
                tile_b_set(kk, j, v);
            }
        }
        workgroupBarrier();
        tile_fma(&acc, lid.x, lid.y);
        workgroupBarrier();
    }
    low_rank_fma(&acc, row0, col0, n_in, false, lid, flat);
    store_tile(acc, row0, col0, n_in, lid);
}
