//! bitsandbytes (0.47 and later) on CPUs with AVX512-BF16, whose numbers differ from its
//! f32 path in two ways that references made on such a CPU carry (golden/tiny-llama's NF4
//! logits and QLoRA step do):
//!
//! - In eval mode a `Linear4bit` whose input carries no gradient converts its weight to a CPU
//!   layout and multiplies through a bf16 kernel (`gemv_4bit_inference_cpu_nf4_bf16`): the
//!   activations, the NF4 values and the absmax are rounded to bf16, the products (exact in
//!   f32) summed in f32 and the sum rounded to bf16 (`linear_bf16`; on the GPU
//!   `Nf4Compute::BnbCpuBf16`).
//! - The conversion keeps the absmax in bf16, and a later `state_dict()` (saving anything)
//!   converts the weight back by double-quantizing those bf16 values again
//!   (`repacked_absmax`): the module then computes with other absmax than it was loaded with.
//!
//! Both were established by running bitsandbytes 0.50.2's own CPU library on the golden tiny
//! Llama: they reproduce `logits_base_nf4` to 1e-7 and `logits_qlora` to 3e-7 relative, where
//! the f32 path is 3e-3 away.

use super::nf4::{double_quantize, Nf4Tensor};

/// Which of the two effects to reproduce (`webqlora dump-step --bnb-cpu-bf16 --bnb-cpu-repacked`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BnbCpuEffects {
    /// bf16 products on the modules whose input carries no gradient.
    pub bf16: bool,
    /// Every NF4 weight's absmax after a conversion round trip.
    pub repacked: bool,
}

/// `v` rounded to bf16 (nearest, ties to even, as torch converts), as an f32.
pub fn bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

/// The absmax values a weight holds after bitsandbytes' CPU conversion and its inverse: each
/// rounded to bf16, then, for a double-quantized weight, double-quantized again (offset = their
/// mean, 8-bit blocks of 256) and reconstructed.
pub fn repacked_absmax(absmax: &[f32], double_quant: bool) -> Vec<f32> {
    let rounded: Vec<f32> = absmax.iter().map(|&a| bf16(a)).collect();
    if double_quant {
        double_quantize(&rounded).absmax()
    } else {
        rounded
    }
}

/// y = x · Wᵀ ([rows, out] for x [rows, in]) as the bf16 kernel computes it: each scale block
/// of a row summed alone over pairs of inputs, the odd one first (the order of AVX512-BF16's
/// dot-product instruction; the products are exact), then added to the total with one fused
/// multiply-add by the block's bf16 absmax, and the total rounded to bf16. `in` must be a
/// multiple of the blocksize, as in bitsandbytes' CPU layout.
pub fn linear_bf16(x: &[f32], w: &Nf4Tensor) -> Vec<f32> {
    let (n_out, n_in, bs) = (w.shape[0], w.shape[1], w.blocksize);
    assert!(
        n_in.is_multiple_of(bs),
        "in {n_in} is not a multiple of the blocksize {bs}"
    );
    let absmax = w.absmax_f32();
    let value = |i: usize| bf16(w.quant_map[w.code(i) as usize]);
    x.chunks(n_in)
        .flat_map(|row| {
            (0..n_out).map(|o| {
                let total = (0..n_in).step_by(bs).fold(0.0f32, |acc, k0| {
                    let block_sum = (k0..k0 + bs).step_by(2).fold(0.0f32, |s, k| {
                        let s = bf16(row[k + 1]).mul_add(value(o * n_in + k + 1), s);
                        bf16(row[k]).mul_add(value(o * n_in + k), s)
                    });
                    block_sum.mul_add(bf16(absmax[(o * n_in + k0) / bs]), acc)
                });
                bf16(total)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even 1.0.
        assert_eq!(bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(
            bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
    }

    #[test]
    fn repacking_rounds_then_double_quantizes_again() {
        let absmax: Vec<f32> = (0..300).map(|i| 0.01 + 0.0007 * i as f32).collect();
        let plain = repacked_absmax(&absmax, false);
        assert!(plain.iter().zip(&absmax).all(|(&p, &a)| p == bf16(a)));
        assert!(plain.iter().zip(&absmax).any(|(p, a)| p != a));
        let nested = repacked_absmax(&absmax, true);
        let rounded: Vec<f32> = absmax.iter().map(|&a| bf16(a)).collect();
        assert_eq!(nested, double_quantize(&rounded).absmax());
    }
}
