//! Which examples each micro-batch holds: every epoch a fresh permutation (seeded by the run's
//! seed and the epoch), walked `batch` examples at a time across epoch boundaries. A function
//! of (seed, micro-batch index) alone, so a resumed run sees exactly the batches it would
//! have seen.

use rand::seq::SliceRandom;
use rand::SeedableRng;

#[derive(Clone, Copy, Debug)]
pub struct DataOrder {
    pub examples: usize,
    pub batch: usize,
    pub seed: u64,
    pub shuffle: bool,
}

impl DataOrder {
    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.examples).collect();
        if self.shuffle {
            let seed = self.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        order
    }

    /// The example indices of micro-batch `k` (0-based over the whole run).
    pub fn micro_batch(&self, k: usize) -> Vec<usize> {
        let first = k * self.batch;
        let mut out = Vec::with_capacity(self.batch);
        let mut epoch = usize::MAX;
        let mut perm = Vec::new();
        for p in first..first + self.batch {
            let e = p / self.examples;
            if e != epoch {
                perm = self.permutation(e);
                epoch = e;
            }
            out.push(perm[p % self.examples]);
        }
        out
    }

    /// The (fractional) epoch reached after `micro_batches` micro-batches.
    pub fn epoch_after(&self, micro_batches: usize) -> f64 {
        (micro_batches * self.batch) as f64 / self.examples as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_visits_every_example_once() {
        let order = DataOrder {
            examples: 10,
            batch: 4,
            seed: 7,
            shuffle: true,
        };
        // 5 micro-batches of 4 = two epochs of 10.
        let seen: Vec<usize> = (0..5).flat_map(|k| order.micro_batch(k)).collect();
        for epoch in seen.chunks(10) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(&seen[..10], &seen[10..], "epochs are reshuffled");
        assert_eq!(order.micro_batch(3), order.micro_batch(3));
        let plain = DataOrder {
            shuffle: false,
            ..order
        };
        assert_eq!(plain.micro_batch(2), vec![8, 9, 0, 1]);
    }
}
