//! bitsandbytes' 8-bit "dynamic" quantization map (`create_dynamic_map(signed=True,
//! max_exponent_bits=7, total_bits=8)`), used to double-quantize NF4 absmax values.
//!
//! Reproduced bit for bit: the map is built from `torch.linspace` in f32 (which steps from the
//! start for the first half and from the end for the second, and whose compiled CPU kernel
//! fuses `start + step * i` into one rounding), f32 midpoints, and f32 products with powers of
//! ten; then 0 and 1 are added and the 256 values sorted.

/// `torch.linspace(start, end, steps, dtype=float32)` on the CPU.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// The 256 sorted values of the signed dynamic map.
pub fn signed_dynamic_map() -> [f32; 256] {
    const MAX_EXPONENT_BITS: i32 = 7;
    const NON_SIGN_BITS: i32 = 7;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..MAX_EXPONENT_BITS {
        let fraction_items = 2usize.pow((i + NON_SIGN_BITS - MAX_EXPONENT_BITS) as u32) + 1;
        let boundaries = linspace_f32(0.1, 1.0, fraction_items);
        let scale = 10f64.powi(-(MAX_EXPONENT_BITS - 1) + i) as f32;
        for w in boundaries.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-scale * mean);
        }
    }
    data.push(0.0);
    data.push(1.0);
    assert_eq!(data.len(), 256, "the signed 8-bit map has 256 entries");
    data.sort_by(f32::total_cmp);
    data.try_into().expect("256 entries")
}

/// Index of the map entry nearest to `v` (the lower index on a tie).
pub fn nearest(map: &[f32], v: f32) -> u8 {
    let mut best = 0;
    let mut best_dist = f32::INFINITY;
    for (i, &m) in map.iter().enumerate() {
        let d = (m - v).abs();
        if d < best_dist {
            best = i;
            best_dist = d;
        }
    }
    best as u8
}
