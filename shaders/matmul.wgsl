// f32 matrix product with strided operands (so any transpose is free):
//   c[m, n] = alpha * sum_k A(m, k) * B(k, n)  (+ c[m, n] when params.accumulate != 0)
//   A(m, k) = a[a_off + m * a_sm + k * a_sk],  B(k, n) = b[b_off + k * b_sk + n * b_sn],
//   c row-major [M, N]. The offsets let a product use a block of rows of a larger tensor
//   (a vocabulary chunk of the lm-head weight).
//
// Bindings (group 0):
//   0 a       storage, read        f32, as the strides say
//   1 b       storage, read        f32, as the strides say
//   2 c       storage, read_write  f32[M, N]
//   3 params  uniform              { M, N, K, a_sm, a_sk, b_sk, b_sn, accumulate, alpha,
//                                    a_off, b_off }
// Dispatch: grid (ceil(N / 64), ceil(M / 32), 1) of 8x8 invocations. Each invocation keeps a
// 4x8 tile of c in registers (two mat4x4 updated by outer products): rows
// wg.y*32 + lid.y + 8i (i < 4), columns wg.x*64 + lid.x + 8j (j < 8), so the eight
// neighbouring invocations of a row read neighbouring columns of b and write neighbouring
// columns of c. No workgroup memory, no barriers (the software-device variant). On lavapipe
// every per-invocation value takes a whole SIMD register: 4x8 measured faster than 8x8
// (spills) and 4x4 (more loads per multiply-add).

struct Params {
    M: u32,
    N: u32,
    K: u32,
    a_sm: u32,
    a_sk: u32,
    b_sk: u32,
    b_sn: u32,
    accumulate: u32,
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

/// The outer product u vᵀ as a matrix whose column j is u * v[j].
fn outer(u: vec4<f32>, v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(u * v.x, u * v.y, u * v.z, u * v.w);
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
    for (var k = 0u; k < params.K; k++) {
        let av = vec4<f32>(a_at(rows.x, k), a_at(rows.y, k), a_at(rows.z, k), a_at(rows.w, k));
        let b_lo = vec4<f32>(b_at(k, cols_lo.x), b_at(k, cols_lo.y), b_at(k, cols_lo.z), b_at(k, cols_lo.w));
        let b_hi = vec4<f32>(b_at(k, cols_hi.x), b_at(k, cols_hi.y), b_at(k, cols_hi.z), b_at(k, cols_hi.w));
        acc_l += outer(av, b_lo);
        acc_h += outer(av, b_hi);
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
        if params.accumulate != 0u {
            v += c[m * params.N + n];
        }
        c[m * params.N + n] = v;
    }
}
