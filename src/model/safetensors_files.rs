//! The weights of a Hugging Face folder: `model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists, memory-mapped; tensors read by name with f16/bf16
//! converted to f32.

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use super::file_bytes::FileBytes;
use super::{ModelError, WeightSource};
use crate::quant::nf4::Nf4Tensor;

struct Shard {
    path: String,
    map: FileBytes,
    /// Where tensor data starts: 8 + the header's length.
    data_start: usize,
    metadata: Metadata,
}

pub struct SafetensorsFiles {
    shards: Vec<Shard>,
    /// Tensor name -> shard index.
    index: HashMap<String, usize>,
}

impl SafetensorsFiles {
    /// Open the weights of the model folder `dir`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &Path) -> Result<SafetensorsFiles, ModelError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if single.exists() {
            return Self::open_files(&[single]);
        }
        let text = std::fs::read_to_string(&index_path).map_err(|_| ModelError::Invalid {
            path: dir.display().to_string(),
            msg: "no model.safetensors or model.safetensors.index.json".into(),
        })?;
        let shown = index_path.display().to_string();
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Invalid {
                path: shown.clone(),
                msg: format!("not valid JSON: {e}"),
            })?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| ModelError::Invalid {
                path: shown.clone(),
                msg: "no weight_map".into(),
            })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for file in map.values() {
            let file = file.as_str().ok_or_else(|| ModelError::Invalid {
                path: shown.clone(),
                msg: format!("weight_map entry {file} is not a file name"),
            })?;
            let path = dir.join(file);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        let opened = Self::open_files(&files)?;
        for (tensor, file) in map {
            if !opened.index.contains_key(tensor) {
                return Err(ModelError::MissingTensor {
                    path: format!("{}", dir.join(file.as_str().unwrap_or("")).display()),
                    tensor: tensor.clone(),
                });
            }
        }
        Ok(opened)
    }

    /// Open (memory-map) these safetensors files (a tensor may appear in only one of them).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_files(paths: &[PathBuf]) -> Result<SafetensorsFiles, ModelError> {
        let files = paths
            .iter()
            .map(|p| Ok((p.display().to_string(), super::file_bytes::map_file(p)?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        Self::from_files(files)
    }

    /// Safetensors files as (name for errors, bytes).
    pub fn from_files(files: Vec<(String, FileBytes)>) -> Result<SafetensorsFiles, ModelError> {
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for (shown, map) in files {
            let (header, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| ModelError::Invalid {
                    path: shown.clone(),
                    msg: format!("not a valid safetensors file (truncated or corrupt?): {e}"),
                })?;
            for name in metadata.tensors().keys() {
                if index.insert(name.clone(), shards.len()).is_some() {
                    return Err(ModelError::Invalid {
                        path: shown,
                        msg: format!("tensor '{name}' is in more than one file"),
                    });
                }
            }
            shards.push(Shard {
                path: shown,
                map,
                data_start: 8 + header,
                metadata,
            });
        }
        Ok(SafetensorsFiles { shards, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// (dtype, shape, bytes) of a tensor.
    pub fn raw(&self, name: &str) -> Result<(Dtype, Vec<usize>, &[u8]), ModelError> {
        let shard = self
            .index
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| ModelError::MissingTensor {
                path: self
                    .shards
                    .iter()
                    .map(|s| s.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                tensor: name.into(),
            })?;
        let info = shard.metadata.info(name).expect("indexed names have info");
        let (start, end) = info.data_offsets;
        let bytes = &shard.map[shard.data_start + start..shard.data_start + end];
        Ok((info.dtype, info.shape.clone(), bytes))
    }

    /// A tensor as f32 values (from f32, f16 or bf16), checked against `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let (dtype, found, bytes) = self.raw(name)?;
        let path = self.shards[self.index[name]].path.clone();
        if found != shape {
            return Err(ModelError::BadTensor {
                path,
                tensor: name.into(),
                expected: format!("shape {shape:?}"),
                found: format!("shape {found:?}"),
            });
        }
        Ok(match dtype {
            Dtype::F32 => bytemuck::pod_collect_to_vec(bytes),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::BadTensor {
                    path,
                    tensor: name.into(),
                    expected: "F32, F16 or BF16".into(),
                    found: format!("{other:?}"),
                })
            }
        })
    }
}

impl WeightSource for SafetensorsFiles {
    fn contains(&self, name: &str) -> bool {
        SafetensorsFiles::contains(self, name)
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        SafetensorsFiles::f32(self, name, shape)
    }

    fn stored_nf4(&self, name: &str) -> Result<Option<Nf4Tensor>, ModelError> {
        if !self.contains(&format!("{name}.quant_state.bitsandbytes__nf4")) {
            return Ok(None);
        }
        let shard = &self.shards[self.index[name]].path;
        Nf4Tensor::from_bnb(name, |n| self.raw(n).ok())
            .map(Some)
            .map_err(|e| ModelError::Invalid {
                path: shard.clone(),
                msg: e.to_string(),
            })
    }
}
