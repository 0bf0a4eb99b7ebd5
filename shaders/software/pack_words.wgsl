// Writes rows of u32 words (NF4 code words, eight codes each) into an rgba32uint texture:
// texel (t, r) = words 4t..4t+4 of row r, that is src[off + r * s_row + 4t + j] for
// 4t + j < W and 0 past W. The NF4 weights' codes are packed in a linear layout (rows of
// W = 4 * WT words, s_row = W; see ops::pack::Linear), normally by a buffer-to-texture copy
// of the same texels; this kernel runs when a graph's copies are turned off (a test).
//
// Bindings (group 0):
//   0 src     storage, read   u32
//   1 params  uniform         { rows, W (words a row), WT (= ceil(W / 4), the texture width), off, s_row }
//   2 dst     texture_storage_2d<rgba32uint, write>, [rows, WT]
// Dispatch: grid (ceil(WT / 8), ceil(rows / 8), 1) of 8x8, one texel an invocation.

struct Params {
    rows: u32,
    W: u32,
    WT: u32,
    off: u32,
    s_row: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var dst: texture_storage_2d<rgba32uint, write>;

fn at(r: u32, w: u32) -> u32 {
    if w >= params.W {
        return 0u;
    }
    return src[params.off + r * params.s_row + w];
}

@compute @workgroup_size(8, 8)
fn pack_words(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    let r = id.y;
    if t >= params.WT || r >= params.rows {
        return;
    }
    let w = 4u * t;
    textureStore(dst, vec2<u32>(t, r), vec4<u32>(at(r, w), at(r, w + 1u), at(r, w + 2u), at(r, w + 3u)));
}
