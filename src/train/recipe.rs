//! One recipe for a run, for the CLI (`cli/train.rs`) and the page (`web.rs`) alike: from the
//! encoded data and the run's settings, the LoRA config with its targets checked, the rows to
//! train on (packed or not), the padded length, the step count, the schedule and the session
//! settings. Decided once here, so that the two faces cannot drift; they keep only their I/O
//! (files and a terminal, or JavaScript).

use super::schedule::{Schedule, ScheduleKind};
use super::session::SessionSettings;
use super::trainer::padded_length;
use crate::data::batch::scored_capacity;
use crate::data::pack::pack;
use crate::data::Example;
use crate::lora::{LoraConfig, ALL_LINEAR};
use crate::model::transformer::BaseFormat;
use crate::ops::adamw::AdamW;

/// The most optimizer steps a run can take: AdamW's step count (its bias corrections) is a
/// 32-bit integer on the GPU.
pub const MAX_STEPS: usize = u32::MAX as usize;

/// A run's settings, as the CLI's flags and the page's settings give them.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub lora: LoraConfig,
    pub base: BaseFormat,
    /// Sequences a micro-batch.
    pub batch: usize,
    /// Micro-batches an optimizer step.
    pub accumulation: usize,
    /// The longest sequence in tokens.
    pub max_len: usize,
    /// Optimizer steps; None: `epochs` over the training rows.
    pub steps: Option<usize>,
    pub epochs: f64,
    pub schedule: ScheduleKind,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    pub seed: u64,
    pub packing: bool,
    /// Recompute each layer's activations in the backward (less memory, one more forward).
    pub checkpointing: bool,
}

/// LoRA settings: `targets` None is all seven linear modules; a name outside them is refused,
/// naming `flag` (the CLI's `--target-modules`, the page's `target_modules`).
#[allow(clippy::too_many_arguments)]
pub fn lora_config(
    r: usize,
    alpha: Option<f64>,
    dropout: f64,
    targets: Option<&[String]>,
    use_rslora: bool,
    use_dora: bool,
    model_name: &str,
    flag: &str,
) -> Result<LoraConfig, String> {
    if r == 0 {
        return Err(format!("rank {r}: a LoRA rank is at least 1"));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(format!("lora dropout {dropout} must be in [0, 1)"));
    }
    let alpha = alpha.unwrap_or(2.0 * r as f64);
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(format!("alpha {alpha} must be a positive number"));
    }
    let mut targets: Vec<String> = match targets {
        Some(t) => t.to_vec(),
        None => ALL_LINEAR.iter().map(|m| m.to_string()).collect(),
    };
    let known = crate::lora::module_names();
    if let Some(bad) = targets.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(format!(
            "{flag}: '{bad}' is not one of {}",
            known.join(", ")
        ));
    }
    if targets.is_empty() {
        return Err(format!("{flag}: no modules to adapt"));
    }
    targets.sort();
    targets.dedup();
    Ok(LoraConfig {
        r,
        alpha,
        dropout,
        target_modules: targets,
        use_rslora,
        use_dora,
        base_model_name_or_path: model_name.to_string(),
    })
}

/// What a run trains on and how.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub settings: SessionSettings,
    pub schedule: Schedule,
    /// The rows a micro-batch draws from: the examples, or packed rows.
    pub train: Vec<Example>,
    /// Packed rows' examples' starts (`data::pack`).
    pub starts: Option<Vec<Vec<usize>>>,
    pub valid: Vec<Example>,
    /// Training examples before packing.
    pub examples: usize,
}

impl Recipe {
    /// The recipe for training on `train` and validating on `valid` with `run`.
    pub fn new(
        train: Vec<Example>,
        valid: Vec<Example>,
        run: &RunSettings,
    ) -> Result<Recipe, String> {
        let per_step = run.batch.checked_mul(run.accumulation).ok_or_else(|| {
            format!(
                "batch {} × accumulation {}: more examples a step than can be counted",
                run.batch, run.accumulation
            )
        })?;
        if per_step == 0 {
            return Err("batch and accumulation are at least 1".into());
        }
        if !(run.epochs.is_finite() && run.epochs > 0.0) {
            return Err(format!("epochs {} must be more than 0", run.epochs));
        }
        let examples = train.len();
        let (train, starts, seq) = match run.packing {
            // Rows of the longest length, each holding several examples.
            true => {
                let packed = pack(&train, run.max_len);
                (packed.rows, Some(packed.starts), run.max_len)
            }
            false => {
                let seq = padded_length(train.iter().chain(&valid), run.max_len);
                (train, None, seq)
            }
        };
        let total = match run.steps {
            Some(n) => n.max(1) as f64,
            None => ((train.len() as f64 * run.epochs) / per_step as f64)
                .ceil()
                .max(1.0),
        };
        if total > MAX_STEPS as f64 {
            return Err(format!(
                "a run of {total} steps is more than the {MAX_STEPS} one can take (the \
                 optimizer counts its steps in 32 bits): ask for fewer steps or epochs"
            ));
        }
        let total = total as usize;
        let schedule = Schedule {
            kind: run.schedule,
            peak: run.lr,
            warmup: run.warmup,
            total,
        };
        let settings = SessionSettings {
            batch: run.batch,
            seq,
            base: run.base,
            lora: run.lora.clone(),
            checkpointing: run.checkpointing,
            accumulation: run.accumulation,
            max_grad_norm: run.max_grad_norm,
            adamw: AdamW {
                weight_decay: run.weight_decay as f32,
                ..AdamW::default()
            },
            seed: run.seed,
            scored_rows: scored_capacity(&train, run.batch, seq),
            packing: run.packing,
        };
        Ok(Recipe {
            settings,
            schedule,
            train,
            starts,
            valid,
            examples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(lengths: &[usize]) -> Vec<Example> {
        Example::of_lengths(lengths)
    }

    fn run() -> RunSettings {
        RunSettings {
            lora: lora_config(8, None, 0.0, None, false, false, "m", "targets").unwrap(),
            base: BaseFormat::F32,
            batch: 4,
            accumulation: 2,
            max_len: 64,
            steps: None,
            epochs: 1.0,
            schedule: ScheduleKind::Linear,
            lr: 1e-3,
            warmup: 0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 1,
            packing: false,
            checkpointing: true,
        }
    }

    #[test]
    fn steps_come_from_epochs_unless_given() {
        let r = Recipe::new(examples(&[10; 17]), examples(&[20]), &run()).unwrap();
        // 17 rows, 8 a step: 3 steps for one epoch; sequences padded to 16 × ⌈20/16⌉.
        assert_eq!((r.schedule.total, r.settings.seq, r.examples), (3, 32, 17));
        let two = RunSettings {
            epochs: 2.0,
            ..run()
        };
        assert_eq!(
            Recipe::new(examples(&[10; 17]), vec![], &two)
                .unwrap()
                .schedule
                .total,
            5
        );
        let given = RunSettings {
            steps: Some(7),
            ..run()
        };
        assert_eq!(
            Recipe::new(examples(&[10; 17]), vec![], &given)
                .unwrap()
                .schedule
                .total,
            7
        );
    }

    #[test]
    fn runs_longer_than_the_optimizer_counts_are_refused() {
        for (steps, epochs) in [(None, 1e300), (None, 1e12), (Some(MAX_STEPS + 1), 1.0)] {
            let long = RunSettings {
                steps,
                epochs,
                ..run()
            };
            let err = Recipe::new(examples(&[10; 17]), vec![], &long).unwrap_err();
            assert!(err.contains("fewer steps or epochs"), "{err}");
        }
        let most = RunSettings {
            steps: Some(MAX_STEPS),
            ..run()
        };
        let r = Recipe::new(examples(&[10; 17]), vec![], &most).unwrap();
        assert_eq!(r.schedule.total, MAX_STEPS);
    }

    #[test]
    fn packing_fills_rows_of_the_longest_length() {
        let packed = RunSettings {
            packing: true,
            ..run()
        };
        let r = Recipe::new(examples(&[30, 30, 20, 10, 4]), vec![], &packed).unwrap();
        assert_eq!(r.settings.seq, 64);
        assert!(r.train.len() < 5 && r.starts.is_some());
        assert_eq!(r.examples, 5);
    }

    #[test]
    fn targets_are_checked_sorted_and_named() {
        let t = [
            "v_proj".to_string(),
            "q_proj".to_string(),
            "q_proj".to_string(),
        ];
        let l = lora_config(
            4,
            Some(8.0),
            0.1,
            Some(&t),
            false,
            false,
            "m",
            "--target-modules",
        )
        .unwrap();
        assert_eq!(l.target_modules, ["q_proj", "v_proj"]);
        let bad = ["qkv".to_string()];
        let e = lora_config(
            4,
            None,
            0.0,
            Some(&bad),
            false,
            false,
            "m",
            "--target-modules",
        )
        .unwrap_err();
        assert!(
            e.starts_with("--target-modules: 'qkv' is not one of q_proj"),
            "{e}"
        );
        assert!(lora_config(4, None, 1.0, None, false, false, "m", "x").is_err());
        assert!(lora_config(0, None, 0.0, None, false, false, "m", "x").is_err());
    }
}
