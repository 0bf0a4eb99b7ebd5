//! Scoring with the model: log-likelihoods of target tokens, from which validation loss,
//! perplexity and multiple-choice accuracy follow (lm-evaluation-harness `acc` and
//! `acc_norm`). A forward-only graph over [rows, seq] tokens whose lm-head runs only on the
//! positions that are scored: the body runs once a pass, then the head once for every
//! `capacity` scored positions, each time on the positions the host writes. During training
//! it shares the training graph's weights and adapter.

use crate::data::batch::next_targets;
use crate::data::{Example, Mcq};
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, TensorId};
use crate::lora::LoraConfig;
use crate::model::llama::{BaseFormat, Llama};
use crate::model::ModelConfig;
use crate::ops::cross_entropy::IGNORE;
use crate::ops::embedding;
use crate::ops::rope::cos_sin_table;
use crate::tokenizer::Tokenizer;

use super::TrainError;

/// The logits of one head run are kept under this many bytes.
const LOGITS_BYTES: u64 = 64 << 20;

/// Tokens a pass runs through the model at most (unless one sequence is longer).
const PASS_TOKENS: usize = 1024;

pub struct Scorer {
    pub compiled: CompiledGraph,
    input: TensorId,
    /// [capacity]: the positions (of rows·seq) the head scores in one run.
    positions: TensorId,
    /// [capacity, vocab].
    logits: TensorId,
    /// Nodes up to the final hidden state: what a pass runs once.
    body_nodes: usize,
    pub rows: usize,
    pub seq: usize,
    pub capacity: usize,
    vocab: usize,
}

/// Multiple-choice results over `n` questions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct McqScore {
    pub accuracy: f64,
    pub acc_norm: f64,
    pub n: usize,
}

/// Loss over the counted tokens of a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScore {
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
}

/// How many rows of `seq` tokens a pass scores for `n` rows in all: at most about PASS_TOKENS,
/// and as few as the same number of passes needs (no nearly empty last pass).
pub fn rows_for(seq: usize, n: usize) -> usize {
    let most = (PASS_TOKENS / seq.max(1)).clamp(1, n.max(1));
    let passes = n.max(1).div_ceil(most);
    n.max(1).div_ceil(passes)
}

/// How many positions one head run scores: the targets of the `rows` fullest rows (of
/// `targets_per_row`), within LOGITS_BYTES and the storage binding limit.
pub fn capacity_for(
    targets_per_row: impl IntoIterator<Item = usize>,
    rows: usize,
    vocab: usize,
    max_binding: u64,
) -> usize {
    let mut counts: Vec<usize> = targets_per_row.into_iter().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let wanted: usize = counts.iter().take(rows).sum();
    let limit = (LOGITS_BYTES.min(max_binding) / (4 * vocab as u64)) as usize;
    wanted.clamp(1, limit.max(1))
}

/// Log-probability of `target` under `logits` (one row), in f64.
fn log_prob(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits[target as usize] as f64 - lse
}

impl Scorer {
    fn declare(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        rows: usize,
        seq: usize,
        capacity: usize,
    ) -> Result<(Graph, [TensorId; 3], usize), TrainError> {
        let mut g = Graph::for_device(gpu);
        let model = Llama::declare(&mut g, config, base, lora, seq)?;
        let input = g.input("input_ids", &[rows * seq], DType::U32);
        let hidden = model.forward_hidden(&mut g, input, seq)?;
        // Read by every head run: its own buffer, which no later node reuses.
        g.mark_output(hidden);
        let body_nodes = g.nodes.len();
        let positions = g.input("scored.positions", &[capacity], DType::U32);
        let scored = embedding::gather(&mut g, "h_scored", positions, hidden)?;
        let logits = crate::ops::matmul::logits(&mut g, "logits", scored, model.lm_head)?;
        g.mark_output(logits);
        Ok((g, [input, positions, logits], body_nodes))
    }

    fn finish(
        compiled: CompiledGraph,
        ids: [TensorId; 3],
        body_nodes: usize,
        shape: [usize; 3],
        vocab: usize,
    ) -> Scorer {
        let [input, positions, logits] = ids;
        let [rows, seq, capacity] = shape;
        Scorer {
            compiled,
            input,
            positions,
            logits,
            body_nodes,
            rows,
            seq,
            capacity,
            vocab,
        }
    }

    /// A scorer with its own weights for passes of `rows` sequences of `seq` tokens, scoring
    /// `capacity` positions a head run; the caller uploads the weights
    /// (`model::load::upload_model`).
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        [rows, seq, capacity]: [usize; 3],
    ) -> Result<Scorer, TrainError> {
        let (g, ids, body) = Self::declare(gpu, config, base, lora, rows, seq, capacity)?;
        let compiled = CompiledGraph::new(gpu, g)?;
        let shape = [rows, seq, capacity];
        Ok(Self::finish(compiled, ids, body, shape, config.vocab_size))
    }

    /// A scorer over the weights and adapter of `other` (a training graph of the same model).
    pub fn sharing(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        [rows, seq, capacity]: [usize; 3],
        other: &CompiledGraph,
    ) -> Result<Scorer, TrainError> {
        let (g, ids, body) = Self::declare(gpu, config, base, lora, rows, seq, capacity)?;
        let (compiled, unshared) = CompiledGraph::new_sharing(gpu, g, other)?;
        for name in unshared {
            if name != "rope.cos_sin" {
                return Err(TrainError::Invalid(format!(
                    "evaluation graph: '{name}' is not in the training graph"
                )));
            }
            let t = compiled.graph.find(&name).expect("listed from the graph");
            let table = cos_sin_table(seq, config.head_dim, config.rope_theta);
            debug_assert_eq!(table.len(), compiled.graph.tensor(t).numel());
            compiled.write(gpu, t, bytemuck::cast_slice(&table))?;
        }
        let shape = [rows, seq, capacity];
        Ok(Self::finish(compiled, ids, body, shape, config.vocab_size))
    }

    /// For each row of `ids`/`targets` (each [rows·seq], targets IGNORE where not scored):
    /// (sum of the targets' log-probabilities, how many).
    pub async fn logprobs(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        targets: &[u32],
    ) -> Result<Vec<(f64, usize)>, TrainError> {
        let c = &self.compiled;
        c.write(gpu, self.input, bytemuck::cast_slice(ids))?;
        c.run_nodes(gpu, 0..self.body_nodes);
        let scored: Vec<usize> = (0..targets.len())
            .filter(|&p| targets[p] != IGNORE)
            .collect();
        let mut out = vec![(0.0f64, 0usize); targets.len() / self.seq];
        let v = self.vocab;
        for run in scored.chunks(self.capacity) {
            let mut positions: Vec<u32> = run.iter().map(|&p| p as u32).collect();
            positions.resize(self.capacity, 0);
            c.write(gpu, self.positions, bytemuck::cast_slice(&positions))?;
            c.run_nodes(gpu, self.body_nodes..c.graph.nodes.len());
            let logits = c.read_f32(gpu, self.logits).await?;
            for (slot, &p) in run.iter().enumerate() {
                let row = &mut out[p / self.seq];
                row.0 += log_prob(&logits[slot * v..(slot + 1) * v], targets[p]);
                row.1 += 1;
            }
        }
        Ok(out)
    }

    /// Score `rows` of (ids, per-position next-token targets), `self.rows` a pass; `progress`
    /// hears how many rows are done.
    async fn score_rows(
        &self,
        gpu: &Gpu,
        rows: &[(Vec<u32>, Vec<u32>)],
        pad_id: u32,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<(f64, usize)>, TrainError> {
        let mut out = Vec::new();
        for pass in rows.chunks(self.rows) {
            let mut ids = vec![pad_id; self.rows * self.seq];
            let mut targets = vec![IGNORE; self.rows * self.seq];
            for (r, (i, t)) in pass.iter().enumerate() {
                if i.len() > self.seq {
                    return Err(TrainError::Invalid(format!(
                        "{} tokens to score with a sequence length of {}",
                        i.len(),
                        self.seq
                    )));
                }
                ids[r * self.seq..r * self.seq + i.len()].copy_from_slice(i);
                targets[r * self.seq..r * self.seq + t.len()].copy_from_slice(t);
            }
            let scored = self.logprobs(gpu, &ids, &targets).await?;
            out.extend_from_slice(&scored[..pass.len()]);
            progress(out.len());
        }
        Ok(out)
    }

    /// Mean loss and perplexity over the labelled tokens of `examples`.
    pub async fn loss(
        &self,
        gpu: &Gpu,
        examples: &[Example],
        pad_id: u32,
    ) -> Result<LossScore, TrainError> {
        let rows: Vec<(Vec<u32>, Vec<u32>)> = examples
            .iter()
            .map(|e| (e.ids.clone(), next_targets(&e.labels)))
            .collect();
        let scored = self.score_rows(gpu, &rows, pad_id, &mut |_| {}).await?;
        let (sum, tokens) = scored
            .iter()
            .fold((0.0, 0), |(s, n), &(ls, c)| (s + ls, n + c));
        let loss = -sum / tokens.max(1) as f64;
        Ok(LossScore {
            loss,
            perplexity: loss.exp(),
            tokens,
        })
    }

    /// Accuracy over multiple-choice questions: the choice whose continuation has the highest
    /// summed log-likelihood after the prompt (`acc`), or per character (`acc_norm`).
    pub async fn mcq(
        &self,
        gpu: &Gpu,
        tok: &Tokenizer,
        questions: &[Mcq],
        by_letter: bool,
        pad_id: u32,
        mut progress: impl FnMut(usize),
    ) -> Result<McqScore, TrainError> {
        // Every choice of every question is a row; passes take rows from several questions.
        let mut rows = Vec::new();
        let mut lengths = Vec::new();
        let mut first_row = Vec::with_capacity(questions.len() + 1);
        for q in questions {
            first_row.push(rows.len());
            let prompt = tok.encode(&q.prompt(), true)?;
            for c in 0..q.choices.len() {
                let text = q.continuation(c, by_letter);
                let cont = tok.encode(&text, false)?;
                let ids = [prompt.clone(), cont.clone()].concat();
                let mut targets = vec![IGNORE; ids.len()];
                // Position p predicts ids[p + 1]: the continuation's tokens.
                for (k, &id) in cont.iter().enumerate() {
                    targets[prompt.len() + k - 1] = id;
                }
                rows.push((ids, targets));
                lengths.push(text.chars().count() as f64);
            }
        }
        first_row.push(rows.len());
        let mut report = |done: usize| progress(first_row.partition_point(|&r| r <= done) - 1);
        let scored = self.score_rows(gpu, &rows, pad_id, &mut report).await?;
        let (mut right, mut right_norm) = (0usize, 0usize);
        for (qi, q) in questions.iter().enumerate() {
            let range = first_row[qi]..first_row[qi + 1];
            let best = |f: &dyn Fn(usize) -> f64| {
                range
                    .clone()
                    .max_by(|&a, &b| f(a).total_cmp(&f(b)).then(b.cmp(&a)))
                    .expect("at least two choices")
                    - range.start
            };
            right += (best(&|i| scored[i].0) == q.answer) as usize;
            right_norm += (best(&|i| scored[i].0 / lengths[i]) == q.answer) as usize;
        }
        let n = questions.len();
        Ok(McqScore {
            accuracy: right as f64 / n.max(1) as f64,
            acc_norm: right_norm as f64 / n.max(1) as f64,
            n,
        })
    }
}
