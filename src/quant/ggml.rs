//! GGUF/ggml tensor block formats, dequantized to f32. Blocks of 32 values:
//!   Q4_0: f16 d, 16 bytes of 4-bit codes:    x = (q - 8) · d
//!   Q4_1: f16 d, f16 m, 16 bytes of codes:   x = q · d + m
//!   Q8_0: f16 d, 32 signed bytes:            x = q · d
//! In a 4-bit block, byte j holds element j in its low nibble and element j + 16 in its high.

use half::{bf16, f16};

/// The ggml type numbers we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// (values, bytes) of one block.
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes that `n` values take, or None when n is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (values, bytes) = self.block();
        n.is_multiple_of(values).then(|| n / values * bytes)
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantize `data` (a whole number of blocks of `ty`) to f32.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (_, block_bytes) = ty.block();
    match ty {
        GgmlType::F32 => bytemuck::pod_collect_to_vec(data),
        GgmlType::F16 => data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let mut out = Vec::with_capacity(data.len() / block_bytes * 32);
            for block in data.chunks_exact(block_bytes) {
                let d = half_at(block, 0);
                let (m, codes) = if ty == GgmlType::Q4_1 {
                    (half_at(block, 2), &block[4..])
                } else {
                    (0.0, &block[2..])
                };
                let value = |q: u8| {
                    if ty == GgmlType::Q4_1 {
                        q as f32 * d + m
                    } else {
                        (q as f32 - 8.0) * d
                    }
                };
                out.extend(codes.iter().map(|&c| value(c & 0x0f)));
                out.extend(codes.iter().map(|&c| value(c >> 4)));
            }
            out
        }
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(data.len() / block_bytes * 32);
            for block in data.chunks_exact(block_bytes) {
                let d = half_at(block, 0);
                out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
            }
            out
        }
    }
}
