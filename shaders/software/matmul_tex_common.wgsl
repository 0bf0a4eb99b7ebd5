// What the f32 texture products of matmul_tex.wgsl and matmul_tex_narrow_sg.wgsl share:
// their Params, their bindings (documented in matmul_tex.wgsl's header), the multiply-add
// steps of a row's sixteen sums and the stores. Built after either file; no entry point.

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

@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var b_tex: texture_storage_2d<rgba32float, read>;

/// Row i's sixteen sums gain x · B for the sixteen columns, given as four matrices whose
/// column kk holds element kk of four texels (four columns of B at the same k), so each
/// update is four fused multiply-adds of whole vec4s. (In llvmpipe's one-register-per-
/// component layout the transposition costs nothing.)
fn row_update(acc: mat4x4<f32>, x: vec4<f32>, w0: mat4x4<f32>, w1: mat4x4<f32>, w2: mat4x4<f32>, w3: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(fma4(acc[0], x, w0), fma4(acc[1], x, w1), fma4(acc[2], x, w2), fma4(acc[3], x, w3));
}

fn fma4(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(x.w), w[3], fma(vec4<f32>(x.z), w[2], fma(vec4<f32>(x.y), w[1], fma(vec4<f32>(x.x), w[0], acc))));
}

fn b_group(t: i32, cols: vec4<i32>) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(
        textureLoad(b_tex, vec2<i32>(t, cols.x)),
        textureLoad(b_tex, vec2<i32>(t, cols.y)),
        textureLoad(b_tex, vec2<i32>(t, cols.z)),
        textureLoad(b_tex, vec2<i32>(t, cols.w)),
    ));
}

fn a_at(t: i32, row: i32) -> vec4<f32> {
    return textureLoad(a_tex, vec2<i32>(t, row));
}

fn store(m: u32, n: u32, value: f32) {
    let i = params.c_off + m * params.c_sm + n * params.c_sn;
    var v = params.alpha * value;
    if ACCUMULATE {
        v += c[i];
    }
    c[i] = v;
}

/// Column 4g + j of the row's tile is column n0 + 4g + j.
fn store_narrow_row(m: u32, n0: u32, acc: mat4x4<f32>) {
    if m >= params.M {
        return;
    }
    for (var g = 0u; g < 4u; g++) {
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 4u * g + j;
            if n < params.N {
                store(m, n, acc[g][j]);
            }
        }
    }
}

/// Row i's sixteen sums gain a * (sixteen values of B at this k).
fn outer_update(acc: mat4x4<f32>, a: f32, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> mat4x4<f32> {
    let av = vec4<f32>(a);
    return mat4x4<f32>(fma(av, b0, acc[0]), fma(av, b1, acc[1]), fma(av, b2, acc[2]), fma(av, b3, acc[3]));
}
