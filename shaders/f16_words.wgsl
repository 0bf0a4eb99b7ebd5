// f16 values read from 32-bit words, two a word (low half first), decoded by hand: core WGSL's
// unpack2x16float needs a capability some OpenGL ES devices lack, and arrays of f16 need
// shader-f16. Exact for every f16 (subnormals, infinities, NaN). shaders.rs appends this file
// to the kernels that read f16 tables; no bindings, no entry point.

fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let exponent = (h >> 10u) & 0x1fu;
    let mantissa = h & 0x3ffu;
    if exponent == 0u {
        // Zero or subnormal: mantissa · 2^-24, exact in f32.
        let magnitude = f32(mantissa) * 5.9604644775390625e-8;
        return select(magnitude, -magnitude, sign != 0u);
    }
    if exponent == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (mantissa << 13u));
    }
    return bitcast<f32>(sign | ((exponent + 112u) << 23u) | (mantissa << 13u));
}

/// The two f16 values of a word as f32 (low half first).
fn f16_pair(word: u32) -> vec2<f32> {
    return vec2<f32>(f16_bits_to_f32(word & 0xffffu), f16_bits_to_f32(word >> 16u));
}
