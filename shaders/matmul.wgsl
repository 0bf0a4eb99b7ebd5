// f32 matrix product with strided operands (so any transpose is free):
//   c[m, n] = alpha * sum_k A(m, k) * B(k, n)  (+ c[m, n] with the ACCUMULATE constant)
//   A(m, k) = a[a_off + m * a_sm + k * a_sk],  B(k, n) = b[b_off + k * b_sk + n * b_sn],
//   c row-major [M, N]. The offsets let a product use a block of rows of a larger tensor
//   (a vocabulary chunk of the lm-head weight).
//
// Bindings (group 0):
//   0 a       storage, read        f32, as the strides say
//   1 b       storage, read        f32, as the strides say
//   2 c       storage, read_write  f32[M, N]
//   3 params  uniform              { M, N, K, a_sm, a_sk, b_sk, b_sn, alpha,
//                                    a_off, b_off }
// The software devices' product (lavapipe, SwiftShader): registers only, no barriers (there
// products with both sides >= 64 run on matmul_tex.wgsl instead; hardware GPUs run gemm.wgsl).
// A second entry point, matmul_vec, for M = 1 (decoding one token): linear dispatch,
// ceil(N / 64) workgroups of 64, one column of c each, a plain loop over K.
// Dispatch (matmul): grid (ceil(N / 64), ceil(M / 32), 1) of 8x8 invocations. Each invocation keeps a
// 4x8 tile of c in registers (two mat4x4 updated by fused outer products): rows
// wg.y*32 + lid.y + 8i (i < 4), columns wg.x*64 + lid.x + 8j (j < 8), so the eight
// neighbouring invocations of a row read neighbouring columns of b and write neighbouring
// columns of c. No workgroup memory, no barriers (the software-device variant). On lavapipe
// every per-invocation value takes a whole SIMD register: 4x8 measured faster than 8x8
// (spills) and 4x4 (more loads per multiply-add).

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
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

fn a_at(row: u32, k: u32) -> f32 {
    return a[params.a_off + row + k * params.a_sk];
}

fn b_at(k: u32, col: u32) -> f32 {
    return b[params.b_off + k * params.b_sk + col];
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

@compute @workgroup_size(8, 8)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wg.y * 32u + lid.y;
    let n0 = wg.x * 64u + lid.x;
    // Rows m0 + 8i (i < 4) and columns n0 + 8j (j < 8, in two halves of four). Out-of-range
    // rows and columns are clamped to the last one: they compute values that are never
    // written, and the loop needs no branches.
    let step = vec4<u32>(0u, 8u, 16u, 24u);
    let rows = min(vec4<u32>(m0) + step, vec4<u32>(params.M - 1u)) * params.a_sm;
    let cols_lo = min(vec4<u32>(n0) + step, vec4<u32>(params.N - 1u)) * params.b_sn;
    let cols_hi = min(vec4<u32>(n0 + 32u) + step, vec4<u32>(params.N - 1u)) * params.b_sn;
    // acc_l / acc_h: the low and high column halves; column j of a matrix is output column j
    // of the half, row i is output row i.
    var acc_l = mat4x4<f32>();
    var acc_h = mat4x4<f32>();
    // Element indices of the current k, advanced by the strides instead of recomputed.
    var ia = rows + vec4<u32>(params.a_off);
    var ib_lo = cols_lo + vec4<u32>(params.b_off);
    var ib_hi = cols_hi + vec4<u32>(params.b_off);
    let da = vec4<u32>(params.a_sk);
    let db = vec4<u32>(params.b_sk);
    for (var k = 0u; k < params.K; k++) {
        let av = vec4<f32>(a[ia.x], a[ia.y], a[ia.z], a[ia.w]);
        let b_lo = vec4<f32>(b[ib_lo.x], b[ib_lo.y], b[ib_lo.z], b[ib_lo.w]);
        let b_hi = vec4<f32>(b[ib_hi.x], b[ib_hi.y], b[ib_hi.z], b[ib_hi.w]);
        acc_l = fma_outer(acc_l, av, b_lo);
        acc_h = fma_outer(acc_h, av, b_hi);
        ia += da;
        ib_lo += db;
        ib_hi += db;
    }
    for (var j = 0u; j < 4u; j++) {
        for (var i = 0u; i < 4u; i++) {
            store(m0 + 8u * i, n0 + 8u * j, acc_l[j][i]);
            store(m0 + 8u * i, n0 + 32u + 8u * j, acc_h[j][i]);
        }
    }
}

fn store(m: u32, n: u32, value: f32) {
    if m < params.M && n < params.N {
        var v = params.alpha * value;
        if ACCUMULATE {
            v += c[m * params.N + n];
        }
        c[m * params.N + n] = v;
    }
}

@compute @workgroup_size(64)
fn matmul_vec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let n = (wg.x + wg.y * nwg.x) * 64u + lid;
    if n >= params.N {
        return;
    }
    let b_col = params.b_off + n * params.b_sn;
    var acc = 0.0;
    for (var k = 0u; k < params.K; k++) {
        acc = fma(a[params.a_off + k * params.a_sk], b[b_col + k * params.b_sk], acc);
    }
    var v = params.alpha * acc;
    if ACCUMULATE {
        v += c[n];
    }
    c[n] = v;
}
