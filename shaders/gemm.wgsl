// Portable f32 product (hardware GPUs): c = alpha · A · B (+ c with the ACCUMULATE constant),
// A and B strided as in matmul.wgsl (any transpose is free):
//   A(m, k) = a[a_off + m * a_sm + k * a_sk],  B(k, n) = b[b_off + k * b_sk + n * b_sn],
//   c row-major [M, N].
// Tiles of TILE x TILE outputs through workgroup memory (tile_product.wgsl, appended; TILE
// and TILE_K are pipeline constants, ops::matmul::GemmTiles). Each
// operand is staged in the order its memory runs: along k when k is its unit stride (A
// row-major, B transposed), along rows or columns otherwise, so neighbouring invocations read
// neighbouring floats whatever the transpose.
// Split-K: workgroup z sums k in [z * k_chunk, min(K, (z + 1) * k_chunk)). With more than one
// split (num_workgroups.z > 1) it writes its raw partial sum to c[z * M * N + m * N + n] and
// split_sum.wgsl adds the partials into the output (applying alpha, and adding into c with ACCUMULATE); this is
// for products with few outputs and a long k (the LoRA factors' gradients, k = tokens),
// which would otherwise keep a handful of workgroups busy.
//
// Bindings (group 0):
//   0 a       storage, read        f32, as the strides say
//   1 b       storage, read        f32, as the strides say
//   2 c       storage, read_write  f32[M, N] (f32[splits, M, N] when split)
//   3 params  uniform              { M, N, K, a_sm, a_sk, b_sk, b_sn, alpha,
//                                    a_off, b_off, k_chunk }
// Dispatch: grid (ceil(N / TILE), ceil(M / TILE), splits) of SIDE x SIDE invocations.

// Add into the output instead of storing it (a node with this constant set reads its outputs:
// crate::graph::ACCUMULATE).
override ACCUMULATE: bool = false;

struct Params {
    M: u32,
    N: u32,
    K: u32,
    a_sm: u32,
    a_sk: u32,
    b_sk: u32,
    b_sn: u32,
    alpha: f32,
    a_off: u32,
    b_off: u32,
    k_chunk: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

/// Values of each operand an invocation stages a k step: TILE x TILE_K over SIDE x SIDE.
override STAGED: u32 = 4u * TILE_K / SIDE;

/// Stage A(row0.., k0..) for k below k_end.
fn stage_a(row0: u32, k0: u32, k_end: u32, flat: u32) {
    for (var s = 0u; s < STAGED; s++) {
        let e = flat + SIDE * SIDE * s;
        var i = e % TILE;
        var kk = e / TILE;
        if params.a_sk == 1u {
            i = e / TILE_K;
            kk = e % TILE_K;
        }
        let m = row0 + i;
        let k = k0 + kk;
        var v = 0.0;
        if m < params.M && k < k_end {
            v = a[params.a_off + m * params.a_sm + k * params.a_sk];
        }
        tile_a_set(i, kk, v);
    }
}

/// Stage B(k0.., col0..) for k below k_end.
fn stage_b(col0: u32, k0: u32, k_end: u32, flat: u32) {
    for (var s = 0u; s < STAGED; s++) {
        let e = flat + SIDE * SIDE * s;
        var j = e % TILE;
        var kk = e / TILE;
        if params.b_sn != 1u && params.b_sk == 1u {
            j = e / TILE_K;
            kk = e % TILE_K;
        }
        let n = col0 + j;
        let k = k0 + kk;
        var v = 0.0;
        if n < params.N && k < k_end {
            v = b[params.b_off + k * params.b_sk + n * params.b_sn];
        }
        tile_b_set(kk, j, v);
    }
}

@compute @workgroup_size(SIDE, SIDE)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let k_begin = wg.z * params.k_chunk;
    let k_end = min(params.K, k_begin + params.k_chunk);
    var acc: array<vec4<f32>, 4>;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        stage_a(row0, k0, k_end, flat);
        stage_b(col0, k0, k_end, flat);
        workgroupBarrier();
        tile_fma(&acc, lid.x, lid.y);
        workgroupBarrier();
    }
    let split = nwg.z > 1u;
    let mn = params.M * params.N;
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + 4u * lid.y + i;
        for (var j = 0u; j < 4u; j++) {
            let n = col0 + 4u * lid.x + j;
            if m < params.M && n < params.N {
                let index = m * params.N + n;
                if split {
                    c[wg.z * mn + index] = acc[i][j];
                } else {
                    var v = params.alpha * acc[i][j];
                    if ACCUMULATE {
                        v += c[index];
                    }
                    c[index] = v;
                }
            }
        }
    }
}
