// Writes a matrix operand into an rgba32float texture for the texture kernels
// (matmul_tex.wgsl, nf4_matmul_tex.wgsl): texel (t, r) = (S(r, 4t), S(r, 4t+1), S(r, 4t+2),
// S(r, 4t+3)) with S(r, k) = src[off + r * s_row + k * s_k] for k < K and 0 past K, so any
// transposition or row range of a tensor is one pack.
//
// Bindings (group 0):
//   0 src     storage, read   f32, as the strides say
//   1 params  uniform         { rows, K, KT (= ceil(K / 4), the texture width), off, s_row, s_k }
//   2 dst     texture_storage_2d<rgba32float, write>, [rows, KT] (height rows, width KT)
// Dispatch: grid (ceil(KT / 8), ceil(rows / 8), 1) of 8x8, one texel an invocation.

struct Params {
    rows: u32,
    K: u32,
    KT: u32,
    off: u32,
    s_row: u32,
    s_k: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

fn at(r: u32, k: u32) -> f32 {
    if k >= params.K {
        return 0.0;
    }
    return src[params.off + r * params.s_row + k * params.s_k];
}

@compute @workgroup_size(8, 8)
fn pack_f32(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    let r = id.y;
    if t >= params.KT || r >= params.rows {
        return;
    }
    let k = 4u * t;
    let texel = vec4<f32>(at(r, k), at(r, k + 1u), at(r, k + 2u), at(r, k + 3u));
    textureStore(dst, vec2<u32>(t, r), texel);
}
