// The multiply-add steps the subgroup products share (matmul_tex_sg.wgsl and
// nf4_matmul_tex_sg.wgsl, which shaders.rs builds as their own file followed by this one):
// a lane's accumulators for four rows gain those rows' texel x (broadcast from the lane that
// fetched it) times the lane's 4x4 block of B. No bindings, no entry point.

/// acc + x · w for the matrix w whose column kk holds the lane's four columns of B (weights)
/// at the texel's k = kk.
fn fma4(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(x.w), w[3], fma(vec4<f32>(x.z), w[2], fma(vec4<f32>(x.y), w[1], fma(vec4<f32>(x.x), w[0], acc))));
}

/// Rows 0..4 (lanes 0..4's texel x) of an eight-row group.
fn rows_0_to_3(acc: mat4x4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma4(acc[0], subgroupBroadcast(x, 0u), w),
        fma4(acc[1], subgroupBroadcast(x, 1u), w),
        fma4(acc[2], subgroupBroadcast(x, 2u), w),
        fma4(acc[3], subgroupBroadcast(x, 3u), w),
    );
}

/// Rows 4..8 (lanes 4..8's texel x) of an eight-row group.
fn rows_4_to_7(acc: mat4x4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(
        fma4(acc[0], subgroupBroadcast(x, 4u), w),
        fma4(acc[1], subgroupBroadcast(x, 5u), w),
        fma4(acc[2], subgroupBroadcast(x, 6u), w),
        fma4(acc[3], subgroupBroadcast(x, 7u), w),
    );
}
