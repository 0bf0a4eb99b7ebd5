//! NF4 exactly as bitsandbytes computes and stores it.
//!
//! - Blocks of `blocksize` consecutive elements of the flattened (row-major) weight; the last
//!   block may be partial. absmax = max |x| over the block, in f32.
//! - code = how many of the 15 midpoints `(q[i] + q[i+1]) / 2` (f32) the value
//!   `x * (1 / absmax)` strictly exceeds, so an exact tie goes to the lower code. An all-zero
//!   block (absmax 0) gets code 7, the zero.
//! - dequantized = `q[code] * absmax` in f32.
//! - Double quantization: offset = mean(absmax); the centred absmax values are quantized in
//!   blocks of 256 with the 8-bit signed dynamic map, each scaled by the reciprocal of the
//!   block's largest magnitude and coded as bitsandbytes' CPU path codes it
//!   (`dynamic_map::CellTable`); absmax ≈ `map[c] * nested_absmax[block / 256] + offset`.
//! - bitsandbytes packs two codes a byte, first element in the high nibble; an odd count is
//!   padded with a zero value (code 7). The GPU packs eight codes a u32 word, first element in
//!   the lowest nibble (`gpu_words`). This file is the one place that knows both layouts.

use safetensors::Dtype;
use serde_json::json;

use super::dynamic_map::{nearest, signed_dynamic_map, CellTable};

/// The 16 NF4 values (bitsandbytes' `get_4bit_type("nf4")`).
pub const NF4_MAP: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The code of 0.0, used for all-zero blocks and padding.
pub const ZERO_CODE: u8 = 7;

/// bitsandbytes' double-quantization block size.
pub const NESTED_BLOCKSIZE: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error("NF4 blocksize {0} is not a power of two between 32 and 4096")]
    BadBlocksize(usize),
    #[error("tensor '{tensor}' is missing")]
    Missing { tensor: String },
    #[error("tensor '{tensor}' is {found}, expected {expected}")]
    BadDtype {
        tensor: String,
        expected: String,
        found: String,
    },
    #[error("tensor '{tensor}' has {found} elements, expected {expected}")]
    BadLength {
        tensor: String,
        expected: usize,
        found: usize,
    },
    #[error("tensor '{tensor}': bad quant state: {reason}")]
    BadQuantState { tensor: String, reason: String },
    #[error("{len} values do not fill shape {shape:?}")]
    ShapeMismatch { len: usize, shape: Vec<usize> },
}

/// How the per-block absmax values are stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Absmax {
    Plain(Vec<f32>),
    Double(DoubleQuant),
}

/// The 8-bit double quantization of the absmax values.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleQuant {
    pub codes: Vec<u8>,
    /// One scale per `nested_blocksize` absmax values.
    pub nested_absmax: Vec<f32>,
    pub nested_map: Vec<f32>,
    pub offset: f32,
    pub nested_blocksize: usize,
}

impl DoubleQuant {
    /// The absmax values dequantization uses.
    pub fn absmax(&self) -> Vec<f32> {
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                self.nested_map[c as usize] * self.nested_absmax[i / self.nested_blocksize]
                    + self.offset
            })
            .collect()
    }
}

/// An NF4-quantized weight [out, in] (any shape; blocks run over the flattened elements).
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Tensor {
    pub shape: Vec<usize>,
    pub blocksize: usize,
    /// Codes in the bitsandbytes layout: two a byte, first element in the high nibble.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
    pub quant_map: [f32; 16],
}

fn check_blocksize(blocksize: usize) -> Result<(), QuantError> {
    if blocksize.is_power_of_two() && (32..=4096).contains(&blocksize) {
        Ok(())
    } else {
        Err(QuantError::BadBlocksize(blocksize))
    }
}

/// NF4 code of `x` in a block whose reciprocal absmax is `inv_absmax`.
fn code_of(scaled: f32, midpoints: &[f32; 15]) -> u8 {
    midpoints.iter().filter(|&&m| scaled > m).count() as u8
}

fn midpoints(q: &[f32; 16]) -> [f32; 15] {
    std::array::from_fn(|i| (q[i] + q[i + 1]) / 2.0)
}

impl Nf4Tensor {
    /// Quantize `data` (row-major, `shape`) as bitsandbytes does, optionally double-quantizing
    /// the absmax values.
    pub fn quantize(
        data: &[f32],
        shape: &[usize],
        blocksize: usize,
        double_quant: bool,
    ) -> Result<Nf4Tensor, QuantError> {
        check_blocksize(blocksize)?;
        if shape.iter().product::<usize>() != data.len() {
            return Err(QuantError::ShapeMismatch {
                len: data.len(),
                shape: shape.to_vec(),
            });
        }
        let mids = midpoints(&NF4_MAP);
        let mut absmax = Vec::with_capacity(data.len().div_ceil(blocksize));
        let mut codes = Vec::with_capacity(data.len() + 1);
        for block in data.chunks(blocksize) {
            let m = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            absmax.push(m);
            if m == 0.0 {
                codes.extend(std::iter::repeat_n(ZERO_CODE, block.len()));
            } else {
                let inv = 1.0 / m;
                codes.extend(block.iter().map(|&x| code_of(x * inv, &mids)));
            }
        }
        let absmax = if double_quant {
            Absmax::Double(double_quantize(&absmax))
        } else {
            Absmax::Plain(absmax)
        };
        Ok(Nf4Tensor {
            shape: shape.to_vec(),
            blocksize,
            packed: pack_bnb(&codes),
            absmax,
            quant_map: NF4_MAP,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn blocks(&self) -> usize {
        self.numel().div_ceil(self.blocksize)
    }

    /// Code of flattened element `i`.
    pub fn code(&self, i: usize) -> u8 {
        let byte = self.packed[i / 2];
        if i.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0f
        }
    }

    /// The absmax values dequantization uses (reconstructed when double-quantized).
    pub fn absmax_f32(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::Plain(a) => a.clone(),
            Absmax::Double(d) => d.absmax(),
        }
    }

    /// Rows `first .. first + rows` of this [rows, cols] weight, with the absmax values they
    /// use (kept as dequantization reads them; a double quantization spans the whole): the
    /// part of a fused weight. The part's blocks must be whole blocks of the weight.
    pub fn rows(&self, first: usize, rows: usize) -> Result<Nf4Tensor, String> {
        let cols: usize = self.shape[1..].iter().product();
        let (start, end) = (first * cols, (first + rows) * cols);
        if self.shape.len() < 2 || first + rows > self.shape[0] {
            return Err(format!(
                "rows {first}..{} of {:?}",
                first + rows,
                self.shape
            ));
        }
        if !start.is_multiple_of(self.blocksize)
            || !(end.is_multiple_of(self.blocksize) || end == self.numel())
        {
            return Err(format!(
                "its rows of {cols} do not start on its NF4 blocks of {}",
                self.blocksize
            ));
        }
        let absmax = self.absmax_f32();
        let mut shape = self.shape.clone();
        shape[0] = rows;
        Ok(Nf4Tensor {
            shape,
            blocksize: self.blocksize,
            packed: self.packed[start / 2..end.div_ceil(2)].to_vec(),
            absmax: Absmax::Plain(
                absmax[start / self.blocksize..end.div_ceil(self.blocksize)].to_vec(),
            ),
            quant_map: self.quant_map,
        })
    }

    /// `q[code] * absmax` for every element, as bitsandbytes returns it.
    pub fn dequantize(&self) -> Vec<f32> {
        let absmax = self.absmax_f32();
        (0..self.numel())
            .map(|i| self.quant_map[self.code(i) as usize] * absmax[i / self.blocksize])
            .collect()
    }

    /// The GPU layout: eight codes a u32 word, element 8w + j in bits 4j..4j+4; the tail of the
    /// last word holds the zero code.
    pub fn gpu_words(&self) -> Vec<u32> {
        let n = self.numel();
        (0..n.div_ceil(8))
            .map(|w| {
                (0..8).fold(0u32, |word, j| {
                    let i = 8 * w + j;
                    let code = if i < n { self.code(i) } else { ZERO_CODE };
                    word | (code as u32) << (4 * j)
                })
            })
            .collect()
    }

    /// The tensors bitsandbytes saves for a quantized `<name>` (name suffix, dtype, shape,
    /// little-endian bytes), in the order transformers writes them.
    pub fn to_bnb(&self) -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
        let f32_bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
        let mut out = vec![(
            "",
            Dtype::U8,
            vec![self.packed.len(), 1],
            self.packed.clone(),
        )];
        match &self.absmax {
            Absmax::Plain(a) => out.push((".absmax", Dtype::F32, vec![a.len()], f32_bytes(a))),
            Absmax::Double(d) => {
                out.push((".absmax", Dtype::U8, vec![d.codes.len()], d.codes.clone()));
                out.push((
                    ".nested_absmax",
                    Dtype::F32,
                    vec![d.nested_absmax.len()],
                    f32_bytes(&d.nested_absmax),
                ));
                out.push((
                    ".nested_quant_map",
                    Dtype::F32,
                    vec![d.nested_map.len()],
                    f32_bytes(&d.nested_map),
                ));
            }
        }
        out.push((
            ".quant_map",
            Dtype::F32,
            vec![16],
            f32_bytes(&self.quant_map),
        ));
        let state = self.quant_state_json().into_bytes();
        out.push((
            ".quant_state.bitsandbytes__nf4",
            Dtype::U8,
            vec![state.len()],
            state,
        ));
        out
    }

    /// The quant state as bitsandbytes writes it: Python `json.dumps` spacing, the offset
    /// printed as the double it becomes in Python.
    fn quant_state_json(&self) -> String {
        let shape: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let mut text = format!(
            r#"{{"quant_type": "nf4", "blocksize": {}, "dtype": "float32", "shape": [{}]"#,
            self.blocksize,
            shape.join(", ")
        );
        if let Absmax::Double(d) = &self.absmax {
            text += &format!(
                r#", "nested_blocksize": {}, "nested_dtype": "float32", "nested_offset": {}"#,
                d.nested_blocksize,
                json!(d.offset as f64)
            );
        }
        text + "}"
    }

    /// Rebuild a quantized `<name>` from the tensors of a bitsandbytes checkpoint; `get`
    /// returns (dtype, shape, bytes) of a tensor by its full name.
    pub fn from_bnb<'a>(
        name: &str,
        get: impl Fn(&str) -> Option<(Dtype, Vec<usize>, &'a [u8])>,
    ) -> Result<Nf4Tensor, QuantError> {
        let fetch = |suffix: &str, dtype: Dtype| -> Result<&'a [u8], QuantError> {
            let full = format!("{name}{suffix}");
            let (found, _, bytes) = get(&full).ok_or(QuantError::Missing {
                tensor: full.clone(),
            })?;
            if found != dtype {
                return Err(QuantError::BadDtype {
                    tensor: full,
                    expected: format!("{dtype:?}"),
                    found: format!("{found:?}"),
                });
            }
            Ok(bytes)
        };
        let f32s = |bytes: &[u8]| -> Vec<f32> { bytemuck::pod_collect_to_vec(bytes) };
        let state_name = format!("{name}.quant_state.bitsandbytes__nf4");
        let bad_state = |reason: String| QuantError::BadQuantState {
            tensor: state_name.clone(),
            reason,
        };
        let state: serde_json::Value =
            serde_json::from_slice(fetch(".quant_state.bitsandbytes__nf4", Dtype::U8)?)
                .map_err(|e| bad_state(e.to_string()))?;
        if state["quant_type"] != "nf4" {
            return Err(bad_state(format!(
                "quant_type {} is not supported (only nf4)",
                state["quant_type"]
            )));
        }
        let blocksize = state["blocksize"]
            .as_u64()
            .ok_or_else(|| bad_state("no blocksize".into()))? as usize;
        check_blocksize(blocksize).map_err(|e| bad_state(e.to_string()))?;
        let shape: Vec<usize> = state["shape"]
            .as_array()
            .ok_or_else(|| bad_state("no shape".into()))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad_state("shape is not a list of sizes".into()))?;
        let numel: usize = shape.iter().product();
        let blocks = numel.div_ceil(blocksize);
        let expect_len = |suffix: &str, found: usize, expected: usize| {
            if found == expected {
                Ok(())
            } else {
                Err(QuantError::BadLength {
                    tensor: format!("{name}{suffix}"),
                    expected,
                    found,
                })
            }
        };

        let packed = fetch("", Dtype::U8)?.to_vec();
        expect_len("", packed.len(), numel.div_ceil(2))?;
        let quant_map_values = f32s(fetch(".quant_map", Dtype::F32)?);
        expect_len(".quant_map", quant_map_values.len(), 16)?;
        let quant_map: [f32; 16] = quant_map_values.try_into().expect("checked length");

        let absmax = if state.get("nested_offset").is_some() {
            let offset = state["nested_offset"]
                .as_f64()
                .ok_or_else(|| bad_state("nested_offset is not a number".into()))?
                as f32;
            let nested_blocksize = state["nested_blocksize"]
                .as_u64()
                .unwrap_or(NESTED_BLOCKSIZE as u64) as usize;
            let codes = fetch(".absmax", Dtype::U8)?.to_vec();
            expect_len(".absmax", codes.len(), blocks)?;
            let nested_absmax = f32s(fetch(".nested_absmax", Dtype::F32)?);
            expect_len(
                ".nested_absmax",
                nested_absmax.len(),
                blocks.div_ceil(nested_blocksize),
            )?;
            let nested_map = f32s(fetch(".nested_quant_map", Dtype::F32)?);
            expect_len(".nested_quant_map", nested_map.len(), 256)?;
            Absmax::Double(DoubleQuant {
                codes,
                nested_absmax,
                nested_map,
                offset,
                nested_blocksize,
            })
        } else {
            let a = f32s(fetch(".absmax", Dtype::F32)?);
            expect_len(".absmax", a.len(), blocks)?;
            Absmax::Plain(a)
        };
        Ok(Nf4Tensor {
            shape,
            blocksize,
            packed,
            absmax,
            quant_map,
        })
    }
}

/// Two codes a byte, first in the high nibble; an odd count is padded with the zero code.
fn pack_bnb(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair.get(1).copied().unwrap_or(ZERO_CODE))
        .collect()
}

/// bitsandbytes' double quantization of NF4 absmax values.
pub(crate) fn double_quantize(absmax: &[f32]) -> DoubleQuant {
    let offset = (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len() as f64) as f32;
    let map = signed_dynamic_map();
    let zero = nearest(&map, 0.0);
    let cells = CellTable::signed();
    let mut codes = Vec::with_capacity(absmax.len());
    let mut nested_absmax = Vec::new();
    for block in absmax.chunks(NESTED_BLOCKSIZE) {
        let centred: Vec<f32> = block.iter().map(|&a| a - offset).collect();
        let scale = centred.iter().fold(0.0f32, |m, c| m.max(c.abs()));
        nested_absmax.push(scale);
        if scale == 0.0 {
            codes.extend(std::iter::repeat_n(zero, block.len()));
        } else {
            let inv = 1.0 / scale;
            codes.extend(centred.iter().map(|&c| cells.code(c * inv)));
        }
    }
    DoubleQuant {
        codes,
        nested_absmax,
        nested_map: map.to_vec(),
        offset,
        nested_blocksize: NESTED_BLOCKSIZE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_code() {
        let mids = midpoints(&NF4_MAP);
        for (i, &m) in mids.iter().enumerate() {
            assert_eq!(code_of(m, &mids) as usize, i);
            assert_eq!(code_of(m.next_up(), &mids) as usize, i + 1);
        }
    }

    #[test]
    fn blocksizes_are_checked() {
        assert!(Nf4Tensor::quantize(&[1.0; 64], &[64], 48, false).is_err());
        assert!(Nf4Tensor::quantize(&[1.0; 64], &[64], 16, false).is_err());
        for bs in [32, 64, 128, 4096] {
            let t = Nf4Tensor::quantize(&[0.5; 100], &[100], bs, true).unwrap();
            assert_eq!(t.blocks(), 100usize.div_ceil(bs));
        }
    }

    /// A fused weight's parts: their rows dequantize to the whole's rows (double quantization
    /// included), and rows that cut a block are refused.
    #[test]
    fn rows_of_a_weight_dequantize_as_the_whole() {
        let data: Vec<f32> = (0..10 * 128)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let whole = Nf4Tensor::quantize(&data, &[10, 128], 64, true).unwrap();
        let values = whole.dequantize();
        let (q, rest) = (whole.rows(0, 6).unwrap(), whole.rows(6, 4).unwrap());
        assert_eq!(
            (q.shape.clone(), rest.shape.clone()),
            (vec![6, 128], vec![4, 128])
        );
        assert_eq!(q.dequantize(), values[..6 * 128]);
        assert_eq!(rest.dequantize(), values[6 * 128..]);
        let odd = Nf4Tensor::quantize(&data[..10 * 96], &[10, 96], 64, true).unwrap();
        let err = odd.rows(1, 2).unwrap_err();
        assert!(
            err.contains("do not start on its NF4 blocks of 64"),
            "{err}"
        );
        assert!(whole.rows(8, 4).is_err());
    }

    #[test]
    fn gpu_words_hold_eight_codes_low_nibble_first() {
        let data: Vec<f32> = (0..11).map(|i| i as f32 / 10.0 - 0.5).collect();
        let t = Nf4Tensor::quantize(&data, &[11], 64, false).unwrap();
        let words = t.gpu_words();
        assert_eq!(words.len(), 2);
        for i in 0..16 {
            let code = (words[i / 8] >> (4 * (i % 8))) & 0xf;
            let want = if i < 11 { t.code(i) } else { ZERO_CODE };
            assert_eq!(code as u8, want, "element {i}");
        }
    }
}
