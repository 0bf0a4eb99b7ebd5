//! A compiled training step: the model's forward and backward on a [batch, seq] batch,
//! gradient accumulation over micro-batches, global-norm clipping and AdamW on every adapter
//! tensor. One graph; a micro-batch that is not the last of its optimizer step runs only the
//! nodes before the optimizer (`CompiledGraph::run_nodes`).

use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, Role, TensorId};
use crate::lora::LoraConfig;
use crate::model::transformer::Attend;
use crate::model::transformer::{BaseFormat, Transformer};
use crate::model::transformer_train::{compact_targets, ScoredRows};
use crate::model::ModelConfig;
use crate::ops::accumulate::accumulate;
use crate::ops::adamw::AdamW;
use crate::ops::attention::TokenMask;
use crate::ops::cross_entropy::chunk_for_graph;
use crate::ops::grad_norm;

use super::TrainError;

#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub batch: usize,
    pub seq: usize,
    pub base: BaseFormat,
    pub lora: LoraConfig,
    pub checkpointing: bool,
    /// Micro-batches per optimizer step (gradients averaged over them).
    pub accumulation: usize,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    pub adamw: AdamW,
    /// Seeds the LoRA dropout masks (with the step and micro-batch).
    pub seed: u64,
    /// Run the lm-head on at most this many rows of a micro-batch: those that carry a loss
    /// (`ScoredRows`; `data::batch::scored_capacity` picks it). None: on every row.
    pub scored_rows: Option<usize>,
    /// Packed rows (`data::pack`): several examples a row, each attending only within itself;
    /// every micro-batch then carries its rows' mask and RoPE positions.
    pub packing: bool,
}

/// One micro-batch: input ids and next-token targets, [batch·seq] each, and for packed rows
/// their mask and RoPE positions (`data::pack::packed_mask`).
#[derive(Clone, Debug, PartialEq)]
pub struct MicroBatch {
    pub ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub packing: Option<(Vec<TokenMask>, Vec<u32>)>,
}

/// What one optimizer step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean of the micro-batches' mean losses.
    pub loss: f32,
    /// Targets that carried a loss, over all micro-batches.
    pub counted: usize,
    /// The gradient's global norm before clipping.
    pub grad_norm: f32,
}

pub struct TrainSession {
    pub compiled: CompiledGraph,
    pub model: Transformer,
    pub settings: SessionSettings,
    io: StepIo,
    /// PEFT names of the adapter tensors.
    pub adapter_names: Vec<String>,
}

/// The tensors the host writes before a step and reads after it, and where the backward
/// ends.
struct StepIo {
    input: TensorId,
    targets: TensorId,
    scored: Option<(ScoredRows, usize)>,
    hyper: TensorId,
    acc_coef: Option<TensorId>,
    dropout_seed: Option<TensorId>,
    /// Packed rows' mask [tokens, 4] and RoPE positions [tokens].
    packing: Option<(TensorId, TensorId)>,
    loss: TensorId,
    clip: TensorId,
    /// Nodes before the optimizer: what a non-final micro-batch runs.
    backward_nodes: usize,
}

/// The names of an adapter tensor's optimizer moments.
/// Consecutive ranges of `members` whose group (`Graph::group`) fits one storage binding.
fn group_ranges(g: &Graph, members: &[TensorId]) -> Vec<std::ops::Range<usize>> {
    let limit = g.max_binding_bytes;
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &t) in members.iter().enumerate() {
        let size = g
            .tensor(t)
            .bytes()
            .next_multiple_of(crate::graph::GROUP_ALIGN);
        if i > start && bytes + size > limit {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < members.len() {
        ranges.push(start..members.len());
    }
    ranges
}

pub fn moment_names(name: &str) -> [String; 2] {
    [format!("adamw.m.{name}"), format!("adamw.v.{name}")]
}

/// A training step's graph before any buffer exists: what `TrainSession::new` compiles and
/// `TrainSession::plan` sizes.
struct Declared {
    graph: Graph,
    model: Transformer,
    io: StepIo,
    adapter_names: Vec<String>,
}

/// The GPU memory a training step would take, planned without allocating any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Every buffer at once: what `CompiledGraph::peak_bytes` will say.
    pub peak_bytes: u64,
    /// The base model's weights and the adapter (its gradients and AdamW moments too).
    pub params_bytes: u64,
    /// The largest single buffer (against `max_buffer_size`).
    pub largest_buffer: u64,
}

impl TrainSession {
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        mut settings: SessionSettings,
    ) -> Result<TrainSession, TrainError> {
        // The targets as this family names them (the adapter saved says the same).
        settings.lora = settings
            .lora
            .for_family(config.family())
            .map_err(TrainError::Invalid)?;
        let d = Self::declare(gpu, config, &settings)?;
        let compiled = CompiledGraph::new(gpu, d.graph)?;
        Ok(TrainSession {
            compiled,
            model: d.model,
            settings,
            io: d.io,
            adapter_names: d.adapter_names,
        })
    }

    /// The memory `new` would allocate on `gpu` for `settings`, or why the step cannot run
    /// there (a tensor over the device's binding limit names itself); nothing is allocated,
    /// so a page can say whether a run fits before it starts.
    pub fn plan(
        gpu: &Gpu,
        config: &ModelConfig,
        settings: &SessionSettings,
    ) -> Result<MemoryPlan, TrainError> {
        let d = Self::declare(gpu, config, settings)?;
        let limits = crate::graph::DeviceLimits::from(&gpu.limits);
        let plan = crate::graph::Plan::new(&d.graph, &limits)?;
        let params_bytes = d
            .graph
            .tensors
            .iter()
            .filter(|t| t.role == Role::Param && t.view_of.is_none())
            .map(|t| crate::gpu::buffers::storage_size(t.bytes()))
            .sum();
        let largest_pinned = d
            .graph
            .tensors
            .iter()
            .filter(|t| t.role.pinned() && t.view_of.is_none())
            .map(|t| crate::gpu::buffers::storage_size(t.bytes()))
            .max()
            .unwrap_or(0);
        let largest_slot = plan.slot_bytes.iter().copied().max().unwrap_or(0);
        Ok(MemoryPlan {
            peak_bytes: plan.peak_bytes(),
            params_bytes,
            largest_buffer: largest_pinned.max(largest_slot),
        })
    }

    fn declare(
        gpu: &Gpu,
        config: &ModelConfig,
        settings: &SessionSettings,
    ) -> Result<Declared, TrainError> {
        let (b, s) = (settings.batch, settings.seq);
        if settings.accumulation == 0 || b == 0 || s == 0 {
            return Err(TrainError::Invalid(
                "batch, sequence length and accumulation steps must be at least 1".into(),
            ));
        }
        if settings.lora.use_dora && settings.lora.dropout > 0.0 {
            // PEFT's DoRA under dropout adds a second base product (of the dropped input);
            // not implemented here.
            return Err(TrainError::Invalid(format!(
                "DoRA with LoRA dropout ({}) is not supported; train DoRA with dropout 0",
                settings.lora.dropout
            )));
        }
        let tokens = b * s;
        let lora = settings
            .lora
            .for_family(config.family())
            .map_err(TrainError::Invalid)?;
        let mut g = Graph::for_device(gpu);
        let mut model = Transformer::declare(&mut g, config, settings.base, Some(&lora), s)?;
        let dropout_seed = (settings.lora.dropout > 0.0)
            .then(|| model.enable_lora_dropout(&mut g, settings.lora.dropout as f32));
        let input = g.input("input_ids", &[tokens], DType::U32);
        let loss_rows = settings.scored_rows.unwrap_or(tokens);
        if loss_rows == 0 || loss_rows > tokens {
            return Err(TrainError::Invalid(format!(
                "{loss_rows} scored rows for batches of {tokens} tokens"
            )));
        }
        let scored = settings
            .scored_rows
            .map(|capacity| (ScoredRows::declare(&mut g, tokens, capacity), capacity));
        let targets = g.input("targets", &[loss_rows], DType::U32);
        let chunk = chunk_for_graph(&g, loss_rows, config.vocab_size, config.hidden_size);
        let (attend, packing) = match settings.packing {
            true => {
                let mask = g.input("packing.mask", &[tokens, 4], DType::F32);
                let positions = g.input("packing.positions", &[tokens], DType::U32);
                (
                    model.packed_attend(&mut g, mask, positions)?,
                    Some((mask, positions)),
                )
            }
            false => (Attend::Sequences(s), None),
        };
        let step = model.train_step_attending(
            &mut g,
            input,
            targets,
            scored.map(|(rows, _)| rows),
            attend,
            chunk,
            settings.checkpointing,
        )?;

        let mut grads = step.grads.clone();
        let mut acc_coef = None;
        if settings.accumulation > 1 {
            let coef = g.input("grad_acc.coef", &[2], DType::F32);
            for (name, grad) in grads.iter_mut() {
                let shape = g.tensor(*grad).shape.clone();
                let acc = g.param(&format!("grad_acc.{name}"), &shape, DType::F32);
                accumulate(&mut g, &format!("accumulate {name}"), *grad, coef, acc)?;
                *grad = acc;
            }
            acc_coef = Some(coef);
        }
        let backward_nodes = g.nodes.len();
        // The adapter's tensors, their gradients and AdamW's moments, each set stored in a
        // few groups of the same layout (one while a group fits one binding), so that the
        // gradient norm and the update are a few dispatches a step instead of some a tensor.
        let mut sets: [Vec<TensorId>; 4] = Default::default();
        for (name, grad) in &grads {
            let param = g.find(name).expect("adapter tensors are declared");
            let shape = g.tensor(param).shape.clone();
            let [m, v] = moment_names(name).map(|n| g.param(&n, &shape, DType::F32));
            for (set, t) in sets.iter_mut().zip([param, *grad, m, v]) {
                set.push(t);
            }
        }
        let mut groups: Vec<[TensorId; 4]> = Vec::new();
        for (i, range) in group_ranges(&g, &sets[0]).into_iter().enumerate() {
            let mut group = [sets[0][0]; 4];
            for (k, what) in ["lora", "grad", "adamw.m", "adamw.v"]
                .into_iter()
                .enumerate()
            {
                let members = &sets[k][range.clone()];
                group[k] = g.group(&format!("{what} group {i}"), members, Role::Param)?;
            }
            groups.push(group);
        }
        let grad_groups: Vec<TensorId> = groups.iter().map(|g| g[1]).collect();
        let clip = grad_norm::clip(&mut g, "grad_scale", &grad_groups, settings.max_grad_norm)?;
        let hyper = g.input("adamw.hyper", &[4], DType::F32);
        for (i, &[param, grad, m, v]) in groups.iter().enumerate() {
            let label = format!("adamw group {i}");
            settings
                .adamw
                .step(&mut g, &label, param, grad, m, v, hyper, clip)?;
        }
        g.mark_output(step.loss);
        g.mark_output(clip);
        // By the names adapter files use: a fused module's B once, not its row parts.
        let mut adapter_names: Vec<String> = Vec::new();
        for (name, _) in &step.grads {
            let whole = crate::model::transformer::parse_part_name(name).map_or(&name[..], |p| p.0);
            if !adapter_names.iter().any(|n| n == whole) {
                adapter_names.push(whole.to_string());
            }
        }
        Ok(Declared {
            graph: g,
            model,
            io: StepIo {
                input,
                targets,
                scored,
                hyper,
                acc_coef,
                dropout_seed,
                packing,
                loss: step.loss,
                clip,
                backward_nodes,
            },
            adapter_names,
        })
    }

    /// Values of the adapter tensors the trainable set has: (PEFT name, shape).
    pub fn trainable(&self) -> Vec<(String, Vec<usize>)> {
        self.adapter_names
            .iter()
            .map(|n| (n.clone(), self.whole_shape(n)))
            .collect()
    }

    /// The params holding the named tensor: itself, or its row parts in order (a fused
    /// module's B, `transformer::part_name`), each with its first row.
    fn held_in(&self, name: &str) -> Vec<(TensorId, usize)> {
        let graph = &self.compiled.graph;
        if let Some(t) = graph.find(name) {
            return vec![(t, 0)];
        }
        let mut parts: Vec<(TensorId, usize)> = graph
            .tensors
            .iter()
            .enumerate()
            .filter_map(
                |(i, t)| match crate::model::transformer::parse_part_name(&t.name) {
                    Some((whole, first, _)) if whole == name && t.role == Role::Param => {
                        Some((TensorId::from_index(i), first))
                    }
                    _ => None,
                },
            )
            .collect();
        parts.sort_by_key(|p| p.1);
        parts
    }

    /// The shape of a named tensor the graph may hold in row parts.
    fn whole_shape(&self, name: &str) -> Vec<usize> {
        let graph = &self.compiled.graph;
        let parts = self.held_in(name);
        let mut shape = parts
            .first()
            .map(|&(t, _)| graph.tensor(t).shape.clone())
            .unwrap_or_default();
        if let Some(rows) = shape.first_mut() {
            *rows = parts.iter().map(|&(t, _)| graph.tensor(t).shape[0]).sum();
        }
        shape
    }

    /// One optimizer step (number `step`, 1-based, for AdamW's bias correction) at learning
    /// rate `lr` over `micro` = (input ids, next-token targets) of [batch·seq] each.
    pub async fn step(
        &self,
        gpu: &Gpu,
        micro: &[MicroBatch],
        lr: f32,
        step: u32,
    ) -> Result<StepStats, TrainError> {
        if micro.len() != self.settings.accumulation {
            return Err(TrainError::Invalid(format!(
                "{} micro-batches for an accumulation of {}",
                micro.len(),
                self.settings.accumulation
            )));
        }
        let c = &self.compiled;
        c.write(
            gpu,
            self.io.hyper,
            bytemuck::cast_slice(&self.settings.adamw.hyper(lr, step)),
        )?;
        let n = micro.len();
        let (mut loss, mut counted) = (0.0f32, 0usize);
        for (i, m) in micro.iter().enumerate() {
            let (ids, targets) = (&m.ids, &m.targets);
            c.write(gpu, self.io.input, bytemuck::cast_slice(ids))?;
            match (self.io.packing, &m.packing) {
                (Some((mask, positions)), Some((values, rows))) => {
                    c.write(gpu, mask, bytemuck::cast_slice(&TokenMask::values(values)))?;
                    c.write(gpu, positions, bytemuck::cast_slice(rows))?;
                }
                (None, None) => {}
                (packed, _) => {
                    return Err(TrainError::Invalid(format!(
                        "micro-batch {i}: {} for a step compiled {}",
                        match m.packing {
                            Some(_) => "packed rows",
                            None => "padded rows",
                        },
                        match packed {
                            Some(_) => "for packed rows",
                            None => "for padded rows",
                        }
                    )))
                }
            }
            match self.io.scored {
                None => c.write(gpu, self.io.targets, bytemuck::cast_slice(targets))?,
                Some((rows, capacity)) => {
                    let compact =
                        compact_targets(targets, capacity).map_err(TrainError::Invalid)?;
                    c.write(
                        gpu,
                        rows.positions,
                        bytemuck::cast_slice(&compact.positions),
                    )?;
                    c.write(gpu, rows.slots, bytemuck::cast_slice(&compact.slots))?;
                    c.write(gpu, self.io.targets, bytemuck::cast_slice(&compact.targets))?;
                }
            }
            if let Some(seed) = self.io.dropout_seed {
                let mixed = self.settings.seed ^ ((step as u64) << 20) ^ i as u64;
                let word = (mixed ^ (mixed >> 32)) as u32;
                c.write(gpu, seed, bytemuck::bytes_of(&word))?;
            }
            if let Some(coef) = self.io.acc_coef {
                let keep = if i == 0 { 0.0f32 } else { 1.0 };
                c.write(gpu, coef, bytemuck::cast_slice(&[keep, 1.0 / n as f32]))?;
            }
            if i + 1 == n {
                c.run(gpu);
            } else {
                c.run_nodes(gpu, 0..self.io.backward_nodes);
            }
            let l = c.read_f32(gpu, self.io.loss).await?;
            loss += l[0] / n as f32;
            counted += l[1] as usize;
        }
        let clip = c.read_f32(gpu, self.io.clip).await?;
        Ok(StepStats {
            loss,
            counted,
            grad_norm: clip[1],
        })
    }

    /// Read named params (adapter tensors, optimizer moments) as f32, a tensor held in row
    /// parts as one.
    pub async fn read_params(
        &self,
        gpu: &Gpu,
        names: &[String],
    ) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>, TrainError> {
        let mut out = Vec::new();
        for name in names {
            let parts = self.held_in(name);
            if parts.is_empty() {
                return Err(TrainError::Invalid(format!(
                    "no tensor '{name}' in the graph"
                )));
            }
            let mut values = Vec::new();
            for (t, _) in parts {
                values.extend(self.compiled.read_f32(gpu, t).await?);
            }
            out.push((name.clone(), self.whole_shape(name), values));
        }
        Ok(out)
    }

    /// Write a named param, checking its shape.
    pub fn write_param(
        &self,
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        values: &[f32],
    ) -> Result<(), TrainError> {
        let parts = self.held_in(name);
        if parts.is_empty() {
            return Err(TrainError::Invalid(format!(
                "no tensor '{name}' in this model"
            )));
        }
        let expected = self.whole_shape(name);
        if expected != shape || values.len() != shape.iter().product::<usize>() {
            return Err(TrainError::Invalid(format!(
                "'{name}' is {shape:?}, the model needs {expected:?}"
            )));
        }
        let cols: usize = shape[1..].iter().product();
        for (t, first) in parts {
            let rows = self.compiled.graph.tensor(t).shape[0];
            let part = &values[first * cols..(first + rows) * cols];
            self.compiled.write(gpu, t, bytemuck::cast_slice(part))?;
        }
        Ok(())
    }
}
