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
