//! Filling a compiled graph's parameters from a model folder and an adapter, by each
//! parameter's kind (`model::params`).

use std::collections::{HashMap, HashSet};

use super::params::ParamKind;
use super::transformer::{BaseFormat, Transformer};
use super::{finite, ModelConfig, ModelError, WeightSource};
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Role, TensorId};
use crate::lora::peft::Adapter;
use crate::ops::ggml_matmul;
use crate::ops::nf4_matmul::upload_bytes;
use crate::quant::nf4::Nf4Tensor;

/// Write every param of `model` (declared in `compiled`'s graph) that the model or an
/// adapter provides, by its kind (`ParamKind`): base weights from `files` (NF4 ones from a
/// bitsandbytes checkpoint as stored, else quantized from f32 here; f32 ones dequantized
/// when the checkpoint holds NF4), adapter tensors from `adapter`, the RoPE tables. Returns
/// the names of params nothing provided (new adapter tensors, optimizer state, caches), for
/// the caller to initialise.
pub fn upload_model(
    gpu: &Gpu,
    compiled: &CompiledGraph,
    model: &Transformer,
    files: &dyn WeightSource,
    base: BaseFormat,
    adapter: Option<&Adapter>,
) -> Result<Vec<String>, ModelError> {
    upload_model_with_progress(gpu, compiled, model, files, base, adapter, &mut |_, _| {})
}

/// `upload_model`, calling `progress(done, total)` after each tensor (for a progress bar:
/// reading, dequantizing and quantizing to NF4 take most of a model's load time).
pub fn upload_model_with_progress(
    gpu: &Gpu,
    compiled: &CompiledGraph,
    model: &Transformer,
    files: &dyn WeightSource,
    base: BaseFormat,
    adapter: Option<&Adapter>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>, ModelError> {
    let config = &model.config;
    // Fused weights (Phi-3's qkv_proj) read as the parts the graph declares.
    let blocksize = match base {
        BaseFormat::Nf4 { blocksize } => Some(blocksize),
        _ => None,
    };
    let fused = super::fused::FusedFiles::new(files, config, blocksize);
    let mut loader = Loader {
        gpu,
        compiled,
        config,
        files: &fused,
        base,
        adapter,
        whole: None,
        base_norms2: HashMap::new(),
        missing: Vec::new(),
    };
    if let Some(adapter) = adapter {
        // An adapter of the separate q/k/v (or gate/up) modules on a model whose adapters name
        // the fused module (Phi-3) was trained for another model: say so, before its tensors.
        let family = config.family();
        let targets = &adapter.config.target_modules;
        if let Some(f) = family.fused.iter().find(|f| {
            f.parts
                .iter()
                .any(|p| targets.iter().any(|t| p.rsplit('.').next() == Some(t)))
        }) {
            return Err(ModelError::Invalid {
                path: "the adapter".into(),
                msg: format!(
                    "it adapts {} apart, but {}'s adapters name the fused '{}' (PEFT's \
                     modules of this model): it was trained for another model",
                    targets.join(", "),
                    family.model_types[0],
                    f.short()
                ),
            });
        }
        // Every adapter tensor must land somewhere: one the model has no place for (another
        // model's layer count or modules) would otherwise be dropped without a word.
        let places: HashSet<&str> = model
            .params
            .iter()
            .filter_map(|(_, k)| k.adapter_name())
            .collect();
        if let Some(name) = adapter
            .tensors
            .keys()
            .find(|n| !places.contains(n.as_str()))
        {
            return Err(ModelError::Invalid {
                path: "the adapter".into(),
                msg: format!(
                    "tensor '{name}' names no LoRA module of this model ({} layers; targets {})",
                    config.num_layers,
                    adapter.config.target_modules.join(", ")
                ),
            });
        }
    }
    let mut declared: HashSet<TensorId> = HashSet::new();
    for (i, (t, kind)) in model.params.iter().enumerate() {
        progress(i + 1, model.params.len());
        declared.insert(*t);
        if let ParamKind::Nf4 { absmax, .. } = kind {
            declared.insert(*absmax);
        }
        loader.load(*t, kind)?;
    }
    // Everything else named (optimizer state, caches) is the caller's to fill.
    let graph = &compiled.graph;
    let others = graph.tensors.iter().enumerate().filter(|(i, d)| {
        d.role == Role::Param && d.named() && !declared.contains(&TensorId::from_index(*i))
    });
    let mut missing = loader.missing;
    missing.extend(others.map(|(_, d)| d.name.clone()));
    Ok(missing)
}

/// Loading's state: where the values come from, and what it has read that later params
/// reuse.
struct Loader<'a> {
    gpu: &'a Gpu,
    compiled: &'a CompiledGraph,
    config: &'a ModelConfig,
    files: &'a dyn WeightSource,
    base: BaseFormat,
    adapter: Option<&'a Adapter>,
    /// The last whole table read for its row parts: read once, each part written from it.
    whole: Option<(String, Vec<f32>)>,
    /// DoRA's ‖W_j‖² by base weight name, for fresh magnitudes.
    base_norms2: HashMap<String, Vec<f32>>,
    /// Adapter params no adapter provided (fresh ones).
    missing: Vec<String>,
}

impl Loader<'_> {
    fn write(&self, t: TensorId, bytes: &[u8]) -> Result<(), ModelError> {
        self.compiled
            .write(self.gpu, t, bytes)
            .map_err(|e| ModelError::Invalid {
                path: "graph".into(),
                msg: e.to_string(),
            })
    }

    /// Write param `t` of `kind`.
    fn load(&mut self, t: TensorId, kind: &ParamKind) -> Result<(), ModelError> {
        let desc = self.compiled.graph.tensor(t);
        let files = self.files;
        match kind {
            ParamKind::RopeTable { local } => {
                let table = match local {
                    true => self.config.rope_local_table(desc.shape[0]),
                    false => self.config.rope_table(desc.shape[0]),
                };
                self.write(t, bytemuck::cast_slice(&table))
            }
            ParamKind::BaseNorms2 { weight, shape } => {
                let w = base_weight_values(self.config, files, self.base, weight, shape)?;
                let norms2 = crate::ops::dora::row_norms2(&w, shape[1]);
                self.write(t, bytemuck::cast_slice(&norms2))?;
                self.base_norms2.insert(weight.clone(), norms2);
                Ok(())
            }
            ParamKind::Magnitude { peft, weight } => {
                match (self.adapter, self.base_norms2.get(weight)) {
                    // A fresh DoRA magnitude is its base weight's row norms (B is zero), as
                    // in PEFT.
                    (None, Some(norms2)) => {
                        let magnitude: Vec<f32> = norms2.iter().map(|v| v.sqrt()).collect();
                        self.write(t, bytemuck::cast_slice(&magnitude))
                    }
                    _ => self.adapter_tensor(t, peft, None),
                }
            }
            ParamKind::Adapter { peft, rows } => self.adapter_tensor(t, peft, *rows),
            ParamKind::Nf4 { file, absmax } => {
                let BaseFormat::Nf4 { blocksize } = self.base else {
                    unreachable!("NF4 params only in NF4 graphs")
                };
                let quantized = match files.stored_nf4(file)? {
                    Some(q) => {
                        // Stored codes are finite by construction; their scales may not be.
                        finite(file, q.dequantize())?;
                        q
                    }
                    None => {
                        let values = finite(file, files.f32(file, &desc.shape)?)?;
                        Nf4Tensor::quantize(&values, &desc.shape, blocksize, true).map_err(|e| {
                            ModelError::Invalid {
                                path: file.clone(),
                                msg: e.to_string(),
                            }
                        })?
                    }
                };
                if quantized.shape != desc.shape {
                    return Err(ModelError::BadTensor {
                        path: "bitsandbytes checkpoint".into(),
                        tensor: file.clone(),
                        expected: format!("shape {:?}", desc.shape),
                        found: format!("shape {:?}", quantized.shape),
                    });
                }
                let (codes, scales) = upload_bytes(&quantized);
                self.write(t, &codes)?;
                self.write(*absmax, &scales)
            }
            ParamKind::Blocks { file, ty: want } => {
                let want = *want;
                let n_in = desc.shape[1] / ggml_matmul::block_words(want) * want.block().0;
                let (ty, data) = files.stored_blocks(file, &[desc.shape[0], n_in])?;
                if ty != want {
                    return Err(ModelError::BadTensor {
                        path: "GGUF file".into(),
                        tensor: file.clone(),
                        expected: format!("{} blocks", want.name()),
                        found: format!("{} blocks", ty.name()),
                    });
                }
                self.write(t, &ggml_matmul::upload_bytes(ty, &data))
            }
            ParamKind::Weight {
                file,
                rows: Some((first, rows)),
                ..
            } => {
                if self.whole.as_ref().is_none_or(|(n, _)| n != file) {
                    let shape = [self.config.vocab_size, desc.shape[1]];
                    self.whole = Some((file.clone(), finite(file, files.f32(file, &shape)?)?));
                }
                let (_, values) = self.whole.as_ref().expect("just read");
                let cols = desc.shape[1];
                let part = &values[first * cols..(first + rows) * cols];
                self.write(t, &table_bytes(part, desc.dtype))
            }
            ParamKind::Weight {
                file,
                rows: None,
                plus_one,
            } => {
                if let Some(quantized) = files.stored_nf4(file)? {
                    // An f32 graph over a bitsandbytes checkpoint: the weights it dequantizes
                    // to.
                    let values = finite(file, quantized.dequantize())?;
                    return self.write(t, bytemuck::cast_slice(&values));
                }
                // A weight the files lack is an error here, for every command and the page
                // alike (the source's error names the file): never a zero norm or embedding.
                let mut values = finite(file, files.f32(file, &desc.shape)?)?;
                if *plus_one {
                    // x·(1 + w) as a plain RMSNorm over 1 + w.
                    values.iter_mut().for_each(|v| *v += 1.0);
                }
                self.write(t, &table_bytes(&values, desc.dtype))
            }
        }
    }

    /// An adapter tensor from the adapter (all of it, or `rows` of it); with no adapter, a
    /// fresh one for the caller to initialise.
    fn adapter_tensor(
        &mut self,
        t: TensorId,
        peft: &str,
        rows: Option<(usize, usize)>,
    ) -> Result<(), ModelError> {
        let desc = self.compiled.graph.tensor(t);
        let Some(adapter) = self.adapter else {
            self.missing.push(desc.name.clone());
            return Ok(());
        };
        let Some((shape, values)) = adapter.tensors.get(peft) else {
            return Err(ModelError::MissingTensor {
                path: "the adapter".into(),
                tensor: peft.into(),
            });
        };
        let part = match rows {
            None => (shape == &desc.shape).then(|| values.clone()),
            // A fused module's B, in rows for its parts.
            Some((first, n)) => super::fused::row_part(values, shape, first, n)
                .filter(|_| shape.get(1) == desc.shape.get(1)),
        };
        match part {
            Some(values) => self.write(t, bytemuck::cast_slice(&values)),
            None => Err(ModelError::BadTensor {
                path: "adapter".into(),
                tensor: peft.into(),
                expected: match rows {
                    None => format!("shape {:?}", desc.shape),
                    Some(_) => format!("rows holding {:?} (this part)", desc.shape),
                },
                found: format!("shape {shape:?}"),
            }),
        }
    }
}

/// The values of the base linear weight `name` ([out, in]) as the GPU holds it in `base`
/// format, dequantized: what DoRA's norms are taken of (PEFT too takes them of the
/// dequantized weight).
fn base_weight_values(
    config: &ModelConfig,
    files: &dyn WeightSource,
    base: BaseFormat,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, ModelError> {
    if let (BaseFormat::Gguf, Some(_)) = (base, config.gguf_types.get(name)) {
        let (ty, data) = files.stored_blocks(name, shape)?;
        return finite(name, crate::quant::ggml::dequantize(ty, &data));
    }
    let stored = files.stored_nf4(name)?;
    match (base, stored) {
        (_, Some(q)) => finite(name, q.dequantize()),
        (BaseFormat::Nf4 { blocksize }, None) => {
            let values = finite(name, files.f32(name, shape)?)?;
            Ok(Nf4Tensor::quantize(&values, shape, blocksize, true)
                .map_err(|e| ModelError::Invalid {
                    path: name.into(),
                    msg: e.to_string(),
                })?
                .dequantize())
        }
        (_, None) => finite(name, files.f32(name, shape)?),
    }
}

/// The bytes of f32 `values` as a param of `dtype` holds them (f32, or f16 tables).
fn table_bytes(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => bytemuck::cast_slice(values).to_vec(),
    }
}

/// Fill the params `upload_model` reported missing: adapter tensors as PEFT initialises them
/// (seeded by `seed`), everything else (optimizer moments, scratch) with zeros.
pub fn initialize_missing(
    gpu: &Gpu,
    compiled: &CompiledGraph,
    missing: &[String],
    seed: u64,
) -> Result<(), ModelError> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in missing {
        let t = compiled
            .graph
            .find(name)
            .expect("missing names come from the graph");
        let shape = compiled.graph.tensor(t).shape.clone();
        let values = crate::lora::init::initial_values(name, &shape, &mut rng)
            .unwrap_or_else(|| vec![0.0; shape.iter().product()]);
        compiled
            .write(gpu, t, bytemuck::cast_slice(&values))
            .map_err(|e| ModelError::Invalid {
                path: "graph".into(),
                msg: e.to_string(),
            })?;
    }
    Ok(())
}
