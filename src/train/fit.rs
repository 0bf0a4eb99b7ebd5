//! Will a run fit: a training step's planned GPU memory (`TrainSession::plan`, nothing
//! allocated) against a memory budget and the device's limits, and when it does not, the
//! nearest settings that do. WebGPU tells no one how much memory a GPU has, so the budget is
//! the user's (the page asks for it); the limits are the device's.
//!
//! The proposals keep the optimizer step the same where they can, as Unsloth's and
//! Axolotl's out-of-memory advice does: first a smaller batch with more accumulation
//! micro-batches (the same examples per step, the same losses up to rounding), and only then,
//! at batch 1, shorter sequences (longer examples get cut).

use super::session::MemoryPlan;

/// The settings memory depends on (besides the model and the adapter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitShape {
    pub batch: usize,
    pub accumulation: usize,
    /// The longest sequence asked for; the step's length is the data's longest up to it.
    pub max_len: usize,
}

/// One shape and its plan (or why it cannot run on the device at all).
#[derive(Clone, Debug, PartialEq)]
pub struct FitCandidate {
    pub shape: FitShape,
    /// The step's sequence length for this `max_len` and the data.
    pub seq: usize,
    pub plan: Result<MemoryPlan, String>,
}

impl FitCandidate {
    pub fn fits(&self, budget: u64) -> bool {
        matches!(&self.plan, Ok(p) if p.peak_bytes <= budget)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    pub budget: u64,
    pub asked: FitCandidate,
    /// The first smaller shape that fits, when the asked one does not.
    pub proposal: Option<FitCandidate>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl FitReport {
    pub fn fits(&self) -> bool {
        self.asked.fits(self.budget)
    }

    /// Why the asked shape does not fit, in words (None when it fits).
    pub fn refusal(&self) -> Option<String> {
        if self.fits() {
            return None;
        }
        let s = self.asked.shape;
        let what = format!(
            "batch {} × {} accumulation, sequences of {} tokens",
            s.batch, s.accumulation, self.asked.seq
        );
        let why = match &self.asked.plan {
            Ok(p) => format!(
                "{what} needs {} of GPU memory, more than the {} budget",
                mib(p.peak_bytes),
                mib(self.budget)
            ),
            Err(e) => format!("{what} cannot run on this GPU: {e}"),
        };
        Some(match &self.proposal {
            Some(c) => format!(
                "{why}; batch {} × {} accumulation with sequences of {} tokens needs {}",
                c.shape.batch,
                c.shape.accumulation,
                c.seq,
                mib(c.plan.as_ref().map(|p| p.peak_bytes).unwrap_or(0))
            ),
            None => format!(
                "{why}, and so does batch 1 with sequences of 32 tokens: a smaller model, rank or \
                 a larger budget is needed"
            ),
        })
    }

    /// The report as JSON, for the page.
    pub fn to_json(&self) -> serde_json::Value {
        let candidate = |c: &FitCandidate| {
            let (planned, params, largest, error) = match &c.plan {
                Ok(p) => (
                    Some(p.peak_bytes),
                    Some(p.params_bytes),
                    Some(p.largest_buffer),
                    None,
                ),
                Err(e) => (None, None, None, Some(e.clone())),
            };
            serde_json::json!({
                "batch": c.shape.batch, "accumulation": c.shape.accumulation,
                "max_len": c.shape.max_len, "seq": c.seq, "planned_bytes": planned,
                "params_bytes": params, "largest_buffer": largest, "error": error,
                "fits": c.fits(self.budget),
            })
        };
        serde_json::json!({
            "budget": self.budget,
            "fits": self.fits(),
            "asked": candidate(&self.asked),
            "proposal": self.proposal.as_ref().map(candidate),
            "refusal": self.refusal(),
        })
    }
}

/// The shapes tried after `asked`, nearest first: the batch halved (accumulation raised to
/// keep the examples a step), then at batch 1 the sequence halved down to 32 tokens.
pub fn smaller_shapes(asked: FitShape) -> Vec<FitShape> {
    let examples = asked.batch * asked.accumulation;
    let mut out = Vec::new();
    let mut batch = asked.batch;
    while batch > 1 {
        batch /= 2;
        out.push(FitShape {
            batch,
            accumulation: examples.div_ceil(batch),
            max_len: asked.max_len,
        });
    }
    let mut max_len = asked.max_len;
    while max_len > 32 {
        max_len = (max_len / 2).max(32);
        out.push(FitShape {
            batch: 1,
            accumulation: examples,
            max_len,
        });
    }
    out
}

/// Plan `asked` (`plan` gives a shape's sequence length and memory plan) and, when it does not
/// fit in `budget` bytes, the nearest smaller shape that does.
pub fn will_it_fit(
    asked: FitShape,
    budget: u64,
    mut plan: impl FnMut(&FitShape) -> (usize, Result<MemoryPlan, String>),
) -> FitReport {
    let mut candidate = |shape: FitShape| {
        let (seq, plan) = plan(&shape);
        FitCandidate { shape, seq, plan }
    };
    let asked = candidate(asked);
    let proposal = if asked.fits(budget) {
        None
    } else {
        smaller_shapes(asked.shape)
            .into_iter()
            .map(&mut candidate)
            .find(|c| c.fits(budget))
    };
    FitReport {
        budget,
        asked,
        proposal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaller_shapes_keep_the_examples_a_step_then_shorten() {
        let s = smaller_shapes(FitShape {
            batch: 4,
            accumulation: 2,
            max_len: 100,
        });
        let got: Vec<(usize, usize, usize)> = s
            .iter()
            .map(|s| (s.batch, s.accumulation, s.max_len))
            .collect();
        assert_eq!(
            got,
            [(2, 4, 100), (1, 8, 100), (1, 8, 50), (1, 8, 32)].to_vec()
        );
        // An odd batch rounds the accumulation up: at least as many examples a step.
        let s = smaller_shapes(FitShape {
            batch: 3,
            accumulation: 1,
            max_len: 32,
        });
        assert_eq!(
            s,
            [FitShape {
                batch: 1,
                accumulation: 3,
                max_len: 32
            }]
        );
    }

    #[test]
    fn the_first_shape_that_fits_is_proposed_and_errors_are_words() {
        // Memory linear in batch × length; batch 4 cannot run at all (a binding limit).
        let plan = |s: &FitShape| {
            let seq = s.max_len.min(64);
            let peak = 1000 + (s.batch * seq) as u64 * 10;
            let plan = if s.batch >= 4 {
                Err("tensor 'logits' of 300 MB is over the 128 MB binding limit".to_string())
            } else {
                Ok(MemoryPlan {
                    peak_bytes: peak,
                    params_bytes: 1000,
                    largest_buffer: peak / 2,
                })
            };
            (seq, plan)
        };
        let asked = FitShape {
            batch: 4,
            accumulation: 1,
            max_len: 64,
        };
        let r = will_it_fit(asked, 1 << 20, plan);
        assert!(!r.fits());
        let p = r.proposal.as_ref().unwrap();
        assert_eq!((p.shape.batch, p.shape.accumulation), (2, 2));
        let words = r.refusal().unwrap();
        assert!(
            words.contains("cannot run on this GPU") && words.contains("binding limit"),
            "{words}"
        );
        // A budget only batch 1 with 32 tokens meets.
        let r = will_it_fit(asked, 1000 + 32 * 10, plan);
        let p = r.proposal.as_ref().unwrap();
        assert_eq!((p.shape.batch, p.shape.accumulation, p.seq), (1, 4, 32));
        // None fits.
        let r = will_it_fit(asked, 999, plan);
        assert!(r.proposal.is_none());
        assert!(r.refusal().unwrap().contains("larger budget"));
        // The asked shape fits: no refusal, no proposal.
        let r = will_it_fit(FitShape { batch: 2, ..asked }, 1 << 20, plan);
        assert!(r.fits() && r.proposal.is_none() && r.refusal().is_none());
        assert_eq!(r.to_json()["asked"]["planned_bytes"], 1000 + 2 * 64 * 10);
    }
}
