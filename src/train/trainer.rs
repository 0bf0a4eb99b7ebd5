//! The training loop both faces run, the CLI's `train` and the page (`web.rs`): the compiled
//! step (`session`) with its data order, learning-rate schedule, gradient accumulation,
//! validation and checkpoint state. The faces only decide when to call what (every N steps,
//! on a stop request) and where results go (files, progress bars, JavaScript): neither has a
//! loop of its own. The trainer does not time anything (the page has no clock here); the faces
//! turn a step's tokens into tokens/s and an ETA.

use std::path::Path;

use serde_json::{json, Value};

use super::data_order::DataOrder;
use super::evaluate::{example_items, LossScore, Scorer, ScorerShape};
use super::schedule::Schedule;
use super::session::{moment_names, MicroBatch, SessionSettings, StepStats, TrainSession};
use super::TrainError;
use crate::data::pack::packed_mask;
use crate::data::{Batch, Example};
use crate::gpu::Gpu;
use crate::lora::peft::Adapter;
use crate::model::load::{initialize_missing, upload_model_with_progress};
use crate::model::ModelError;
use crate::model::{ModelConfig, WeightSource};

/// Tensors by name with their shapes (AdamW moments, in a checkpoint).
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// What one optimizer step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// 1-based.
    pub step: usize,
    pub total: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f32,
    /// Tokens of the step's examples (padding not counted).
    pub tokens: usize,
    /// Epochs of the training data seen after this step.
    pub epoch: f64,
}

impl StepReport {
    /// The step's figures: step, loss, lr, grad_norm, tokens, epoch (what the page reports; it
    /// times the step itself).
    pub fn fields(&self) -> Value {
        json!({"step": self.step, "loss": self.loss, "lr": self.lr,
               "grad_norm": self.grad_norm, "tokens": self.tokens, "epoch": self.epoch})
    }

    /// One metrics line (metrics.jsonl): `fields` with the step's tokens a second.
    pub fn json(&self, seconds: f64) -> Value {
        let mut line = self.fields();
        line["tokens_per_s"] = json!(self.tokens as f64 / seconds.max(1e-9));
        line
    }
}

/// Seconds left for `remaining` steps at the mean pace of `done` steps in `elapsed` seconds.
pub fn eta_seconds(elapsed: f64, done: usize, remaining: usize) -> f64 {
    if done == 0 {
        return f64::NAN;
    }
    elapsed / done as f64 * remaining as f64
}

pub struct Trainer {
    pub session: TrainSession,
    pub schedule: Schedule,
    pub order: DataOrder,
    train: Vec<Example>,
    valid: Vec<Example>,
    scorer: Option<Scorer>,
    pad: u32,
    /// Packed rows (`data::pack`): where each row's examples start.
    starts: Option<Vec<Vec<usize>>>,
    /// The last step taken (0 before the first; a resumed run starts after its checkpoint's).
    pub step: usize,
}

impl Trainer {
    /// Compile the step for `settings`, load the weights (`progress(done, total)`) and the
    /// adapter to start from (else a fresh one, seeded), and a validation scorer sharing the
    /// step's buffers when there is validation data. `pad`: the id batches are padded with.
    /// With `settings.packing`, `train` holds packed rows (`data::pack::pack`) and `starts`
    /// where each row's examples start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        weights: &dyn WeightSource,
        settings: SessionSettings,
        schedule: Schedule,
        train: Vec<Example>,
        starts: Option<Vec<Vec<usize>>>,
        valid: Vec<Example>,
        pad: u32,
        start: Option<&Adapter>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Trainer, TrainError> {
        if train.is_empty() {
            return Err(TrainError::Invalid("no training examples".into()));
        }
        if settings.packing != starts.is_some()
            || starts.as_ref().is_some_and(|s| s.len() != train.len())
        {
            return Err(TrainError::Invalid(
                "packed training needs each row's example starts (data::pack), and only it".into(),
            ));
        }
        let (base, seed, batch, seq) = (settings.base, settings.seed, settings.batch, settings.seq);
        let lora = settings.lora.clone();
        let session = TrainSession::new(gpu, config, settings)?;
        let missing = upload_model_with_progress(
            gpu,
            &session.compiled,
            &session.model,
            weights,
            base,
            start,
            progress,
        )?;
        initialize_missing(gpu, &session.compiled, &missing, seed)?;
        let scorer = if valid.is_empty() {
            None
        } else {
            // Passes no larger than a training batch: the scorer's activations add to its
            // memory.
            let shape = ScorerShape::for_items(
                &[&example_items(&valid)],
                batch * seq,
                config.vocab_size,
                gpu.limits.max_storage_buffer_binding_size,
            );
            Some(Scorer::sharing(
                gpu,
                config,
                base,
                Some(&lora),
                shape,
                &session.compiled,
            )?)
        };
        let order = DataOrder {
            examples: train.len(),
            batch,
            seed,
            shuffle: true,
        };
        Ok(Trainer {
            session,
            schedule,
            order,
            train,
            valid,
            scorer,
            pad,
            starts,
            step: 0,
        })
    }

    /// Steps of the run.
    pub fn total(&self) -> usize {
        self.schedule.total
    }

    pub fn done(&self) -> bool {
        self.step >= self.total()
    }

    pub fn train_examples(&self) -> usize {
        self.train.len()
    }

    pub fn valid_examples(&self) -> usize {
        self.valid.len()
    }

    /// Continue from a checkpoint: its AdamW moments and `state` (`Trainer::state_json`).
    /// The same seed, data and settings then give the losses an uninterrupted run gives.
    pub fn resume(
        &mut self,
        gpu: &Gpu,
        moments: &NamedTensors,
        state: &TrainerState,
    ) -> Result<(), TrainError> {
        let s = &self.session.settings;
        let mut differences = Vec::new();
        if state.seed != s.seed {
            differences.push(format!("seed {} (this run: {})", state.seed, s.seed));
        }
        if state.batch != s.batch {
            differences.push(format!("batch {} (this run: {})", state.batch, s.batch));
        }
        if state.accumulation != s.accumulation {
            differences.push(format!(
                "accumulation {} (this run: {})",
                state.accumulation, s.accumulation
            ));
        }
        if state.packing != s.packing {
            differences.push(format!(
                "{} packing (this run: {} --packing)",
                if state.packing { "with" } else { "without" },
                if s.packing { "with" } else { "without" }
            ));
        }
        if !differences.is_empty() {
            return Err(TrainError::Invalid(format!(
                "the checkpoint differs from this run: {}; resume it with the same settings",
                differences.join(", ")
            )));
        }
        // Every trainable tensor's two moments, and nothing else: a missing one would restart
        // from zero without a word.
        let wanted: Vec<String> = self
            .session
            .adapter_names
            .iter()
            .flat_map(|n| moment_names(n))
            .collect();
        if let Some(missing) = wanted
            .iter()
            .find(|w| !moments.iter().any(|(n, _, _)| n == *w))
        {
            return Err(TrainError::Invalid(format!(
                "the checkpoint's optimizer state has no '{missing}'"
            )));
        }
        if let Some((extra, _, _)) = moments.iter().find(|(n, _, _)| !wanted.contains(n)) {
            return Err(TrainError::Invalid(format!(
                "the checkpoint's optimizer state has '{extra}', which this run does not train"
            )));
        }
        for (name, shape, values) in moments {
            self.session.write_param(gpu, name, shape, values)?;
        }
        self.step = state.step;
        Ok(())
    }

    /// The next optimizer step: its micro-batches in the data order, the scheduled learning
    /// rate. A loss that is not finite is an error (training diverged), and the step counts
    /// as not taken.
    pub async fn step(&mut self, gpu: &Gpu) -> Result<StepReport, TrainError> {
        if self.done() {
            return Err(TrainError::Invalid(format!(
                "all {} steps are done",
                self.total()
            )));
        }
        let step = self.step + 1;
        let (micro, tokens) = self.micro_batches(step);
        let lr = self.schedule.lr(step - 1);
        let StepStats {
            loss, grad_norm, ..
        } = self
            .session
            .step(gpu, &micro, lr as f32, step as u32)
            .await?;
        if !loss.is_finite() {
            return Err(TrainError::Invalid(format!(
                "step {step}: the loss is {loss} (training diverged; lower the learning rate)"
            )));
        }
        self.step = step;
        let accumulation = self.session.settings.accumulation;
        Ok(StepReport {
            step,
            total: self.total(),
            loss,
            lr,
            grad_norm,
            tokens,
            epoch: self.order.epoch_after(step * accumulation),
        })
    }

    /// (ids, next-token targets) for every micro-batch of optimizer step `step` (1-based), and
    /// the step's tokens.
    fn micro_batches(&self, step: usize) -> (Vec<MicroBatch>, usize) {
        let accumulation = self.session.settings.accumulation;
        let seq = self.session.settings.seq;
        let mut tokens = 0;
        let micro = (0..accumulation)
            .map(|i| {
                let indices = self.order.micro_batch((step - 1) * accumulation + i);
                let rows: Vec<&Example> = indices.iter().map(|&j| &self.train[j]).collect();
                tokens += rows.iter().map(|e| e.ids.len()).sum::<usize>();
                let batch = Batch::pad(&rows, self.order.batch, seq, self.pad);
                let packing = self.starts.as_ref().map(|starts| {
                    let shape: Vec<(&[usize], usize)> = indices
                        .iter()
                        .map(|&j| (&starts[j][..], self.train[j].ids.len()))
                        .collect();
                    packed_mask(&shape, self.order.batch, seq)
                });
                MicroBatch {
                    ids: batch.input_ids.clone(),
                    targets: batch.targets(),
                    packing,
                }
            })
            .collect();
        (micro, tokens)
    }

    /// The validation loss of the adapter as it is now (None without validation data).
    pub async fn validate(&self, gpu: &Gpu) -> Result<Option<LossScore>, TrainError> {
        match &self.scorer {
            Some(scorer) => Ok(Some(scorer.loss(gpu, &self.valid).await?)),
            None => Ok(None),
        }
    }

    /// The adapter as it is now.
    pub async fn adapter(&self, gpu: &Gpu) -> Result<Adapter, TrainError> {
        let tensors = self
            .session
            .read_params(gpu, &self.session.adapter_names)
            .await?;
        Ok(Adapter {
            config: self.session.settings.lora.clone(),
            tensors: tensors.into_iter().map(|(n, s, v)| (n, (s, v))).collect(),
        })
    }

    /// What a checkpoint holds: the adapter, its AdamW moments, and the state `resume` needs.
    /// A NaN or infinity anywhere is an error (nothing worth saving).
    pub async fn checkpoint(
        &self,
        gpu: &Gpu,
    ) -> Result<(Adapter, NamedTensors, TrainerState), TrainError> {
        let adapter = self.adapter(gpu).await?;
        let names: Vec<String> = self
            .session
            .adapter_names
            .iter()
            .flat_map(|n| moment_names(n))
            .collect();
        let moments = self.session.read_params(gpu, &names).await?;
        let values = adapter
            .tensors
            .iter()
            .map(|(n, (_, v))| (n, v))
            .chain(moments.iter().map(|(n, _, v)| (n, v)));
        for (name, v) in values {
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                return Err(TrainError::Invalid(format!(
                    "after step {}: '{name}' holds {bad} (training diverged; lower the learning \
                     rate)",
                    self.step
                )));
            }
        }
        Ok((adapter, moments, self.state()))
    }

    /// The run's position and settings, as a checkpoint records them.
    pub fn state(&self) -> TrainerState {
        let s = &self.session.settings;
        TrainerState {
            step: self.step,
            seed: s.seed,
            total_steps: self.total(),
            lr: self.schedule.peak,
            batch: s.batch,
            accumulation: s.accumulation,
            seq: s.seq,
            packing: s.packing,
            base: Some(s.base.key().to_string()),
        }
    }
}

/// The trainer's position and settings as checkpoint/trainer_state.json holds them. Our own
/// format: every key known (an unknown one is refused) and of its type, so a crafted or
/// damaged file is an error naming the key, never a run restarted at step 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Optimizer steps taken (1 or more: a checkpoint is saved after a step).
    pub step: usize,
    pub seed: u64,
    pub total_steps: usize,
    pub lr: f64,
    pub batch: usize,
    pub accumulation: usize,
    pub seq: usize,
    /// Absent in checkpoints from before packing.
    #[serde(default)]
    pub packing: bool,
    /// How the base weights were held (`--base`: f32, nf4, gguf); absent in older checkpoints.
    #[serde(default)]
    pub base: Option<String>,
}

impl TrainerState {
    /// Parse trainer_state.json's `text` (`path` names it in errors): typed, and the step
    /// within the run it records.
    pub fn parse(text: &str, path: &Path) -> Result<TrainerState, ModelError> {
        let state: TrainerState = crate::lora::peft::parse_json(text, path)?;
        let invalid = |msg: String| ModelError::Invalid {
            path: path.display().to_string(),
            msg,
        };
        if state.step == 0 || state.step > state.total_steps {
            return Err(invalid(format!(
                "'step': {} is not a step of the run's {} (1 to {})",
                state.step, state.total_steps, state.total_steps
            )));
        }
        for (key, v) in [
            ("batch", state.batch),
            ("accumulation", state.accumulation),
            ("seq", state.seq),
        ] {
            if v == 0 {
                return Err(invalid(format!("'{key}': 0 is not a size")));
            }
        }
        if !(state.lr.is_finite() && state.lr >= 0.0) {
            return Err(invalid(format!(
                "'lr': {} is not a learning rate",
                state.lr
            )));
        }
        Ok(state)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plain struct serializes")
    }
}

/// Hold out `fraction` (in [0, 1)) of `train` for validation, chosen by the seeded shuffle:
/// (train, valid). At least one example is held out when the fraction is above 0.
pub fn split_validation(
    mut train: Vec<Example>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<Example>, Vec<Example>), TrainError> {
    if fraction == 0.0 {
        return Ok((train, Vec::new()));
    }
    if !(0.0..1.0).contains(&fraction) {
        return Err(TrainError::Invalid(format!(
            "validation split {fraction} must be in [0, 1)"
        )));
    }
    let order = DataOrder {
        examples: train.len(),
        batch: train.len(),
        seed,
        shuffle: true,
    }
    .micro_batch(0);
    let held = ((train.len() as f64 * fraction).round() as usize).max(1);
    let held_out: std::collections::HashSet<usize> = order[..held].iter().copied().collect();
    let (v, t): (Vec<_>, Vec<_>) = train
        .drain(..)
        .enumerate()
        .partition(|(i, _)| held_out.contains(i));
    if t.is_empty() {
        return Err(TrainError::Invalid(format!(
            "validation split {fraction} leaves no training data"
        )));
    }
    Ok((
        t.into_iter().map(|(_, e)| e).collect(),
        v.into_iter().map(|(_, e)| e).collect(),
    ))
}

/// The id batches are padded with: the tokenizer's EOS (masked anyway), else the model's,
/// else 0.
pub fn pad_id(tokenizer: Option<&crate::tokenizer::Tokenizer>, config: &ModelConfig) -> u32 {
    tokenizer
        .and_then(|t| t.eos_ids.first().copied())
        .or(config.eos_token_ids.first().copied())
        .unwrap_or(0)
}

/// Named f32 tensors as one safetensors file's bytes (a checkpoint's AdamW moments).
pub fn tensors_to_bytes(tensors: &NamedTensors) -> Result<Vec<u8>, TrainError> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(values),
            )
            .expect("shape and data agree");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).map_err(|e| TrainError::Invalid(e.to_string()))
}

/// The tensors of a safetensors file's bytes (`name` names it in errors), in file order.
pub fn tensors_from_bytes(bytes: Vec<u8>, name: &str) -> Result<NamedTensors, TrainError> {
    let files = crate::model::safetensors_files::SafetensorsFiles::from_files(vec![(
        name.to_string(),
        bytes.into(),
    )])?;
    let mut out = Vec::new();
    for n in files.names() {
        let (_, shape, _) = files.raw(n)?;
        let values = files.f32(n, &shape)?;
        out.push((n.to_string(), shape, values));
    }
    Ok(out)
}

/// The sequence length batches are padded to: the longest example, rounded up to a multiple of
/// 16, at most `max_len`.
pub fn padded_length<'a>(examples: impl IntoIterator<Item = &'a Example>, max_len: usize) -> usize {
    let longest = examples.into_iter().map(|e| e.ids.len()).max().unwrap_or(1);
    longest.div_ceil(16).saturating_mul(16).min(max_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(lengths: &[usize]) -> Vec<Example> {
        Example::of_lengths(lengths)
    }

    #[test]
    fn validation_split_holds_out_a_seeded_share() {
        let (t, v) = split_validation(examples(&[3; 20]), 0.25, 7).unwrap();
        assert_eq!((t.len(), v.len()), (15, 5));
        let (t2, v2) = split_validation(examples(&[3; 20]), 0.25, 7).unwrap();
        let lines = |e: &[Example]| e.iter().map(|x| x.line).collect::<Vec<_>>();
        assert_eq!((lines(&t), lines(&v)), (lines(&t2), lines(&v2)));
        let (_, v3) = split_validation(examples(&[3; 20]), 0.25, 8).unwrap();
        assert_ne!(lines(&v), lines(&v3), "another seed, other examples");
        // Any fraction above 0 holds out at least one; none leaves nothing to train on.
        assert_eq!(
            split_validation(examples(&[3; 2]), 0.01, 1)
                .unwrap()
                .1
                .len(),
            1
        );
        assert!(split_validation(examples(&[3; 1]), 0.5, 1).is_err());
        for bad in [-0.5, 1.0, f64::NAN] {
            assert!(
                split_validation(examples(&[3; 4]), bad, 1).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            split_validation(examples(&[3; 4]), 0.0, 1).unwrap().1.len(),
            0
        );
    }

    #[test]
    fn batches_pad_to_the_longest_in_sixteens_within_the_limit() {
        assert_eq!(padded_length(&examples(&[3, 17, 9]), 512), 32);
        assert_eq!(padded_length(&examples(&[16]), 512), 16);
        assert_eq!(padded_length(&examples(&[300]), 100), 100);
        assert_eq!(padded_length(&examples(&[]), 512), 16);
    }

    #[test]
    fn eta_follows_the_mean_pace() {
        assert_eq!(eta_seconds(10.0, 5, 20), 40.0);
        assert!(eta_seconds(0.0, 0, 3).is_nan());
    }
}
