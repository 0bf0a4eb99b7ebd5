// The fast cases of pack.wgsl (same texture layout: texel (t, r) = S(r, 4t..4t+4)), reading
// whole vec4s: on llvmpipe every storage load whose address is not provably uniform loops
// over the SIMD lanes, once per load, so one vec4 load costs about what one f32 load does.
//   pack_rows: S(r, k) = src[off + r * s_row + k], K % 4 == 0, off and s_row multiples of 4:
//              a texel is one vec4 of a row.
//   pack_cols: S(r, k) = src[off + k * s_k + r] (a transposed source), rows % 4 == 0,
//              K % 4 == 0, off and s_k multiples of 4: an invocation reads the 4x4 block of
//              rows 4t..4t+4 (k), columns 4c..4c+4 (r) as four vec4s and writes its four
//              transposed texels (t, 4c + j).
//
// Bindings (group 0):
//   0 src     storage, read   vec4<f32>
//   1 params  uniform         { rows, K, KT (= K / 4, the texture width), off, s_row, s_k }
//                             (off, s_row, s_k in f32 elements)
//   2 dst     texture_storage_2d<rgba32float, write>, [rows, KT]
// Dispatch: grid (ceil(KT / 8), ceil(rows / 8), 1) of 8x8 for pack_rows, one texel an
// invocation; grid (ceil(KT / 8), ceil(rows / 32), 1) of 8x8 for pack_cols, one 4x4 block
// (four texels of one texture column, rows 4c..4c+4) an invocation.

struct Params {
    rows: u32,
    K: u32,
    KT: u32,
    off: u32,
    s_row: u32,
    s_k: u32,
}

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(8, 8)
fn pack_rows(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    let r = id.y;
    if t >= params.KT || r >= params.rows {
        return;
    }
    textureStore(dst, vec2<u32>(t, r), src[(params.off + r * params.s_row) / 4u + t]);
}

@compute @workgroup_size(8, 8)
fn pack_cols(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    let c = id.y; // rows 4c..4c+4 of the texture
    if t >= params.KT || 4u * c >= params.rows {
        return;
    }
    // Row kk of the block: S(4c..4c+4, 4t + kk).
    let base = (params.off + 4u * t * params.s_k) / 4u + c;
    let step = params.s_k / 4u;
    let b = mat4x4<f32>(src[base], src[base + step], src[base + 2u * step], src[base + 3u * step]);
    let block = transpose(b);
    for (var j = 0u; j < 4u; j++) {
        textureStore(dst, vec2<u32>(t, 4u * c + j), block[j]);
    }
}
