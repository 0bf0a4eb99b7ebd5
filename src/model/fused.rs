//! Fused weights (Phi-3's `qkv_proj`, `gate_up_proj`: `family::FusedLinear`) as the parts the
//! block declares: `FusedFiles` presents a model's files with each part readable by its own
//! name (`self_attn.q_proj.weight` is rows `0..q` of `self_attn.qkv_proj.weight`), in every
//! form a source holds (f32, bitsandbytes NF4, GGUF block codes). Adapter tensors of a fused
//! module stay whole in files and are split by rows in the graph (`transformer::part_name`);
//! `join_row_parts` puts them back together.

use std::cell::RefCell;

use super::{ModelConfig, ModelError, WeightSource};
use crate::quant::ggml::GgmlType;
use crate::quant::nf4::Nf4Tensor;

/// Where a part's rows lie in its fused weight.
struct Located {
    /// The fused weight's name in the files.
    fused: String,
    first: usize,
    rows: usize,
    /// The fused weight's rows.
    total: usize,
}

/// `files`, with the parts of fused weights readable by name. Where the graph quantizes to
/// NF4 (`nf4_blocksize`) and the files hold f32, the whole fused weight is quantized and then
/// split, as bitsandbytes quantizes the fused module (one double-quantization over all its
/// blocks).
pub struct FusedFiles<'a> {
    files: &'a dyn WeightSource,
    config: &'a ModelConfig,
    nf4_blocksize: Option<usize>,
    /// The last fused weight read, as f32 and as NF4: its parts are read one after another.
    values: RefCell<Option<(String, std::rc::Rc<Vec<f32>>)>>,
    nf4: RefCell<Option<(String, std::rc::Rc<Nf4Tensor>)>>,
}

impl<'a> FusedFiles<'a> {
    pub fn new(
        files: &'a dyn WeightSource,
        config: &'a ModelConfig,
        nf4_blocksize: Option<usize>,
    ) -> FusedFiles<'a> {
        FusedFiles {
            files,
            config,
            nf4_blocksize,
            values: RefCell::new(None),
            nf4: RefCell::new(None),
        }
    }

    fn locate(&self, name: &str) -> Option<Located> {
        let (fused_name, part, fused) = self.config.fused_part(name)?;
        let (first, total) = self.config.fused_rows(fused, part);
        Some(Located {
            fused: fused_name,
            first,
            rows: self.config.linear_rows(part),
            total,
        })
    }

    fn fused_values(&self, at: &Located, cols: usize) -> Result<std::rc::Rc<Vec<f32>>, ModelError> {
        if let Some((name, values)) = self.values.borrow().as_ref() {
            if *name == at.fused {
                return Ok(values.clone());
            }
        }
        let values = std::rc::Rc::new(self.files.f32(&at.fused, &[at.total, cols])?);
        *self.values.borrow_mut() = Some((at.fused.clone(), values.clone()));
        Ok(values)
    }

    fn fused_nf4(
        &self,
        at: &Located,
        cols: usize,
    ) -> Result<Option<std::rc::Rc<Nf4Tensor>>, ModelError> {
        if let Some((name, q)) = self.nf4.borrow().as_ref() {
            if *name == at.fused {
                return Ok(Some(q.clone()));
            }
        }
        let q = match (self.files.stored_nf4(&at.fused)?, self.nf4_blocksize) {
            (Some(q), _) => q,
            (None, Some(blocksize)) => {
                let values = self.fused_values(at, cols)?;
                let values = super::finite(&at.fused, values.to_vec())?;
                Nf4Tensor::quantize(&values, &[at.total, cols], blocksize, true).map_err(|e| {
                    ModelError::Invalid {
                        path: at.fused.clone(),
                        msg: e.to_string(),
                    }
                })?
            }
            (None, None) => return Ok(None),
        };
        let q = std::rc::Rc::new(q);
        *self.nf4.borrow_mut() = Some((at.fused.clone(), q.clone()));
        Ok(Some(q))
    }
}

impl WeightSource for FusedFiles<'_> {
    fn contains(&self, name: &str) -> bool {
        match self.locate(name) {
            Some(at) => self.files.contains(&at.fused),
            None => self.files.contains(name),
        }
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let Some(at) = self.locate(name) else {
            return self.files.f32(name, shape);
        };
        let cols = shape.get(1).copied().unwrap_or(0);
        let values = self.fused_values(&at, cols)?;
        Ok(values[at.first * cols..(at.first + at.rows) * cols].to_vec())
    }

    fn stored_nf4(&self, name: &str) -> Result<Option<Nf4Tensor>, ModelError> {
        let Some(at) = self.locate(name) else {
            return self.files.stored_nf4(name);
        };
        // Fused modules read the layer's hidden state (a stored weight of another width is
        // refused by the loader's shape check on the part).
        let cols = self.config.hidden_size;
        let Some(q) = self.fused_nf4(&at, cols)? else {
            return Ok(None);
        };
        q.rows(at.first, at.rows)
            .map(Some)
            .map_err(|msg| ModelError::Invalid {
                path: format!("tensor '{}'", at.fused),
                msg: format!("cannot split it into its parts: {msg}"),
            })
    }

    fn stored_blocks(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(GgmlType, Vec<u8>), ModelError> {
        let Some(at) = self.locate(name) else {
            return self.files.stored_blocks(name, shape);
        };
        let cols = shape.get(1).copied().unwrap_or(0);
        let (ty, bytes) = self.files.stored_blocks(&at.fused, &[at.total, cols])?;
        let row = bytes.len() / at.total.max(1);
        Ok((
            ty,
            bytes[at.first * row..(at.first + at.rows) * row].to_vec(),
        ))
    }

    fn as_gguf(&self) -> Option<&super::gguf::GgufFile> {
        self.files.as_gguf()
    }
}

/// Named tensors with the row parts of one tensor (`transformer::part_name`: the graph's rows of a
/// fused module's B) joined into it, in the order their first part came.
pub fn join_row_parts(
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut parts: Vec<(String, usize, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, shape, values) in tensors {
        match super::transformer::parse_part_name(&name) {
            Some((whole, first, _)) => parts.push((whole.to_string(), first, shape, values)),
            None => out.push((name, shape, values)),
        }
    }
    let mut wholes: Vec<String> = Vec::new();
    for (whole, ..) in &parts {
        if !wholes.contains(whole) {
            wholes.push(whole.clone());
        }
    }
    for whole in wholes {
        let mut mine: Vec<&(String, usize, Vec<usize>, Vec<f32>)> =
            parts.iter().filter(|p| p.0 == whole).collect();
        mine.sort_by_key(|p| p.1);
        let cols = mine[0].2[1..].iter().product::<usize>();
        let values: Vec<f32> = mine.iter().flat_map(|p| p.3.iter().copied()).collect();
        let mut shape = mine[0].2.clone();
        shape[0] = values.len() / cols.max(1);
        out.push((whole, shape, values));
    }
    out
}

/// Rows `first .. first + rows` of a whole tensor [rows, cols…] (`values`), for the graph's
/// part of it.
pub fn row_part(values: &[f32], shape: &[usize], first: usize, rows: usize) -> Option<Vec<f32>> {
    let cols: usize = shape[1..].iter().product();
    let end = (first + rows).checked_mul(cols)?;
    (end <= values.len() && first + rows <= shape.first().copied()?)
        .then(|| values[first * cols..end].to_vec())
}
