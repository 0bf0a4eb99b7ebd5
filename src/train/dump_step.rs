//! One training step on a given batch, with everything it computes written out: the check of
//! our whole pipeline against PyTorch + PEFT (`webqlora dump-step`).

use std::path::Path;

use safetensors::Dtype;

pub use crate::data::Batch;
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, TensorId};
use crate::lora::peft::Adapter;
use crate::model::load::upload_model;
use crate::model::params::ParamKind;
use crate::model::safetensors_files::SafetensorsFiles;
use crate::model::transformer::{BaseFormat, Transformer};
use crate::model::ModelError;
use crate::ops::adamw::AdamW;
use crate::quant::bnb_cpu::{self, BnbCpuEffects};

/// Named f32 tensors: (name, shape, values).
pub type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

impl Batch {
    /// Read `input_ids` and `labels` (integer tensors of the same [batch, seq] shape).
    pub fn load(path: &Path, vocab: usize) -> Result<Batch, ModelError> {
        let files = SafetensorsFiles::open_files(&[path.to_path_buf()])?;
        let shown = path.display().to_string();
        let ints = |name: &str| -> Result<(Vec<usize>, Vec<i64>), ModelError> {
            let (dtype, shape, bytes) = files.raw(name)?;
            let values = match dtype {
                Dtype::I64 => bytemuck::pod_collect_to_vec(bytes),
                Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(bytes)
                    .into_iter()
                    .map(i64::from)
                    .collect(),
                other => {
                    return Err(ModelError::BadTensor {
                        path: shown.clone(),
                        tensor: name.into(),
                        expected: "I64 or I32".into(),
                        found: format!("{other:?}"),
                    })
                }
            };
            Ok((shape, values))
        };
        let (shape, ids) = ints("input_ids")?;
        let (label_shape, labels) = ints("labels")?;
        let [batch, seq] = shape[..] else {
            return Err(ModelError::Invalid {
                path: shown,
                msg: format!("input_ids is {shape:?}, not [batch, seq]"),
            });
        };
        if label_shape != shape {
            return Err(ModelError::Invalid {
                path: shown,
                msg: format!("labels are {label_shape:?} but input_ids {shape:?}"),
            });
        }
        if let Some(i) = ids.iter().position(|&id| id < 0 || id as usize >= vocab) {
            return Err(ModelError::Invalid {
                path: shown,
                msg: format!(
                    "input_ids[{i}] = {} is outside the vocabulary of {vocab}",
                    ids[i]
                ),
            });
        }
        Ok(Batch {
            batch,
            seq,
            input_ids: ids.iter().map(|&i| i as u32).collect(),
            labels,
        })
    }
}

/// One step of the model at `model_path` (a GGUF file or a Hugging Face folder): logits, loss,
/// the gradient of every adapter tensor and, with `adamw_lr`, the adapter after one AdamW step
/// (torch defaults, weight decay 0.01).
pub fn dump_step(
    gpu: &Gpu,
    model_path: &Path,
    adapter_dir: &Path,
    batch: &Batch,
    base: BaseFormat,
    adamw_lr: Option<f32>,
    bnb_cpu: BnbCpuEffects,
) -> Result<Tensors, ModelError> {
    let source = super::model_source::ModelSource::open(model_path)?;
    let (config, files) = (source.config, source.weights);
    let adapter = Adapter::load(adapter_dir)?;
    let graph_err = |e: crate::graph::GraphError| ModelError::Invalid {
        path: "graph".into(),
        msg: e.to_string(),
    };
    let gpu_err = |e: crate::graph::RunError| ModelError::Invalid {
        path: "gpu".into(),
        msg: e.to_string(),
    };

    let (b, s, v) = (batch.batch, batch.seq, config.vocab_size);
    let mut g = Graph::for_device(gpu);
    let mut model =
        Transformer::declare(&mut g, &config, base, Some(&adapter.config), s).map_err(graph_err)?;
    if bnb_cpu.bf16 {
        model.emulate_bnb_cpu_bf16();
    }
    let input = g.input("input_ids", &[b * s], DType::U32);
    let targets = g.input("targets", &[b * s], DType::U32);
    let chunk = crate::ops::cross_entropy::chunk_for_graph(&g, b * s, v, config.hidden_size);
    let step = model
        .train_step(&mut g, input, targets, None, s, chunk, true)
        .map_err(graph_err)?;
    let logits = crate::ops::matmul::logits_parts(&mut g, "logits", step.hidden, &model.lm_head)
        .map_err(graph_err)?;
    let mut outputs: Vec<(String, TensorId)> =
        vec![("logits".into(), logits), ("loss".into(), step.loss)];
    outputs.extend(step.grads.iter().map(|(n, t)| (format!("grad.{n}"), *t)));

    let opt = AdamW::default();
    let hyper = g.input("adamw.hyper", &[4], DType::F32);
    let grad_scale = g.param("adamw.grad_scale", &[1], DType::F32);
    let mut moments = Vec::new();
    if adamw_lr.is_some() {
        for (name, grad) in &step.grads {
            let param = g.find(name).expect("adapter params are declared");
            let shape = g.tensor(param).shape.clone();
            let m = g.param(&format!("adamw.m.{name}"), &shape, DType::F32);
            let v = g.param(&format!("adamw.v.{name}"), &shape, DType::F32);
            opt.step(
                &mut g,
                &format!("adamw {name}"),
                param,
                *grad,
                m,
                v,
                hyper,
                grad_scale,
            )
            .map_err(graph_err)?;
            moments.extend([m, v]);
            outputs.push((format!("after_adamw.{name}"), param));
        }
    }
    for (_, t) in &outputs {
        if !g.tensor(*t).role.defined_at_start() {
            g.mark_output(*t);
        }
    }

    let compiled = CompiledGraph::new(gpu, g).map_err(graph_err)?;
    upload_model(gpu, &compiled, &model, files.as_ref(), base, Some(&adapter))?;
    if bnb_cpu.repacked {
        // Weights quantized on load are double-quantized, as bitsandbytes' by default.
        let double_quant = config.quantization.as_ref().is_none_or(|q| q.double_quant);
        repack_absmax(gpu, &compiled, &model, double_quant)?;
    }
    let write = |t: TensorId, bytes: &[u8]| compiled.write(gpu, t, bytes).map_err(graph_err);
    write(input, bytemuck::cast_slice(&batch.input_ids))?;
    write(targets, bytemuck::cast_slice(&batch.targets()))?;
    write(
        hyper,
        bytemuck::cast_slice(&opt.hyper(adamw_lr.unwrap_or(0.0), 1)),
    )?;
    write(grad_scale, bytemuck::cast_slice(&[1.0f32]))?;
    for m in moments {
        write(m, &vec![0u8; compiled.graph.tensor(m).bytes() as usize])?;
    }
    compiled.run(gpu);

    let mut out = Vec::new();
    for (name, t) in outputs {
        let values = pollster::block_on(compiled.read_f32(gpu, t)).map_err(gpu_err)?;
        let (shape, values) = match name.as_str() {
            "logits" => (vec![b, s, v], values),
            "loss" => (vec![1], vec![values[0]]),
            _ => (compiled.graph.tensor(t).shape.clone(), values),
        };
        out.push((name, shape, values));
    }
    // A fused module's B and its gradient, whole, as PEFT names them.
    Ok(crate::model::fused::join_row_parts(out))
}

/// Replace the absmax of every NF4 weight in `compiled` by what bitsandbytes' CPU conversion
/// round trip leaves of it (`bnb_cpu::repacked_absmax`).
fn repack_absmax(
    gpu: &Gpu,
    compiled: &CompiledGraph,
    model: &Transformer,
    double_quant: bool,
) -> Result<(), ModelError> {
    let graph = &compiled.graph;
    let invalid = |msg: String| ModelError::Invalid {
        path: "graph".into(),
        msg,
    };
    // The absmax of each weight as bitsandbytes holds it: the parts of a fused weight
    // (`model::fused`) together, as one module's.
    let mut weights: Vec<Vec<TensorId>> = Vec::new();
    let mut fused_at: std::collections::HashMap<String, usize> = Default::default();
    for (_, kind) in &model.params {
        let ParamKind::Nf4 { file, absmax } = kind else {
            continue;
        };
        match model.config.fused_weight(file) {
            Some(fused) => match fused_at.get(&fused) {
                Some(&i) => weights[i].push(*absmax),
                None => {
                    fused_at.insert(fused, weights.len());
                    weights.push(vec![*absmax]);
                }
            },
            None => weights.push(vec![*absmax]),
        }
    }
    for parts in weights {
        let mut values = Vec::new();
        for &t in &parts {
            values.extend(
                pollster::block_on(compiled.read_f32(gpu, t))
                    .map_err(|e| invalid(e.to_string()))?,
            );
        }
        let mut repacked = bnb_cpu::repacked_absmax(&values, double_quant).into_iter();
        for t in parts {
            let part: Vec<f32> = repacked.by_ref().take(graph.tensor(t).numel()).collect();
            compiled
                .write(gpu, t, bytemuck::cast_slice(&part))
                .map_err(|e| invalid(e.to_string()))?;
        }
    }
    Ok(())
}

/// Write named f32 tensors as one safetensors file, through a temporary name.
pub fn write_tensors(path: &Path, tensors: &Tensors) -> Result<(), ModelError> {
    let bytes = super::trainer::tensors_to_bytes(tensors).map_err(|e| ModelError::Invalid {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    crate::io::write_atomic(path, &bytes).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })
}
