//! Merging an adapter into its base model's GGUF: a GGUF llama.cpp (and Ollama) runs as a
//! model of its own. Every metadata entry of the base file is copied as stored (architecture,
//! hyperparameters, tokenizer, chat template), `general.file_type` says the new precision;
//! every tensor is dequantized, the adapted ones get scale · B·A (B's rows permuted like the
//! file's q and k rows where llama.cpp permutes them, see `gguf_lora`), and each is written in
//! the precision asked for; a DoRA adapter's rows are then scaled to its magnitudes (permuted
//! alike) over their norms, as PEFT merges DoRA. Vectors (norms, biases, RoPE divisors) stay f32 as llama.cpp's
//! converter keeps them; a Q8_0 matrix whose rows are not whole 32-value blocks is written in
//! f16.

use std::collections::HashMap;

use super::peft::Adapter;
use crate::model::gguf::{gguf_name_for, permute_rows, read_raw_metadata, read_tensors, GgufFile};
use crate::model::gguf_write::{GgufValue, GgufWriter};
use crate::model::ModelError;

/// The precision of the merged file's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufDtype {
    F32,
    F16,
    Q8_0,
}

impl std::str::FromStr for GgufDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(GgufDtype::F32),
            "f16" => Ok(GgufDtype::F16),
            "q8_0" => Ok(GgufDtype::Q8_0),
            other => Err(format!(
                "unknown GGUF precision '{other}' (f32, f16 or q8_0)"
            )),
        }
    }
}

impl GgufDtype {
    /// llama.cpp's `general.file_type` (llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0).
    fn file_type(self) -> u32 {
        match self {
            GgufDtype::F32 => 0,
            GgufDtype::F16 => 1,
            GgufDtype::Q8_0 => 7,
        }
    }
}

/// `base` with `adapter` merged in, as a GGUF file's bytes; `progress(done, total)` after each
/// tensor. The adapter must match the model: every factor pair a module of it, with its
/// shapes.
pub fn merged_gguf_bytes(
    base: &GgufFile,
    adapter: &Adapter,
    dtype: GgufDtype,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<u8>, ModelError> {
    let config = base.config();
    let family = config.family();
    let invalid = |msg: String| ModelError::Invalid {
        path: base.path().to_string(),
        msg,
    };
    // The adapted modules by GGUF tensor name: (A, B with its rows in the file's order).
    let r = adapter.config.r;
    type Update<'a> = (&'a [f32], Vec<f32>, String, Option<Vec<f32>>);
    let mut updates: HashMap<String, Update> = HashMap::new();
    for (name, (_, a)) in &adapter.tensors {
        let Some(module) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let module = module.strip_prefix("base_model.model.").unwrap_or(module);
        let b_name = name.replace(".lora_A.weight", ".lora_B.weight");
        let Some((_, b)) = adapter.tensors.get(&b_name) else {
            return Err(invalid(format!("the adapter has no B factor for '{name}'")));
        };
        let weight = format!("{module}.weight");
        let gguf = gguf_name_for(family, &weight).ok_or_else(|| {
            invalid(format!(
                "adapter tensor '{name}': '{weight}' has no GGUF name"
            ))
        })?;
        let heads = match (family.gguf_qk_permuted, module.rsplit('.').next()) {
            (true, Some("q_proj")) => Some(config.num_heads),
            (true, Some("k_proj")) => Some(config.num_kv_heads),
            _ => None,
        };
        let permuted = |v: &Vec<f32>, cols| match heads {
            Some(h) => permute_rows(v, h, cols),
            None => v.clone(),
        };
        let magnitude = match adapter.tensors.get(&super::peft_magnitude_name(module)) {
            Some((_, m)) => Some(permuted(m, 1)),
            None if adapter.config.use_dora => {
                return Err(invalid(format!(
                    "the DoRA adapter has no magnitude for '{name}'"
                )))
            }
            None => None,
        };
        updates.insert(
            gguf,
            (a.as_slice(), permuted(b, r), name.clone(), magnitude),
        );
    }
    let magnitudes = updates.values().filter(|u| u.3.is_some()).count();
    if 2 * updates.len() + magnitudes != adapter.tensors.len() {
        let unpaired: Vec<&String> = adapter
            .tensors
            .keys()
            .filter(|n| {
                !updates.values().any(|(_, _, a, _)| {
                    a == *n
                        || a.replace("lora_A", "lora_B") == **n
                        || a.replace(".lora_A.weight", super::MAGNITUDE_SUFFIX) == **n
                })
            })
            .collect();
        return Err(invalid(format!(
            "adapter tensors without a pair: {unpaired:?}"
        )));
    }
    let (_, tensors) = read_tensors(base.bytes(), base.path())?;
    for (gguf, (_, _, name, _)) in &updates {
        if !tensors.contains_key(gguf) {
            return Err(invalid(format!(
                "adapter tensor '{name}': the model has no tensor '{gguf}'"
            )));
        }
    }
    let mut w = GgufWriter::new();
    for (key, ty, bytes) in read_raw_metadata(base.bytes(), base.path())? {
        if key != "general.alignment" {
            w.meta(&key, GgufValue::Raw(ty, bytes));
        }
    }
    w.meta("general.file_type", GgufValue::U32(dtype.file_type()));
    let scale = adapter.config.scale() as f32;
    let total = tensors.len();
    for (i, (gguf, (_, shape, mut values))) in tensors.into_iter().enumerate() {
        if let Some((a, b, name, magnitude)) = updates.get(&gguf) {
            let (out, inp) = match shape[..] {
                [out, inp] => (out, inp),
                _ => return Err(invalid(format!("'{gguf}' is not a matrix"))),
            };
            if a.len() != r * inp || b.len() != out * r {
                return Err(ModelError::BadTensor {
                    path: "adapter".into(),
                    tensor: name.clone(),
                    expected: format!("A [{r}, {inp}] and B [{out}, {r}] for '{gguf}'"),
                    found: format!("{} and {} values", a.len(), b.len()),
                });
            }
            super::add_lora(&mut values, a, b, out, inp, r, scale);
            if let Some(m) = magnitude {
                if m.len() != out {
                    return Err(ModelError::BadTensor {
                        path: "adapter".into(),
                        tensor: name.replace(".lora_A.weight", super::MAGNITUDE_SUFFIX),
                        expected: format!("[{out}] for '{gguf}'"),
                        found: format!("{} values", m.len()),
                    });
                }
                crate::ops::dora::scale_rows_to(&mut values, m, inp);
            }
        }
        let row = *shape.last().unwrap_or(&1);
        match dtype {
            _ if shape.len() < 2 => w.tensor_f32(&gguf, &shape, &values),
            GgufDtype::F32 => w.tensor_f32(&gguf, &shape, &values),
            GgufDtype::Q8_0 if row.is_multiple_of(32) => w.tensor_q8_0(&gguf, &shape, &values),
            GgufDtype::F16 | GgufDtype::Q8_0 => w.tensor_f16(&gguf, &shape, &values),
        }
        progress(i + 1, total);
    }
    Ok(w.to_bytes())
}
