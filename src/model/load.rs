//! Filling a compiled graph's parameters from a model folder and an adapter, by name.

use super::transformer::BaseFormat;
use super::{finite, ModelConfig, ModelError, WeightSource};
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Role, TensorId};
use crate::lora::peft::Adapter;
use crate::ops::ggml_matmul;
use crate::ops::nf4_matmul::upload_bytes;
use crate::quant::nf4::Nf4Tensor;

/// Write every param of `compiled` that a model or adapter provides: base weights from `files`
/// (NF4 ones from a bitsandbytes checkpoint as stored, else quantized from f32 here; f32 ones
/// dequantized when the checkpoint holds NF4), LoRA factors from `adapter`, and the RoPE
/// table. Returns the names of params nothing provided
/// (optimizer state, new LoRA factors), for the caller to initialise.
pub fn upload_model(
    gpu: &Gpu,
    compiled: &CompiledGraph,
    config: &ModelConfig,
    files: &dyn WeightSource,
    base: BaseFormat,
    adapter: Option<&Adapter>,
) -> Result<Vec<String>, ModelError> {
    upload_model_with_progress(gpu, compiled, config, files, base, adapter, &mut |_, _| {})
}

/// `upload_model`, calling `progress(done, total)` after each tensor (for a progress bar:
/// reading, dequantizing and quantizing to NF4 take most of a model's load time).
pub fn upload_model_with_progress(
    gpu: &Gpu,
    compiled: &CompiledGraph,
    config: &ModelConfig,
    files: &dyn WeightSource,
    base: BaseFormat,
    adapter: Option<&Adapter>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>, ModelError> {
    let graph = &compiled.graph;
    // Fused weights (Phi-3's qkv_proj) read as the parts the graph declares.
    let blocksize = match base {
        BaseFormat::Nf4 { blocksize } => Some(blocksize),
        _ => None,
    };
    let fused = super::fused::FusedFiles::new(files, config, blocksize);
    let files: &dyn WeightSource = &fused;
    let total = graph
        .tensors
        .iter()
        .filter(|d| d.role == Role::Param && d.named())
        .count();
    if let Some(adapter) = adapter {
        // Every adapter tensor must land somewhere: one the model has no place for (another
        // model's layer count or modules) would otherwise be dropped without a word.
        // A fused module's B lands in row parts (`llama::part_name`).
        let parts: std::collections::HashSet<&str> = graph
            .tensors
            .iter()
            .filter_map(|t| super::transformer::parse_part_name(&t.name).map(|(whole, ..)| whole))
            .collect();
        if let Some(name) = adapter
            .tensors
            .keys()
            .find(|n| graph.find(n).is_none() && !parts.contains(n.as_str()))
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
    let mut done = 0;
    let mut missing = Vec::new();
    // The last whole table read for its row parts (`llama::part_name`): read once, each part
    // written from it.
    let mut whole: Option<(String, Vec<f32>)> = None;
    // DoRA's ‖W_j‖² by base weight name, for fresh magnitudes, and the linear weights' shapes.
    let mut base_norms2: std::collections::HashMap<String, Vec<f32>> = Default::default();
    let mut linear_shapes: Option<std::collections::HashMap<String, Vec<usize>>> = None;
    let write = |t: TensorId, bytes: &[u8]| {
        compiled
            .write(gpu, t, bytes)
            .map_err(|e| ModelError::Invalid {
                path: "graph".into(),
                msg: e.to_string(),
            })
    };
    for (i, desc) in graph.tensors.iter().enumerate() {
        let t = TensorId::from_index(i);
        if desc.role != Role::Param || !desc.named() {
            continue;
        }
        done += 1;
        progress(done, total);
        let name = desc.name.as_str();
        if name == super::transformer::ROPE_TABLE {
            let table = config.rope_table(desc.shape[0]);
            write(t, bytemuck::cast_slice(&table))?;
        } else if name == super::transformer::ROPE_TABLE_LOCAL {
            let table = config.rope_local_table(desc.shape[0]);
            write(t, bytemuck::cast_slice(&table))?;
        } else if let Some(weight) = name.strip_suffix(".dora_row_norms2") {
            if linear_shapes.is_none() {
                linear_shapes = Some(
                    super::transformer::Transformer::base_tensors(config)?
                        .into_iter()
                        .collect(),
                );
            }
            let shapes = linear_shapes.as_ref().expect("just filled");
            let shape = shapes.get(weight).ok_or_else(|| ModelError::Invalid {
                path: weight.into(),
                msg: "is not a linear weight of this model".into(),
            })?;
            let w = base_weight_values(config, files, base, weight, shape)?;
            let norms2 = crate::ops::dora::row_norms2(&w, w.len() / desc.shape[0]);
            write(t, bytemuck::cast_slice(&norms2))?;
            base_norms2.insert(weight.to_string(), norms2);
        } else if name.starts_with("base_model.model.") {
            // A fresh DoRA magnitude is its base weight's row norms (B is zero), as in PEFT.
            let module = name
                .strip_suffix(crate::lora::MAGNITUDE_SUFFIX)
                .and_then(|m| m.strip_prefix("base_model.model."));
            let fresh_magnitude = match (adapter, module) {
                (None, Some(module)) => base_norms2.get(&format!("{module}.weight")),
                _ => None,
            };
            if let Some(norms2) = fresh_magnitude {
                let magnitude: Vec<f32> = norms2.iter().map(|v| v.sqrt()).collect();
                write(t, bytemuck::cast_slice(&magnitude))?;
                continue;
            }
            // A fused module's B is held in row parts, each read from the adapter's whole B.
            let part =
                super::transformer::parse_part_name(name).and_then(|(whole, first, rows)| {
                    let (shape, values) = adapter?.tensors.get(whole)?;
                    let part = super::fused::row_part(values, shape, first, rows);
                    Some((vec![rows, shape.get(1).copied().unwrap_or(0)], part))
                });
            if let Some((shape, values)) = part {
                match values {
                    Some(v) if shape == desc.shape => write(t, bytemuck::cast_slice(&v))?,
                    _ => {
                        let whole = super::transformer::parse_part_name(name).map_or(name, |p| p.0);
                        return Err(ModelError::BadTensor {
                            path: "adapter".into(),
                            tensor: whole.into(),
                            expected: format!("rows holding {:?} (this part)", desc.shape),
                            found: "a shape that does not".into(),
                        });
                    }
                }
                continue;
            }
            match adapter.and_then(|a| a.tensors.get(name)) {
                Some((shape, values)) if shape == &desc.shape => {
                    write(t, bytemuck::cast_slice(values))?
                }
                Some((shape, _)) => {
                    return Err(ModelError::BadTensor {
                        path: "adapter".into(),
                        tensor: name.into(),
                        expected: format!("shape {:?}", desc.shape),
                        found: format!("shape {shape:?}"),
                    })
                }
                None if adapter.is_some() => {
                    return Err(ModelError::MissingTensor {
                        path: "the adapter".into(),
                        tensor: name.into(),
                    })
                }
                None => missing.push(name.to_string()),
            }
        } else if desc.dtype == DType::Nf4 {
            let BaseFormat::Nf4 { blocksize } = base else {
                unreachable!("NF4 params only in NF4 graphs")
            };
            let quantized = match files.stored_nf4(name)? {
                Some(q) => {
                    // Stored codes are finite by construction; their scales may not be.
                    finite(name, q.dequantize())?;
                    q
                }
                None => {
                    let values = finite(name, files.f32(name, &desc.shape)?)?;
                    Nf4Tensor::quantize(&values, &desc.shape, blocksize, true).map_err(|e| {
                        ModelError::Invalid {
                            path: name.into(),
                            msg: e.to_string(),
                        }
                    })?
                }
            };
            if quantized.shape != desc.shape {
                return Err(ModelError::BadTensor {
                    path: "bitsandbytes checkpoint".into(),
                    tensor: name.into(),
                    expected: format!("shape {:?}", desc.shape),
                    found: format!("shape {:?}", quantized.shape),
                });
            }
            let absmax = graph
                .find(&format!("{name}.absmax"))
                .expect("declared with its weight");
            let (codes, scales) = upload_bytes(&quantized);
            write(t, &codes)?;
            write(absmax, &scales)?;
        } else if desc.dtype == DType::U32 {
            // A GGUF file's own block codes (`BaseFormat::Gguf`), declared from gguf_types.
            let Some(&want) = config.gguf_types.get(name) else {
                return Err(ModelError::Invalid {
                    path: "graph".into(),
                    msg: format!("param '{name}' holds block codes of no known type"),
                });
            };
            let n_in = desc.shape[1] / ggml_matmul::block_words(want) * want.block().0;
            let (ty, data) = files.stored_blocks(name, &[desc.shape[0], n_in])?;
            if ty != want {
                return Err(ModelError::BadTensor {
                    path: "GGUF file".into(),
                    tensor: name.into(),
                    expected: format!("{} blocks", want.name()),
                    found: format!("{} blocks", ty.name()),
                });
            }
            write(t, &ggml_matmul::upload_bytes(ty, &data))?;
        } else if let Some(quantized) = files.stored_nf4(name)? {
            // An f32 graph over a bitsandbytes checkpoint: the weights it dequantizes to.
            write(
                t,
                bytemuck::cast_slice(&finite(name, quantized.dequantize())?),
            )?;
        } else if name.ends_with(".weight.absmax") {
            // Written with its codes.
        } else if let Some((table, first, rows)) =
            super::transformer::parse_part_name(name).filter(|(table, ..)| is_model_weight(table))
        {
            if whole.as_ref().is_none_or(|(n, _)| n != table) {
                let shape = [config.vocab_size, desc.shape[1]];
                whole = Some((table.to_string(), finite(table, files.f32(table, &shape)?)?));
            }
            let (_, values) = whole.as_ref().expect("just read");
            let cols = desc.shape[1];
            let part = &values[first * cols..(first + rows) * cols];
            write(t, &table_bytes(part, desc.dtype))?;
        } else if files.contains(name) || is_model_weight(name) {
            // A model weight the files lack is an error here, for every command and the page
            // alike (the source's error names the file): never a zero norm or embedding.
            let mut values = finite(name, files.f32(name, &desc.shape)?)?;
            if config.family().norm_plus_one && name.ends_with("norm.weight") {
                // x·(1 + w) as a plain RMSNorm over 1 + w.
                values.iter_mut().for_each(|v| *v += 1.0);
            }
            write(t, &table_bytes(&values, desc.dtype))?;
        } else {
            missing.push(name.to_string());
        }
    }
    Ok(missing)
}

/// Whether a param is one of the model's own weights (Hugging Face names, as every source
/// presents them), which the model files must hold, rather than training or decoding state.
fn is_model_weight(name: &str) -> bool {
    name.starts_with("model.") || name.starts_with("lm_head.")
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
