//! GGUF model files (llama.cpp): header, metadata, tensor table; weights dequantized to f32
//! under their Hugging Face names and layout.
//!
//! Layout (version 2 and 3, little-endian): "GGUF", version u32, tensor count u64, metadata
//! count u64; metadata (key string, type u32, value); tensor infos (name, dims count u32,
//! dims u64 with the fastest-varying first, ggml type u32, offset u64 into the data section);
//! the data section starts at the next multiple of `general.alignment` (32 by default).
//!
//! llama.cpp stores each head's q and k rows interleaved for its rotary layout
//! (convert_hf_to_gguf's `permute`: row h·D + 2j + i holds Hugging Face row h·D + i·D/2 + j);
//! reading undoes it, so every tensor comes out as the Hugging Face model has it and an
//! adapter trained on it is valid for the Hugging Face model.

use std::collections::{BTreeMap, HashMap};

use super::file_bytes::FileBytes;
use super::{ModelConfig, ModelError, RopeScaling, WeightSource};
use crate::quant::ggml::{dequantize, GgmlType};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(i) if *i >= 0 => Some(*i as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(f) => Some(*f),
            MetaValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct TensorInfo {
    ty: GgmlType,
    /// Dimensions as Hugging Face orders them (slowest first).
    shape: Vec<usize>,
    offset: usize,
}

pub struct GgufFile {
    path: String,
    map: FileBytes,
    pub metadata: BTreeMap<String, MetaValue>,
    tensors: HashMap<String, TensorInfo>,
    data_start: usize,
    config: ModelConfig,
}

/// How deep metadata arrays may nest (real files: one level, a list of strings or numbers).
const MAX_NESTING: usize = 4;

/// A bounds-checked little-endian reader over the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: String) -> ModelError {
        ModelError::Invalid {
            path: self.path.into(),
            msg,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end
            .ok_or_else(|| self.err(format!("truncated: {n} bytes wanted at byte {}", self.at)))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn count(&mut self, what: &str) -> Result<usize, ModelError> {
        let n = self.u64()?;
        // No count can exceed the bytes left: refuses corrupt headers before allocating.
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(self.err(format!(
                "{what} count {n} at byte {} is larger than the file",
                self.at - 8
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.count("string length")?;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| self.err(format!("string at byte {at} is not UTF-8")))
    }

    /// A metadata value of type `ty`; arrays nest at most `MAX_NESTING` deep (a file nesting
    /// them millions deep would otherwise overflow the stack) and hold no more items than
    /// the bytes left can (each item's smallest encoding counted).
    fn value(&mut self, ty: u32) -> Result<MetaValue, ModelError> {
        self.value_at(ty, 0)
    }

    fn value_at(&mut self, ty: u32, depth: usize) -> Result<MetaValue, ModelError> {
        let b = |c: &mut Self, n: usize| c.take(n).map(|s| s.to_vec());
        Ok(match ty {
            0 => MetaValue::Int(b(self, 1)?[0] as i64),
            1 => MetaValue::Int(b(self, 1)?[0] as i8 as i64),
            2 => MetaValue::Int(u16::from_le_bytes(b(self, 2)?.try_into().expect("2")) as i64),
            3 => MetaValue::Int(i16::from_le_bytes(b(self, 2)?.try_into().expect("2")) as i64),
            4 => MetaValue::Int(self.u32()? as i64),
            5 => MetaValue::Int(self.u32()? as i32 as i64),
            6 => MetaValue::Float(f32::from_le_bytes(b(self, 4)?.try_into().expect("4")) as f64),
            7 => MetaValue::Bool(b(self, 1)?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.err(format!(
                        "metadata array at byte {} is nested more than {MAX_NESTING} deep",
                        self.at
                    )));
                }
                let item = self.u32()?;
                let n = self.count("array")?;
                let smallest = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    _ => 12,
                };
                if n.checked_mul(smallest)
                    .is_none_or(|b| b > self.bytes.len() - self.at)
                {
                    return Err(self.err(format!(
                        "array of {n} items at byte {} is larger than the file",
                        self.at - 8
                    )));
                }
                MetaValue::Array(
                    (0..n)
                        .map(|_| self.value_at(item, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            }
            10 => MetaValue::Int(self.u64()? as i64),
            11 => MetaValue::Int(self.u64()? as i64),
            12 => MetaValue::Float(f64::from_le_bytes(b(self, 8)?.try_into().expect("8"))),
            other => {
                return Err(self.err(format!(
                    "unknown metadata type {other} at byte {}",
                    self.at - 4
                )))
            }
        })
    }
}

/// The GGUF name of a Hugging Face tensor name of a Llama model.
pub fn gguf_name(hf: &str) -> Option<String> {
    gguf_name_for(&super::family::LLAMA, hf)
}

/// The GGUF name of a Hugging Face tensor of `family` (Gemma's sandwich norms are named
/// apart: its post_attention_layernorm is the attention output's, pre_feedforward_layernorm
/// the MLP input's).
pub fn gguf_name_for(family: &super::family::Family, hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    let part = match module {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" if family.sandwich_norms => "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight" if family.sandwich_norms => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" if family.sandwich_norms => "post_ffw_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.bias" => "attn_output.bias",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        // Phi-3's fused modules (its ffn_up holds gate rows, then up rows).
        "self_attn.qkv_proj.weight" => "attn_qkv.weight",
        "mlp.gate_up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// Undo llama.cpp's q/k permutation of a [heads·D, in] weight (rows of `cols` values, or of
/// `cols` bytes of block codes).
pub fn unpermute_rows<T: Copy + Default>(values: &[T], heads: usize, cols: usize) -> Vec<T> {
    move_rows(values, heads, cols, false)
}

/// llama.cpp's q/k permutation (convert_hf_to_gguf's `permute`) of the rows of a
/// [heads·D, cols] matrix, the inverse of `unpermute_rows`: what an adapter's B or a merged
/// weight needs to match a Llama GGUF's rows.
pub fn permute_rows<T: Copy + Default>(values: &[T], heads: usize, cols: usize) -> Vec<T> {
    move_rows(values, heads, cols, true)
}

/// Row h·D + 2j + i of the GGUF layout is Hugging Face row h·D + i·D/2 + j; move rows from
/// one layout to the other.
fn move_rows<T: Copy + Default>(values: &[T], heads: usize, cols: usize, to_gguf: bool) -> Vec<T> {
    let rows = values.len() / cols;
    let d = rows / heads;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for j in 0..d / 2 {
            for i in 0..2 {
                let gguf = h * d + 2 * j + i;
                let hf = h * d + i * d / 2 + j;
                let (from, to) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

impl Cursor<'_> {
    /// The magic, version and metadata: (tensor count, metadata).
    fn header(&mut self) -> Result<(usize, BTreeMap<String, MetaValue>), ModelError> {
        if self.take(4)? != b"GGUF" {
            return Err(self.err("not a GGUF file (no GGUF magic)".into()));
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(self.err(format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let tensor_count = self.count("tensor")?;
        let meta_count = self.count("metadata")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..meta_count {
            let key = self.string()?;
            let ty = self.u32()?;
            metadata.insert(key, self.value(ty)?);
        }
        Ok((tensor_count, metadata))
    }
}

/// A GGUF file's metadata entries as stored, in file order: key, GGUF value type and the
/// value's bytes (to copy into a file we write, types and all).
pub fn read_raw_metadata(
    map: &[u8],
    name: &str,
) -> Result<Vec<(String, u32, Vec<u8>)>, ModelError> {
    let mut c = Cursor {
        bytes: map,
        at: 0,
        path: name,
    };
    if c.take(4)? != b"GGUF" {
        return Err(c.err("not a GGUF file (no GGUF magic)".into()));
    }
    c.u32()?;
    c.count("tensor")?;
    let n = c.count("metadata")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let key = c.string()?;
        let ty = c.u32()?;
        let start = c.at;
        c.value(ty)?;
        out.push((key, ty, map[start..c.at].to_vec()));
    }
    Ok(out)
}

/// A GGUF file's metadata alone (its tokenizer, say), whatever its architecture.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_metadata(path: &std::path::Path) -> Result<BTreeMap<String, MetaValue>, ModelError> {
    let map = super::file_bytes::map_file(path)?;
    parse_metadata(&map, &path.display().to_string())
}

/// The metadata of a GGUF file's bytes; `name` names it in errors.
pub fn parse_metadata(bytes: &[u8], name: &str) -> Result<BTreeMap<String, MetaValue>, ModelError> {
    let mut c = Cursor {
        bytes,
        at: 0,
        path: name,
    };
    Ok(c.header()?.1)
}

/// A GGUF file's tables: metadata, tensor infos by name (bounds-checked against the file) and
/// where the data section starts.
type Tables = (
    BTreeMap<String, MetaValue>,
    HashMap<String, TensorInfo>,
    usize,
);

fn parse_tables(map: &[u8], shown: &str) -> Result<Tables, ModelError> {
    let mut c = Cursor {
        bytes: map,
        at: 0,
        path: shown,
    };
    let (tensor_count, metadata) = c.header()?;
    // Each tensor's entry takes at least 24 bytes (an empty name, one dimension, type, offset).
    if tensor_count > (map.len() - c.at) / 24 {
        return Err(c.err(format!(
            "{tensor_count} tensors: more than the file's tensor table can hold"
        )));
    }
    let mut infos = Vec::with_capacity(tensor_count);
    let arch = metadata
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .unwrap_or("general");
    for _ in 0..tensor_count {
        let name = c.string()?;
        let info = tensor_entry(&mut c, &name).map_err(|e| {
            // A metadata count one too low reads the last key as a tensor: say so, rather
            // than report its value type as a dimension count or a ggml type.
            let key_like = ["general.", "tokenizer.", &format!("{arch}.")]
                .iter()
                .any(|p| name.starts_with(p));
            match e {
                ModelError::Invalid { path, msg } if key_like => ModelError::Invalid {
                    path,
                    msg: format!(
                        "{msg}; '{name}' is a metadata key, so the header's metadata count ({}) \
                         is too low",
                        metadata.len()
                    ),
                },
                e => e,
            }
        })?;
        infos.push((name, info));
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
            _ => {
                return Err(c.err(format!(
                    "metadata 'general.alignment' is {v:?}, not a power of two"
                )))
            }
        },
    };
    let data_start = c.at.div_ceil(alignment) * alignment;
    let mut tensors = HashMap::new();
    for (name, info) in infos {
        let numel = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = numel.and_then(|n| info.ty.bytes_for(n)).ok_or_else(|| {
            // Rows are whole blocks (checked with the entry): only the size can fail here.
            c.err(format!(
                "tensor '{name}' of shape {:?} ({}) is larger than any file",
                info.shape,
                info.ty.name()
            ))
        })?;
        if !info.offset.is_multiple_of(alignment) {
            return Err(c.err(format!(
                "tensor '{name}' starts at data offset {}, not a multiple of the file's \
                 alignment {alignment}",
                info.offset
            )));
        }
        let end = data_start
            .checked_add(info.offset)
            .and_then(|start| start.checked_add(bytes));
        if end.is_none_or(|end| end > map.len()) {
            return Err(c.err(format!(
                "tensor '{name}' (data offset {}, {bytes} bytes) runs past the end of the file \
                 (truncated?)",
                info.offset
            )));
        }
        if tensors.contains_key(&name) {
            return Err(c.err(format!("tensor '{name}' appears twice in the tensor table")));
        }
        tensors.insert(name, info);
    }
    Ok((metadata, tensors, data_start))
}

/// One tensor-table entry after its name: dimensions, type and offset, each checked.
fn tensor_entry(c: &mut Cursor<'_>, name: &str) -> Result<TensorInfo, ModelError> {
    let n_dims = c.u32()? as usize;
    if !(1..=4).contains(&n_dims) {
        return Err(c.err(format!("tensor '{name}' has {n_dims} dimensions (1 to 4)")));
    }
    let mut dims = (0..n_dims)
        .map(|_| c.u64().map(|d| d as usize))
        .collect::<Result<Vec<_>, _>>()?;
    if dims.contains(&0) {
        return Err(c.err(format!("tensor '{name}' has an empty dimension {dims:?}")));
    }
    let type_id = c.u32()?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| {
        c.err(format!(
            "tensor '{name}' has ggml type {type_id}, not supported (F32, F16, BF16, \
                 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)"
        ))
    })?;
    // The rows (ggml's first dimension) must be whole blocks: a tensor's values are read
    // row by row.
    let block = ty.block().0;
    if !dims[0].is_multiple_of(block) {
        return Err(c.err(format!(
            "tensor '{name}': rows of {} values are not whole {} blocks of {block}",
            dims[0],
            ty.name()
        )));
    }
    let offset = c.u64()? as usize;
    dims.reverse();
    Ok(TensorInfo {
        ty,
        shape: dims,
        offset,
    })
}

/// Tensors by name: (the type stored, the Hugging Face shape, the values in f32).
pub type TensorsF32 = BTreeMap<String, (GgmlType, Vec<usize>, Vec<f32>)>;

/// Any GGUF file's metadata and tensors (an adapter, a model of any architecture), each
/// tensor dequantized to f32 in the file's own row order (no q/k unpermuting).
pub fn read_tensors(
    map: &[u8],
    name: &str,
) -> Result<(BTreeMap<String, MetaValue>, TensorsF32), ModelError> {
    let (metadata, tensors, data_start) = parse_tables(map, name)?;
    let tensors = tensors
        .into_iter()
        .map(|(n, info)| {
            let numel: usize = info.shape.iter().product();
            let start = data_start + info.offset;
            let bytes = &map[start..start + info.ty.bytes_for(numel).expect("checked")];
            (n, (info.ty, info.shape, dequantize(info.ty, bytes)))
        })
        .collect();
    Ok((metadata, tensors))
}

impl GgufFile {
    /// Open (memory-map) a GGUF file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<GgufFile, ModelError> {
        Self::from_bytes(
            super::file_bytes::map_file(path)?,
            &path.display().to_string(),
        )
    }

    /// Read a GGUF file's bytes; `name` names it in errors.
    pub fn from_bytes(map: FileBytes, name: &str) -> Result<GgufFile, ModelError> {
        let shown = name.to_string();
        let (metadata, tensors, data_start) = parse_tables(&map, &shown)?;
        let config = config_from_metadata(&metadata, &tensors, &shown)?;
        let mut file = GgufFile {
            path: shown,
            map,
            metadata,
            tensors,
            data_start,
            config,
        };
        if let Some(scaling) = longrope(&file)? {
            file.config.rope_scaling = scaling;
            file.config
                .check()
                .map_err(|(_, msg)| ModelError::Invalid {
                    path: file.path.clone(),
                    msg: format!("tensors '{LONGROPE_SHORT}' and '{LONGROPE_LONG}': {msg}"),
                })?;
        }
        // llama.cpp keeps Llama 3's RoPE scaling as one divisor per frequency.
        if let Some((_, divisors)) = file.tensor(ROPE_FREQS) {
            file.config.rope_scaling = RopeScaling::Divisors(divisors);
            file.config
                .check()
                .map_err(|(_, msg)| ModelError::Invalid {
                    path: file.path.clone(),
                    msg: format!("tensor '{ROPE_FREQS}' {msg}"),
                })?;
        }
        Ok(file)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Where it was read from (for messages).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A GGUF tensor (by its GGUF name) as f32, with its Hugging Face shape.
    pub fn tensor(&self, gguf: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        let info = self.tensors.get(gguf)?;
        let numel: usize = info.shape.iter().product();
        let start = self.data_start + info.offset;
        let bytes = &self.map[start..start + info.ty.bytes_for(numel).expect("checked at open")];
        Some((info.shape.clone(), dequantize(info.ty, bytes)))
    }
}

impl GgufFile {
    /// The heads of a weight whose rows llama.cpp permuted (q and k, for Llama's rotary
    /// layout only, not qwen2's or Gemma's), by Hugging Face name.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        if !self.config.family().gguf_qk_permuted {
            None
        } else if name.ends_with("q_proj.weight") {
            Some(self.config.num_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.config.num_kv_heads)
        } else {
            None
        }
    }
}

/// The GGUF tensor of RoPE's per-frequency divisors (Llama 3.1+ converted by llama.cpp).
const ROPE_FREQS: &str = "rope_freqs.weight";

/// LongRoPE's per-frequency factors as llama.cpp's converter writes them (Phi-3 128k,
/// Phi-3.5, Phi-4-mini), with `rope.scaling.original_context_length` and
/// `rope.scaling.attn_factor`.
const LONGROPE_SHORT: &str = "rope_factors_short.weight";
const LONGROPE_LONG: &str = "rope_factors_long.weight";

/// A GGUF's LongRoPE scaling, where it has the factors: the short ones up to the original
/// context, the long ones past it (as transformers and llama.cpp choose), and cos and sin
/// scaled by the file's `attn_factor` (else √(1 + ln f / ln original), f = context_length /
/// original, as the converter computes it). Both factor tensors and the original context are
/// required.
fn longrope(file: &GgufFile) -> Result<Option<RopeScaling>, ModelError> {
    let err = |msg: String| ModelError::Invalid {
        path: file.path.clone(),
        msg,
    };
    let (short, long) = match (file.tensor(LONGROPE_SHORT), file.tensor(LONGROPE_LONG)) {
        (None, None) => return Ok(None),
        (Some((_, short)), Some((_, long))) => (short, long),
        (Some(_), None) => {
            return Err(err(format!(
                "tensor '{LONGROPE_SHORT}' without '{LONGROPE_LONG}': LongRoPE needs both"
            )))
        }
        (None, Some(_)) => {
            return Err(err(format!(
                "tensor '{LONGROPE_LONG}' without '{LONGROPE_SHORT}': LongRoPE needs both"
            )))
        }
    };
    let arch = file
        .metadata
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .unwrap_or("");
    let key = format!("{arch}.rope.scaling.original_context_length");
    let original = match file.metadata.get(&key).and_then(MetaValue::as_u64) {
        Some(n) if n > 0 => n as usize,
        _ => {
            return Err(err(format!(
                "metadata '{key}' is missing or 0: LongRoPE's factors need the original context"
            )))
        }
    };
    let key = format!("{arch}.rope.scaling.attn_factor");
    let attention_factor = match file.metadata.get(&key).and_then(MetaValue::as_f64) {
        Some(a) if a.is_finite() && a > 0.0 => a,
        Some(a) => return Err(err(format!("metadata '{key}' is {a}, not above 0"))),
        None => {
            let scale = file.config.max_position_embeddings as f64 / original as f64;
            match scale > 1.0 {
                true => (1.0 + scale.ln() / (original as f64).ln()).sqrt(),
                false => 1.0,
            }
        }
    };
    let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
    Ok(Some(RopeScaling::LongRope {
        short: wide(short),
        long: wide(long),
        original_max_position_embeddings: original,
        attention_factor,
    }))
}

fn config_from_metadata(
    m: &BTreeMap<String, MetaValue>,
    tensors: &HashMap<String, TensorInfo>,
    path: &str,
) -> Result<ModelConfig, ModelError> {
    let err = |msg: String| ModelError::Invalid {
        path: path.into(),
        msg,
    };
    let arch = m
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .unwrap_or("");
    let Some(family) = super::family::by_gguf(arch) else {
        return Err(err(format!(
            "architecture '{arch}' is not supported ({})",
            super::family::gguf_architectures()
        )));
    };
    let architecture = family.architecture;
    let count = |key: &str| -> Result<usize, ModelError> {
        m.get(&format!("{arch}.{key}"))
            .and_then(MetaValue::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| err(format!("metadata '{arch}.{key}' is missing")))
    };
    let hidden_size = count("embedding_length")?;
    let num_heads = count("attention.head_count")?;
    let num_kv_heads = count("attention.head_count_kv").unwrap_or(num_heads);
    let vocab_size = match m.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(tokens)) => tokens.len(),
        _ => tensors
            .get("token_embd.weight")
            .map(|t| t.shape[0])
            .ok_or_else(|| err("no vocabulary".into()))?,
    };
    let id = |key: &str| m.get(key).and_then(MetaValue::as_u64).map(|v| v as u32);
    // Scalings other than llama3's (which comes as `rope_freqs.weight`) change the angles in
    // ways this loader does not model: refuse them rather than train on wrong positions.
    let scaling_key = format!("{arch}.rope.scaling.type");
    let rope_scaling = match m.get(&scaling_key).and_then(MetaValue::as_str) {
        None | Some("none") => RopeScaling::None,
        Some("linear") => {
            let key = format!("{arch}.rope.scaling.factor");
            match m.get(&key).and_then(MetaValue::as_f64) {
                Some(factor) if factor.is_finite() && factor > 0.0 => {
                    RopeScaling::Linear { factor }
                }
                _ => return Err(err(format!("metadata '{key}' is missing or not above 0"))),
            }
        }
        Some(other) => {
            return Err(err(format!(
                "metadata '{scaling_key}' is '{other}': only unscaled, linear and llama3's \
                 rope_freqs are supported"
            )))
        }
    };
    check_counts(m, tensors, arch, path, vocab_size, hidden_size)?;
    // Qwen3 and Gemma 3 give the head size as key_length (not hidden / heads).
    // Without key_length, the head size is what the query weight's rows give (hidden / heads
    // where no such weight is there to say).
    let rows = |t: &str| tensors.get(t).and_then(|t| t.shape.first().copied());
    let head_dim = match count("attention.key_length") {
        Ok(d) => d,
        Err(_) => rows("blk.0.attn_q.weight")
            .map(|r| r / num_heads.max(1))
            .or_else(|| {
                rows("blk.0.attn_qkv.weight").map(|r| r / (num_heads + 2 * num_kv_heads).max(1))
            })
            .unwrap_or(hidden_size / num_heads.max(1)),
    };
    // The channels RoPE rotates (Phi-4-mini's partial rotary factor: fewer than the head's).
    let rotary_dim = count("rope.dimension_count").unwrap_or(head_dim);
    let mut config = ModelConfig {
        architecture,
        vocab_size,
        hidden_size,
        intermediate_size: count("feed_forward_length")?,
        num_layers: count("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        rotary_dim,
        rms_norm_eps: m
            .get(&format!("{arch}.attention.layer_norm_rms_epsilon"))
            .and_then(MetaValue::as_f64)
            .unwrap_or(1e-5),
        rope_theta: m
            .get(&format!("{arch}.rope.freq_base"))
            .and_then(MetaValue::as_f64)
            .unwrap_or(10000.0),
        rope_scaling,
        tie_word_embeddings: !tensors.contains_key("output.weight"),
        qkv_bias: family.qkv_bias,
        qk_norm: family.qk_norm,
        max_position_embeddings: count("context_length").unwrap_or(2048),
        query_pre_attn_scalar: None,
        layer_types: Vec::new(),
        // 0 is llama.cpp's "no window" (its converter writes it for Phi-4).
        sliding_window: count("attention.sliding_window").ok().filter(|&w| w > 0),
        rope_local_theta: None,
        no_rope_layers: Vec::new(),
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
        quantization: None,
        gguf_types: Default::default(),
    };
    (family.hooks.gguf_defaults)(&mut config);
    config.check().map_err(|(key, msg)| {
        // The GGUF metadata key that holds what config.json calls `key`.
        let gguf_key = match key {
            "vocab_size" => "tokenizer.ggml.tokens".to_string(),
            "hidden_size" => format!("{arch}.embedding_length"),
            "intermediate_size" => format!("{arch}.feed_forward_length"),
            "num_hidden_layers" => format!("{arch}.block_count"),
            "num_attention_heads" => format!("{arch}.attention.head_count"),
            "num_key_value_heads" => format!("{arch}.attention.head_count_kv"),
            "head_dim" => format!("{arch}.attention.key_length"),
            "partial_rotary_factor" => format!("{arch}.rope.dimension_count"),
            "max_position_embeddings" => format!("{arch}.context_length"),
            "rms_norm_eps" => format!("{arch}.attention.layer_norm_rms_epsilon"),
            "rope_theta" => format!("{arch}.rope.freq_base"),
            "bos_token_id" => "tokenizer.ggml.bos_token_id".to_string(),
            "eos_token_id" => "tokenizer.ggml.eos_token_id".to_string(),
            "sliding_window" => format!("{arch}.attention.sliding_window"),
            other => other.to_string(),
        };
        err(format!("metadata '{gguf_key}' {msg}"))
    })?;
    config.gguf_types = linear_types(&config, tensors);
    Ok(config)
}

/// The counts in the metadata against the tensors the file holds, before anything is sized
/// from them: layers against the `blk.N` tensors, the embedding's rows and width against the
/// vocabulary and `embedding_length`, the heads against the attention weights' rows, the
/// special token ids against the vocabulary. A count no tensor backs (`block_count` 2^40) is
/// an error naming its key, never an allocation.
fn check_counts(
    m: &BTreeMap<String, MetaValue>,
    tensors: &HashMap<String, TensorInfo>,
    arch: &str,
    path: &str,
    vocab: usize,
    hidden: usize,
) -> Result<(), ModelError> {
    let err = |msg: String| ModelError::Invalid {
        path: path.into(),
        msg,
    };
    let get = |key: &str| m.get(key).and_then(MetaValue::as_u64);
    let blocks = tensors
        .keys()
        .filter_map(|n| {
            n.strip_prefix("blk.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |last| last + 1);
    let key = format!("{arch}.block_count");
    if let Some(layers) = get(&key) {
        if layers != blocks as u64 {
            return Err(err(format!(
                "metadata '{key}' is {layers}, but the file holds tensors for {blocks} blocks"
            )));
        }
    }
    if let Some(embd) = tensors.get("token_embd.weight") {
        if embd.shape.len() != 2 || embd.shape[1] != hidden {
            return Err(err(format!(
                "metadata '{arch}.embedding_length' is {hidden}, but tensor 'token_embd.weight' \
                 has shape {:?}",
                embd.shape
            )));
        }
        if embd.shape[0] != vocab {
            return Err(err(format!(
                "tensor 'token_embd.weight' has {} rows, but metadata 'tokenizer.ggml.tokens' lists \
                 {vocab} tokens",
                embd.shape[0]
            )));
        }
    }
    let head_dim = get(&format!("{arch}.attention.key_length"))
        .or_else(|| get(&format!("{arch}.rope.dimension_count")));
    for (tensor, key) in [
        ("blk.0.attn_q.weight", "attention.head_count"),
        ("blk.0.attn_k.weight", "attention.head_count_kv"),
    ] {
        let (Some(t), Some(heads)) = (tensors.get(tensor), get(&format!("{arch}.{key}"))) else {
            continue;
        };
        let dim = head_dim.unwrap_or(
            hidden as u64
                / get(&format!("{arch}.attention.head_count"))
                    .unwrap_or(1)
                    .max(1),
        );
        if heads.checked_mul(dim) != Some(t.shape[0] as u64) {
            return Err(err(format!(
                "metadata '{arch}.{key}' is {heads} heads of {dim}, but '{tensor}' has {} rows",
                t.shape[0]
            )));
        }
    }
    for key in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"] {
        if let Some(id) = get(key) {
            if id >= vocab as u64 {
                return Err(err(format!(
                    "metadata '{key}' is {id}, past the vocabulary of {vocab} tokens"
                )));
            }
        }
    }
    Ok(())
}

/// The block type of each quantized linear weight in `tensors`, by Hugging Face name.
fn linear_types(
    config: &ModelConfig,
    tensors: &HashMap<String, TensorInfo>,
) -> BTreeMap<String, GgmlType> {
    (0..config.num_layers)
        .flat_map(|i| super::family::LINEAR_PATHS.map(|m| format!("model.layers.{i}.{m}.weight")))
        .filter_map(|name| {
            // A fused weight's parts (`model::fused`) are of its type.
            let stored = config.fused_weight(&name).unwrap_or_else(|| name.clone());
            let info = tensors.get(&gguf_name_for(config.family(), &stored)?)?;
            info.ty.is_quantized().then_some((name, info.ty))
        })
        .collect()
}

impl WeightSource for GgufFile {
    fn as_gguf(&self) -> Option<&GgufFile> {
        Some(self)
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name_for(self.config.family(), name).is_some_and(|g| self.tensors.contains_key(&g))
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let missing = || ModelError::MissingTensor {
            path: self.path.clone(),
            tensor: name.into(),
        };
        let family = self.config.family();
        let gguf = gguf_name_for(family, name).ok_or_else(missing)?;
        let (found, values) = self.tensor(&gguf).ok_or_else(missing)?;
        if found != shape {
            return Err(ModelError::BadTensor {
                path: self.path.clone(),
                tensor: format!("{gguf} ({name})"),
                expected: format!("shape {shape:?}"),
                found: format!("shape {found:?}"),
            });
        }
        Ok(match self.permuted_heads(name) {
            Some(h) => unpermute_rows(&values, h, shape[1]),
            // Gemma's GGUF norms hold 1 + w; Hugging Face's w is what this source gives (the
            // graph adds the one back, as transformers computes it).
            None if family.norm_plus_one && name.ends_with("norm.weight") => {
                values.into_iter().map(|v| v - 1.0).collect()
            }
            None => values,
        })
    }

    fn stored_blocks(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(GgmlType, Vec<u8>), ModelError> {
        let missing = || ModelError::MissingTensor {
            path: self.path.clone(),
            tensor: name.into(),
        };
        let gguf = gguf_name_for(self.config.family(), name).ok_or_else(missing)?;
        let info = self.tensors.get(&gguf).ok_or_else(missing)?;
        if info.shape != shape {
            return Err(ModelError::BadTensor {
                path: self.path.clone(),
                tensor: format!("{gguf} ({name})"),
                expected: format!("shape {shape:?}"),
                found: format!("shape {:?}", info.shape),
            });
        }
        let numel: usize = shape.iter().product();
        let start = self.data_start + info.offset;
        let bytes = &self.map[start..start + info.ty.bytes_for(numel).expect("checked at open")];
        let rows = shape.first().copied().unwrap_or(1).max(1);
        Ok((
            info.ty,
            match self.permuted_heads(name) {
                // Rows are whole blocks: the permutation moves each row's bytes.
                Some(h) => unpermute_rows(bytes, h, bytes.len() / rows),
                None => bytes.to_vec(),
            },
        ))
    }
}
