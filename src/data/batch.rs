//! Batches: examples padded to one [batch, seq] shape (the compiled graph's), padding masked.

use super::{Example, NO_LOSS};
use crate::ops::cross_entropy::IGNORE;

/// Token ids and labels [batch, seq] (labels -100 = no loss).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Batch {
    /// `examples` (at most `batch`, each at most `seq` long) padded with `pad_id` and no
    /// loss; missing rows are all padding. Padding comes after each example, where causal
    /// attention keeps it from changing what the example's tokens see.
    pub fn pad(examples: &[&Example], batch: usize, seq: usize, pad_id: u32) -> Batch {
        assert!(examples.len() <= batch, "more examples than batch rows");
        let mut input_ids = vec![pad_id; batch * seq];
        let mut labels = vec![NO_LOSS; batch * seq];
        for (row, ex) in examples.iter().enumerate() {
            assert!(ex.ids.len() <= seq, "example longer than the batch");
            input_ids[row * seq..row * seq + ex.ids.len()].copy_from_slice(&ex.ids);
            labels[row * seq..row * seq + ex.ids.len()].copy_from_slice(&ex.labels);
        }
        Batch {
            batch,
            seq,
            input_ids,
            labels,
        }
    }

    /// transformers' shift: position s predicts labels[s + 1]; the last position of each
    /// sequence and -100 carry no loss.
    pub fn targets(&self) -> Vec<u32> {
        self.labels
            .chunks_exact(self.seq)
            .flat_map(next_targets)
            .collect()
    }

    /// Targets that carry a loss.
    pub fn counted(&self) -> usize {
        self.targets().iter().filter(|&&t| t != IGNORE).count()
    }
}

/// Labels aligned with ids (one sequence) → the target each position predicts: labels[s + 1],
/// IGNORE at the last position and where the label is -100.
pub fn next_targets(labels: &[i64]) -> Vec<u32> {
    (0..labels.len())
        .map(|s| match labels.get(s + 1) {
            Some(&l) if l >= 0 => l as u32,
            _ => IGNORE,
        })
        .collect()
}

/// Targets that carry a loss in one example (as a batch row).
pub fn counted_targets(example: &Example) -> usize {
    next_targets(&example.labels)
        .iter()
        .filter(|&&t| t != IGNORE)
        .count()
}

/// How many rows of a [batch, seq] micro-batch training should run the lm-head on
/// (`TrainSession`'s `scored_rows`): the most targets any `batch` of `examples` can carry,
/// when that is at most half the batch's tokens (prompt-masked data); otherwise None, every
/// row. Rounded up to a multiple of 8.
pub fn scored_capacity(examples: &[Example], batch: usize, seq: usize) -> Option<usize> {
    let mut counts: Vec<usize> = examples.iter().map(counted_targets).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    // A micro-batch walks `batch` places of the epochs' permutations (`DataOrder`), so it can
    // hold an example once per epoch it touches: twice where it straddles two epochs, and
    // more often when the dataset is smaller than a batch.
    // The `batch` largest of those copies, counted per example (a batch of any size, even
    // one refused later as too large, costs one pass over the examples).
    let repeats = batch.div_ceil(examples.len().max(1)).saturating_add(1);
    let (mut left, mut most) = (batch, 0usize);
    for &c in &counts {
        if left == 0 {
            break;
        }
        let copies = repeats.min(left);
        most = most.saturating_add(c.saturating_mul(copies));
        left -= copies;
    }
    let capacity = most.max(1).div_ceil(8).saturating_mul(8);
    (capacity.saturating_mul(2) <= batch.saturating_mul(seq)).then_some(capacity)
}
