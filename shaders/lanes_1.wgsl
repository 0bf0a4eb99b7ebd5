// One value a lane, for the elementwise and row kernels built for any length (appended to
// them; shaders/lanes_4.wgsl is the other choice): `V`, the element type their arrays hold,
// is f32, and these are the operations they need of it.

alias V = f32;

/// How many f32 a V holds.
const LANES: u32 = 1u;

/// v as the vec4 the shared helpers take (gated_activation.wgsl), and back.
fn lanes_wide(v: V) -> vec4<f32> {
    return vec4<f32>(v);
}

fn lanes_narrow(v: vec4<f32>) -> V {
    return v.x;
}

/// acc plus v's lanes, left to right.
fn lanes_add(acc: f32, v: V) -> f32 {
    return acc + v;
}
