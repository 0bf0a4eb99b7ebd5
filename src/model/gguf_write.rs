//! Writing GGUF files (llama.cpp's format, version 3; `gguf.rs` reads them): typed metadata,
//! then the tensor table, then the tensors, each at a multiple of 32 bytes from the start of
//! the data section (GGUF's default `general.alignment`).
//!
//! Shapes are given as Hugging Face (row-major) shapes and written in ggml's order, the
//! fastest-varying dimension first: a [rows, cols] matrix is stored with dims [cols, rows].

use crate::quant::ggml::GgmlType;

/// A metadata value with its GGUF type (llama.cpp checks the type of the keys it reads: a
/// float key written as an integer fails to load).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
    /// A value copied as another file stores it: its GGUF type number and bytes
    /// (`gguf::read_raw_metadata`).
    Raw(u32, Vec<u8>),
}

const ALIGNMENT: usize = 32;

/// GGUF's value type numbers.
const TYPE_U32: u32 = 4;
const TYPE_I32: u32 = 5;
const TYPE_F32: u32 = 6;
const TYPE_BOOL: u32 = 7;
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;

struct TensorEntry {
    name: String,
    /// ggml order: fastest-varying first.
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// A GGUF file being put together in memory.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<TensorEntry>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` (replacing an earlier value).
    pub fn meta(&mut self, key: &str, value: GgufValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// A tensor of Hugging Face `shape` in f32.
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let data = bytemuck::cast_slice(values).to_vec();
        self.push(name, shape, GgmlType::F32, data);
    }

    /// A tensor of Hugging Face `shape`, rounded to f16.
    pub fn tensor_f16(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let data = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        self.push(name, shape, GgmlType::F16, data);
    }

    /// A tensor of Hugging Face `shape` quantized to Q8_0 (rows a multiple of 32 values).
    pub fn tensor_q8_0(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let data = crate::quant::ggml::quantize_q8_0(values);
        self.push(name, shape, GgmlType::Q8_0, data);
    }

    /// A tensor of Hugging Face `shape` already encoded as `ty` (whole blocks).
    pub fn tensor_encoded(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) {
        self.push(name, shape, ty, data);
    }

    fn push(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) {
        self.tensors.push(TensorEntry {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty,
            data,
        });
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        put_u32(&mut out, 3);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            put_u32(&mut out, t.ty.id());
            put_u64(&mut out, offset as u64);
            offset = (offset + t.data.len()).next_multiple_of(ALIGNMENT);
        }
        pad(&mut out);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out);
        }
        out
    }
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U32(v) => {
            put_u32(out, TYPE_U32);
            put_u32(out, *v);
        }
        GgufValue::I32(v) => {
            put_u32(out, TYPE_I32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        GgufValue::F32(v) => {
            put_u32(out, TYPE_F32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        GgufValue::Bool(v) => {
            put_u32(out, TYPE_BOOL);
            out.push(*v as u8);
        }
        GgufValue::Str(s) => {
            put_u32(out, TYPE_STRING);
            put_str(out, s);
        }
        GgufValue::StrArray(items) => {
            put_u32(out, TYPE_ARRAY);
            put_u32(out, TYPE_STRING);
            put_u64(out, items.len() as u64);
            for s in items {
                put_str(out, s);
            }
        }
        GgufValue::I32Array(items) => {
            put_u32(out, TYPE_ARRAY);
            put_u32(out, TYPE_I32);
            put_u64(out, items.len() as u64);
            for v in items {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        GgufValue::Raw(ty, bytes) => {
            put_u32(out, *ty);
            out.extend_from_slice(bytes);
        }
        GgufValue::F32Array(items) => {
            put_u32(out, TYPE_ARRAY);
            put_u32(out, TYPE_F32);
            put_u64(out, items.len() as u64);
            for v in items {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}
