//! Merging an adapter into its base model: W' = W + scale·B·A for every adapted linear, the
//! result written as a Hugging Face folder (config.json, model.safetensors in f16 or f32, the
//! tokenizer files) that transformers loads without PEFT. The folder is written under a
//! temporary name and renamed into place.

use std::path::Path;

use half::f16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::add_lora;
use super::peft::Adapter;
use crate::model::transformer::Transformer;
use crate::model::{ModelConfig, ModelError, WeightSource};
use crate::quant::nf4::Nf4Tensor;
use crate::train::dump_step::Tensors;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeDtype {
    F16,
    F32,
}

/// Which base values the adapter is added to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeBase {
    /// The model's own weights (dequantized if it is stored quantized): the usual QLoRA
    /// practice of merging into the 16-bit model.
    Original,
    /// The NF4 round trip of those weights (blocksize 64, double quantization): exactly the
    /// base the adapter was trained against.
    Nf4,
}

/// The merged weights of every base tensor, by name.
pub fn merged_tensors(
    config: &ModelConfig,
    weights: &dyn WeightSource,
    adapter: &Adapter,
    base: MergeBase,
    mut progress: impl FnMut(usize, usize),
) -> Result<Tensors, ModelError> {
    let names = Transformer::base_tensors(config)?;
    let scale = adapter.config.scale() as f32;
    let r = adapter.config.r;
    let mut used = 0;
    let mut out = Vec::new();
    for (i, (name, shape)) in names.iter().enumerate() {
        let mut w = match weights.stored_nf4(name)? {
            Some(q) => q.dequantize(),
            None => weights.f32(name, shape)?,
        };
        let module = name.strip_suffix(".weight").unwrap_or(name);
        let a_name = format!("base_model.model.{module}.lora_A.weight");
        let b_name = format!("base_model.model.{module}.lora_B.weight");
        if let (Some((a_shape, a)), Some((b_shape, b))) =
            (adapter.tensors.get(&a_name), adapter.tensors.get(&b_name))
        {
            let (o, inp) = (shape[0], shape[1]);
            if a_shape != &[r, inp] || b_shape != &[o, r] {
                return Err(ModelError::BadTensor {
                    path: "adapter".into(),
                    tensor: a_name,
                    expected: format!("A [{r}, {inp}] and B [{o}, {r}]"),
                    found: format!("A {a_shape:?} and B {b_shape:?}"),
                });
            }
            if base == MergeBase::Nf4 {
                w = Nf4Tensor::quantize(&w, shape, 64, true)
                    .map_err(|e| ModelError::Invalid {
                        path: name.clone(),
                        msg: e.to_string(),
                    })?
                    .dequantize();
            }
            add_lora(&mut w, a, b, o, inp, r, scale);
            used += 2;
            let m_name = super::peft_magnitude_name(module);
            match adapter.tensors.get(&m_name) {
                Some((m_shape, m)) if m_shape[..] == [o] => {
                    crate::ops::dora::scale_rows_to(&mut w, m, inp);
                    used += 1;
                }
                Some((m_shape, _)) => {
                    return Err(ModelError::BadTensor {
                        path: "adapter".into(),
                        tensor: m_name,
                        expected: format!("[{o}]"),
                        found: format!("{m_shape:?}"),
                    })
                }
                None if adapter.config.use_dora => {
                    return Err(ModelError::MissingTensor {
                        path: "the DoRA adapter".into(),
                        tensor: m_name,
                    })
                }
                None => {}
            }
        }
        out.push((name.clone(), shape.clone(), w));
        progress(i + 1, names.len());
    }
    if used != adapter.tensors.len() {
        let unused: Vec<&String> = adapter
            .tensors
            .keys()
            .filter(|n| {
                let module = n
                    .trim_start_matches("base_model.model.")
                    .replace(".lora_A.weight", ".weight")
                    .replace(".lora_B.weight", ".weight")
                    .replace(super::MAGNITUDE_SUFFIX, ".weight");
                !names.iter().any(|(m, _)| *m == module)
            })
            .collect();
        return Err(ModelError::Invalid {
            path: "adapter".into(),
            msg: format!("tensors that match no module of the model: {unused:?}"),
        });
    }
    Ok(out)
}

/// The files a merged model folder holds (`write_model_folder` writes these and no others).
pub const MODEL_FOLDER_FILES: [&str; 6] = [
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// The mark `write_model_folder` leaves in model.safetensors' metadata (`"webqlora":
/// "merged"`): how a later merge knows a folder as an earlier merge's output, to replace
/// without `--force`. A folder of model files without it is somebody's model.
const MERGE_MARK: (&str, &str) = ("webqlora", "merged");

/// Whether `weights` is a safetensors file whose metadata carries `MERGE_MARK`.
fn written_by_merge(weights: &Path) -> bool {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(weights) else {
        return false;
    };
    let mut len = [0u8; 8];
    if file.read_exact(&mut len).is_err() {
        return false;
    }
    let len = u64::from_le_bytes(len);
    // A merge's header is a few hundred bytes a tensor; refuse to read a crafted length.
    if len > 64 << 20 {
        return false;
    }
    let mut header = vec![0u8; len as usize];
    if file.read_exact(&mut header).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|h| {
            h.get("__metadata__")?
                .get(MERGE_MARK.0)?
                .as_str()
                .map(|v| v == MERGE_MARK.1)
        })
        .unwrap_or(false)
}

/// Where `write_model_folder` may write: `dir` by its real path when it exists (`--output .`
/// has no name to put a temporary sibling beside). Refused, unless `force`, when it is not
/// empty and not an earlier merge's output (model files a merge marked, and nothing else);
/// refused always when it is a file. Called before merging, so a refusal costs nothing, and
/// again when writing.
pub fn check_output_folder(dir: &Path, force: bool) -> Result<std::path::PathBuf, ModelError> {
    let invalid = |msg: String| ModelError::Invalid {
        path: dir.display().to_string(),
        msg,
    };
    let io = |path: &Path, source: std::io::Error| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    if !dir.exists() {
        return Ok(dir.to_path_buf());
    }
    let real = dir.canonicalize().map_err(|e| io(dir, e))?;
    if !real.is_dir() {
        return Err(invalid("exists and is not a folder".into()));
    }
    let mut names: Vec<String> = std::fs::read_dir(&real)
        .map_err(|e| io(&real, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() || force {
        return Ok(real);
    }
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !MODEL_FOLDER_FILES.contains(&n.as_str()))
        .collect();
    if !foreign.is_empty() {
        return Err(invalid(format!(
            "the folder is not empty and holds files a merge does not write ({}); choose a new \
             folder, or add --force to write the merged model's files into it (nothing else in \
             it is touched)",
            foreign
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !written_by_merge(&real.join("model.safetensors")) {
        return Err(invalid(format!(
            "the folder holds a model no merge wrote ({}); choose a new folder, or add --force \
             to replace those files",
            names.join(", ")
        )));
    }
    Ok(real)
}

/// Write `tensors` and `files` (name, bytes; names from `MODEL_FOLDER_FILES`) as a model
/// folder `dir`. Everything is written into a temporary folder beside `dir` first and moved
/// into place only when complete, so an error leaves nothing behind. An existing `dir` must be
/// empty or hold only files a merge writes (an earlier merge), unless `force`; even then only
/// those files are replaced and nothing else in `dir` is touched.
pub fn write_model_folder(
    dir: &Path,
    tensors: &Tensors,
    dtype: MergeDtype,
    files: &[(&str, Vec<u8>)],
    force: bool,
) -> Result<(), ModelError> {
    let io = |path: &Path, source: std::io::Error| ModelError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| match dtype {
            MergeDtype::F32 => bytemuck::cast_slice(v).to_vec(),
            MergeDtype::F16 => v
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
        })
        .collect();
    let st_dtype = match dtype {
        MergeDtype::F32 => Dtype::F32,
        MergeDtype::F16 => Dtype::F16,
    };
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(st_dtype, s.clone(), b).expect("shape and data agree"),
            )
        })
        .collect();
    let metadata = [
        ("format".to_string(), "pt".to_string()),
        (MERGE_MARK.0.to_string(), MERGE_MARK.1.to_string()),
    ]
    .into_iter()
    .collect();
    let dir = check_output_folder(dir, force)?;
    let exists = dir.exists();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    crate::io::remove_stale_temps(&dir, "merge");
    let tmp = crate::io::temp_sibling(&dir, "merge");
    let written = std::fs::create_dir(&tmp)
        .map_err(|e| io(&tmp, e))
        .and_then(|()| {
            let weights = tmp.join("model.safetensors");
            safetensors::serialize_to_file(views, Some(metadata), &weights).map_err(|e| {
                ModelError::Invalid {
                    path: weights.display().to_string(),
                    msg: e.to_string(),
                }
            })?;
            for (file, content) in files {
                std::fs::write(tmp.join(file), content).map_err(|e| io(&tmp.join(file), e))?;
            }
            if exists {
                // Into the existing folder, file by file; it stays the user's folder.
                for entry in std::fs::read_dir(&tmp).map_err(|e| io(&tmp, e))?.flatten() {
                    let to = dir.join(entry.file_name());
                    std::fs::rename(entry.path(), &to).map_err(|e| io(&to, e))?;
                }
                std::fs::remove_dir(&tmp).map_err(|e| io(&tmp, e))
            } else {
                std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))
            }
        });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}
