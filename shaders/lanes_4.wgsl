// Four values a lane, for the elementwise and row kernels on lengths that are a multiple of 4
// (appended to them; shaders/lanes_1.wgsl is the other choice): `V` is vec4<f32>, one storage
// access for four values. On llvmpipe, where each storage access of a SIMD lane is its own
// load, that is about 4x faster; on GPUs, 16-byte loads.

alias V = vec4<f32>;

/// How many f32 a V holds.
const LANES: u32 = 4u;

/// v as the vec4 the shared helpers take (gated_activation.wgsl), and back.
fn lanes_wide(v: V) -> vec4<f32> {
    return v;
}

fn lanes_narrow(v: vec4<f32>) -> V {
    return v;
}

/// acc plus v's lanes, left to right (the order lanes_1.wgsl's kernels add them in).
fn lanes_add(acc: f32, v: V) -> f32 {
    return acc + v.x + v.y + v.z + v.w;
}
