// An NF4 weight's codes and scales as the NF4 texture kernels read them (nf4_matmul_tex.wgsl
// and nf4_matmul_tex_sg.wgsl, which shaders.rs builds followed by this file): both textures
// hold their buffers' texels in order in a linear layout (ops::pack::Linear: texel l at
// (l % width, l / width), width a power of two), codes four words (32 codes) a rgba32uint
// texel, scales four a rgba32float texel. No bindings, no entry point: the kernels pass their
// textures in.

/// The NF4 values of four codes (bitsandbytes' table, bit-exact f32), by a tree of selects on
/// the code's bits (on llvmpipe faster than indexing a private array or a lookup texture).
fn nf4(codes: vec4<u32>) -> vec4<f32> {
    let b0 = (codes & vec4<u32>(1u)) != vec4<u32>(0u);
    let b1 = (codes & vec4<u32>(2u)) != vec4<u32>(0u);
    let b2 = (codes & vec4<u32>(4u)) != vec4<u32>(0u);
    let b3 = (codes & vec4<u32>(8u)) != vec4<u32>(0u);
    let v01 = select(vec4<f32>(-1.0), vec4<f32>(-0.6961928009986877), b0);
    let v23 = select(vec4<f32>(-0.5250730514526367), vec4<f32>(-0.39491748809814453), b0);
    let v45 = select(vec4<f32>(-0.28444138169288635), vec4<f32>(-0.18477343022823334), b0);
    let v67 = select(vec4<f32>(-0.09105003625154495), vec4<f32>(0.0), b0);
    let v89 = select(vec4<f32>(0.07958029955625534), vec4<f32>(0.16093020141124725), b0);
    let vab = select(vec4<f32>(0.24611230194568634), vec4<f32>(0.33791524171829224), b0);
    let vcd = select(vec4<f32>(0.44070982933044434), vec4<f32>(0.5626170039176941), b0);
    let vef = select(vec4<f32>(0.7229568362236023), vec4<f32>(1.0), b0);
    let v0_3 = select(v01, v23, b1);
    let v4_7 = select(v45, v67, b1);
    let v8_b = select(v89, vab, b1);
    let vc_f = select(vcd, vef, b1);
    return select(select(v0_3, v4_7, b2), select(v8_b, vc_f, b2), b3);
}

/// Four weights of a code word (codes at bits shift, shift + 4, ..), times the block scale.
fn decode4(word: u32, shift: u32, scale: f32) -> vec4<f32> {
    return nf4((vec4<u32>(word) >> (vec4<u32>(0u, 4u, 8u, 12u) + shift)) & vec4<u32>(15u)) * scale;
}

/// Where a weight's codes and scales lie in their textures.
struct WeightAt {
    codes_row: u32,    // code texels a row of W: in / 32
    scales_row: u32,   // scales a row of W: in / blocksize
    codes_shift: u32,  // log2 of the codes texture's width
    scales_shift: u32, // log2 of the scales texture's width
}

fn weight_at(codes: texture_storage_2d<rgba32uint, read>, scales: texture_storage_2d<rgba32float, read>, n_in: u32, blocksize: u32) -> WeightAt {
    return WeightAt(
        n_in / 32u,
        n_in / blocksize,
        countTrailingZeros(textureDimensions(codes).x),
        countTrailingZeros(textureDimensions(scales).x),
    );
}

/// Texel l of a linear layout 2^shift texels wide.
fn linear(l: u32, shift: u32) -> vec2<i32> {
    return vec2<i32>(i32(l & ((1u << shift) - 1u)), i32(l >> shift));
}

/// Code texel t (words 4t..4t+4: the codes of inputs 32t..32t+32) of row `row` of W.
fn codes_at(codes: texture_storage_2d<rgba32uint, read>, at: WeightAt, t: u32, row: i32) -> vec4<u32> {
    return textureLoad(codes, linear(u32(row) * at.codes_row + t, at.codes_shift));
}

/// Block b's scale for row `row` of W.
fn scale_of(scales: texture_storage_2d<rgba32float, read>, at: WeightAt, b: u32, row: i32) -> f32 {
    let v = u32(row) * at.scales_row + b;
    return textureLoad(scales, linear(v / 4u, at.scales_shift))[v % 4u];
}
