//! Sequence packing for training: several examples laid end to end in one row of the batch,
//! each attending only within itself (`attention::TokenMask` with `first` at its start, RoPE
//! positions from 0 in each), and no target crossing a boundary. Rows are filled once, best fit
//! decreasing (the longest example first, each into the fullest row it still fits, as TRL's
//! `packing_strategy="bfd"`); the data order then shuffles and batches the rows as it does
//! examples. A packed batch's loss and gradients are those of the same examples padded.

use super::{Example, NO_LOSS};
use crate::ops::attention::TokenMask;

/// Examples packed into rows of at most `seq` tokens: each row as one `Example` (ids and labels
/// end to end, the line of its first example) and the start of each of its examples. The
/// first label of every example after a row's first is set to no loss: it is what the
/// previous example's last token would predict.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    pub rows: Vec<Example>,
    pub starts: Vec<Vec<usize>>,
}

/// Pack `examples` (each at most `seq` long) into rows of `seq` tokens.
pub fn pack(examples: &[Example], seq: usize) -> Packed {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    // Longest first; equal lengths in data order, so the packing is deterministic.
    order.sort_by_key(|&i| (std::cmp::Reverse(examples[i].ids.len()), i));
    let mut bins: Vec<(usize, Vec<usize>)> = Vec::new(); // (tokens, members)
    for i in order {
        let len = examples[i].ids.len().min(seq);
        let best = bins
            .iter()
            .enumerate()
            .filter(|(_, (used, _))| used + len <= seq)
            .max_by_key(|(b, (used, _))| (*used, std::cmp::Reverse(*b)))
            .map(|(b, _)| b);
        match best {
            Some(b) => {
                bins[b].0 += len;
                bins[b].1.push(i);
            }
            None => bins.push((len, vec![i])),
        }
    }
    let mut rows = Vec::with_capacity(bins.len());
    let mut starts = Vec::with_capacity(bins.len());
    for (_, mut members) in bins {
        // Within a row, in data order.
        members.sort_unstable();
        let mut row = Example {
            ids: Vec::new(),
            labels: Vec::new(),
            line: examples[members[0]].line,
        };
        let mut at = Vec::with_capacity(members.len());
        for (k, &i) in members.iter().enumerate() {
            let e = &examples[i];
            let len = e.ids.len().min(seq);
            at.push(row.ids.len());
            row.ids.extend_from_slice(&e.ids[..len]);
            row.labels.extend_from_slice(&e.labels[..len]);
            if k > 0 {
                let first = row.labels.len() - len;
                row.labels[first] = NO_LOSS;
            }
        }
        rows.push(row);
        starts.push(at);
    }
    Packed { rows, starts }
}

/// The mask and RoPE positions of a micro-batch of `batch` rows of `seq` tokens holding `rows`
/// (each: its examples' starts and its length; missing rows are all padding): every example
/// sees itself from its start, each padding token only itself.
pub fn packed_mask(
    rows: &[(&[usize], usize)],
    batch: usize,
    seq: usize,
) -> (Vec<TokenMask>, Vec<u32>) {
    let mut mask = Vec::with_capacity(batch * seq);
    let mut positions = Vec::with_capacity(batch * seq);
    for r in 0..batch {
        let base = r * seq;
        let (starts, len) = rows.get(r).copied().unwrap_or((&[], 0));
        for t in 0..seq {
            let start = match t < len {
                true => starts.iter().rev().find(|&&s| s <= t).copied().unwrap_or(0),
                false => t,
            };
            mask.push(TokenMask {
                first: base + start,
                branch: 0,
                position: t - start,
            });
            positions.push((t - start) as u32);
        }
    }
    (mask, positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(len: usize, line: usize) -> Example {
        Example {
            ids: (0..len as u32).map(|i| i + 100 * line as u32).collect(),
            labels: (0..len as i64).map(|i| i + 100 * line as i64).collect(),
            line,
        }
    }

    #[test]
    fn best_fit_decreasing_rows_in_data_order_with_no_target_across_a_boundary() {
        let examples: Vec<Example> = [5, 3, 8, 2, 6, 4]
            .iter()
            .enumerate()
            .map(|(i, &len)| example(len, i + 1))
            .collect();
        let p = pack(&examples, 10);
        // Longest first into the fullest row it fits (ties: the first row): 8+2 | 6+4 | 5+3;
        // members in data order within a row.
        let lines: Vec<Vec<usize>> = p
            .rows
            .iter()
            .zip(&p.starts)
            .map(|(row, starts)| {
                starts
                    .iter()
                    .map(|&s| (row.ids[s] / 100) as usize)
                    .collect()
            })
            .collect();
        assert_eq!(lines, [vec![3, 4], vec![5, 6], vec![1, 2]]);
        assert_eq!(p.starts[0], [0, 8]);
        let row = &p.rows[0];
        assert_eq!(row.ids.len(), 10);
        assert_eq!(row.line, 3);
        // The second example's first label carries no loss; the first's does.
        assert_eq!(row.labels[0], 300);
        assert_eq!(row.labels[8], NO_LOSS);
        assert_eq!(row.labels[9], 401);
        let total: usize = p.rows.iter().map(|r| r.ids.len()).sum();
        assert_eq!(total, 28);
    }

    #[test]
    fn each_example_sees_itself_and_padding_only_itself() {
        let (mask, positions) = packed_mask(&[(&[0, 3], 5)], 2, 6);
        let firsts: Vec<usize> = mask.iter().map(|m| m.first).collect();
        assert_eq!(firsts, [0, 0, 0, 3, 3, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(positions, [0, 1, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(mask[4].sees(4, 3, &mask[3], None));
        assert!(!mask[3].sees(3, 2, &mask[2], None));
    }
}
