//! GGUF/ggml tensor block formats, dequantized to f32 exactly as gguf-py's
//! `gguf.quants.dequantize` does (the same f32 operations in the same order, so the same bits).
//!
//! Blocks of 32 values (`d`, `m`: f16 scale and offset; codes 4-bit unless said):
//!   Q4_0: d, 16 bytes of codes:                     x = (q - 8) · d
//!   Q4_1: d, m, 16 bytes of codes:                  x = d · q + m
//!   Q5_0: d, 4 bytes of high bits, 16 bytes:        x = d · (q - 16), q = low | high << 4
//!   Q5_1: d, m, 4 bytes of high bits, 16 bytes:     x = d · q + m
//!   Q8_0: d, 32 signed bytes:                       x = q · d
//! In these, byte j holds element j in its low nibble and element j + 16 in its high; bit j of
//! the 32-bit high word is element j's fifth bit.
//!
//! k-quants: super-blocks of 256 values in sub-blocks of 16 or 32 with their own scales:
//!   Q2_K (84 B): 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit
//!     codes, d, dmin:                     x = (d · sc) · q - (dmin · mn), sub-blocks of 16
//!   Q3_K (110 B): 32 bytes of high bits, 64 bytes of 2-bit codes, 12 bytes of 6-bit scales,
//!     d:                                  x = (d · (sc - 32)) · (q - 4 · !high), sub-blocks of 16
//!   Q4_K (144 B): d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit codes:
//!                                         x = (d · sc) · q - (dmin · mn), sub-blocks of 32
//!   Q5_K (176 B): as Q4_K plus 32 bytes of fifth bits before the codes
//!   Q6_K (210 B): 128 bytes of low nibbles, 64 bytes of high 2 bits, 16 signed scales, d:
//!                                         x = (d · sc) · (q - 32), sub-blocks of 16
//! The 2-bit codes of a 128-value half come from its 32 bytes, shift 0, 2, 4, 6 giving values
//! 0-31, 32-63, 64-95, 96-127; the 4-bit codes of a 64-value quarter from its 32 bytes, low
//! nibbles then high (Q6_K: a 128-value half from 64 bytes, low nibbles of bytes 0-31, 32-63,
//! then high nibbles); high bits: bit b of byte l is value 32·b + l (Q3_K, Q5_K).

use half::{bf16, f16};

/// The ggml type numbers we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// ggml's type number (as GGUF files store it).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// The types whose values come in blocks of codes with scales (every type but the
    /// floats): the types the GPU dequant-matmuls read (`ops::ggml_matmul`).
    pub const QUANTIZED: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// Whether this is one of `QUANTIZED`.
    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// (values, bytes) of one block.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
        }
    }

    /// ggml's name of the type (as llama.cpp and gguf-py print it).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// Bytes that `n` values take, or None when n is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (values, bytes) = self.block();
        // None too when the size does not fit a usize (a crafted file's dimensions).
        n.is_multiple_of(values)
            .then(|| (n / values).checked_mul(bytes))
            .flatten()
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantize `data` (a whole number of blocks of `ty`) to f32.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (values, block_bytes) = ty.block();
    match ty {
        GgmlType::F32 => return bytemuck::pod_collect_to_vec(data),
        GgmlType::F16 => {
            return data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        }
        GgmlType::BF16 => {
            return data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        }
        _ => {}
    }
    let mut out = vec![0.0f32; data.len() / block_bytes * values];
    for (block, y) in data
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(values))
    {
        match ty {
            GgmlType::Q4_0 => q4_0(block, y),
            GgmlType::Q4_1 => q4_1(block, y),
            GgmlType::Q5_0 => q5(block, y, false),
            GgmlType::Q5_1 => q5(block, y, true),
            GgmlType::Q8_0 => q8_0(block, y),
            GgmlType::Q2K => q2_k(block, y),
            GgmlType::Q3K => q3_k(block, y),
            GgmlType::Q4K => q45_k(block, y, false),
            GgmlType::Q5K => q45_k(block, y, true),
            GgmlType::Q6K => q6_k(block, y),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!("handled above"),
        }
    }
    out
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &c) in b[2..18].iter().enumerate() {
        y[j] = ((c & 0x0f) as i8 - 8) as f32 * d;
        y[j + 16] = ((c >> 4) as i8 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &c) in b[4..20].iter().enumerate() {
        y[j] = d * (c & 0x0f) as f32 + m;
        y[j + 16] = d * (c >> 4) as f32 + m;
    }
}

/// Q5_0 (`offset` false: x = d·(q - 16)) and Q5_1 (x = d·q + m).
fn q5(b: &[u8], y: &mut [f32], offset: bool) {
    let d = half_at(b, 0);
    let (m, rest) = if offset {
        (half_at(b, 2), &b[4..])
    } else {
        (0.0, &b[2..])
    };
    let high = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    for (j, &c) in rest[4..20].iter().enumerate() {
        for (i, low) in [(j, c & 0x0f), (j + 16, c >> 4)] {
            let q = low | (((high >> i) & 1) as u8) << 4;
            y[i] = if offset {
                d * q as f32 + m
            } else {
                d * (q as i8 - 16) as f32
            };
        }
    }
}

/// Quantize to Q8_0 as ggml's reference does (`quantize_row_q8_0_ref`): each block of 32 values
/// stores d = max|x| / 127 as f16 and round(x / d) as i8 (`values.len()` a multiple of 32).
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    assert!(
        values.len().is_multiple_of(32),
        "Q8_0 takes blocks of 32 values"
    );
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    out
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (v, &q) in y.iter_mut().zip(&b[2..34]) {
        *v = q as i8 as f32 * d;
    }
}

/// The 2-bit code of value `i` (0..256) in 64 bytes `qs`: half i / 128, shift by the value's
/// 32-value group within the half.
fn two_bits(qs: &[u8], i: usize) -> u8 {
    let (half, within) = (i / 128, i % 128);
    (qs[half * 32 + within % 32] >> (2 * (within / 32))) & 3
}

fn q2_k(b: &[u8], y: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half_at(b, 80), half_at(b, 82));
    for (i, v) in y.iter_mut().enumerate() {
        let sc = scales[i / 16];
        let dl = d * (sc & 0x0f) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *v = dl * two_bits(qs, i) as f32 - ml;
    }
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half_at(b, 108);
    // Sixteen 6-bit scales: low nibbles in bytes 0-7 (then their high nibbles), the top two
    // bits in bytes 8-11, two bits a scale, scale s at shift 2·(s / 4) of byte 8 + s % 4.
    let scale = |s: usize| -> f32 {
        let low = (packed[s % 8] >> (4 * (s / 8))) & 0x0f;
        let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        ((low | high << 4) as i8 - 32) as f32
    };
    for (i, v) in y.iter_mut().enumerate() {
        let dl = d * scale(i / 16);
        let high = (hmask[i % 32] >> (i / 32)) & 1;
        let q = two_bits(qs, i) as i8 - (((high ^ 1) << 2) as i8);
        *v = dl * q as f32;
    }
}

/// Q4_K's and Q5_K's eight 6-bit (scale, min) pairs from their 12 bytes.
pub(crate) fn k_scale_min(packed: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 0x3f, packed[j + 4] & 0x3f)
    } else {
        (
            (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 2) & 0x30),
            (packed[j + 4] >> 4) | ((packed[j] >> 2) & 0x30),
        )
    }
}

/// Q4_K (`fifth` false) and Q5_K.
fn q45_k(b: &[u8], y: &mut [f32], fifth: bool) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let packed = &b[4..16];
    let (qh, qs) = if fifth {
        (&b[16..48], &b[48..176])
    } else {
        (&b[0..0], &b[16..144])
    };
    for (i, v) in y.iter_mut().enumerate() {
        let sub = i / 32;
        let (sc, mn) = k_scale_min(packed, sub);
        let dl = d * sc as f32;
        let ml = dmin * mn as f32;
        let byte = qs[(sub / 2) * 32 + i % 32];
        let mut q = if sub % 2 == 0 { byte & 0x0f } else { byte >> 4 };
        if fifth {
            q |= ((qh[i % 32] >> sub) & 1) << 4;
        }
        *v = dl * q as f32 - ml;
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    for (i, v) in y.iter_mut().enumerate() {
        let (half, within) = (i / 128, i % 128);
        let byte = ql[half * 64 + within % 64];
        let low = if within < 64 { byte & 0x0f } else { byte >> 4 };
        let high = (qh[half * 32 + within % 32] >> (2 * (within / 32))) & 3;
        let q = (low | high << 4) as i8 - 32;
        let dl = d * scales[i / 16] as i8 as f32;
        *v = dl * q as f32;
    }
}
