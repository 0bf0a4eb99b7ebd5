//! Scoring with the model: log-likelihoods of target tokens, from which validation loss,
//! perplexity and multiple-choice accuracy follow (lm-evaluation-harness `acc` and
//! `acc_norm`). A forward-only graph with full logits for [rows, seq] tokens, sized so the
//! logits fit one storage binding; during training it shares the training graph's weights and
//! adapter.

use crate::data::batch::next_targets;
use crate::data::{Example, Mcq};
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, TensorId};
use crate::lora::LoraConfig;
use crate::model::llama::{BaseFormat, Llama};
use crate::model::ModelConfig;
use crate::ops::cross_entropy::IGNORE;
use crate::ops::rope::cos_sin_table;
use crate::tokenizer::Tokenizer;

use super::TrainError;

/// Logits of one forward are kept under this many bytes.
const LOGITS_BYTES: u64 = 64 << 20;

pub struct Scorer {
    pub compiled: CompiledGraph,
    input: TensorId,
    logits: TensorId,
    pub rows: usize,
    pub seq: usize,
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

/// How many rows of `seq` tokens a forward may score at once (at most `max_rows`).
pub fn rows_for(seq: usize, vocab: usize, max_rows: usize, max_binding: u64) -> usize {
    let limit = LOGITS_BYTES.min(max_binding);
    ((limit / (4 * seq as u64 * vocab as u64)) as usize).clamp(1, max_rows)
}

impl Scorer {
    fn declare(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        rows: usize,
        seq: usize,
    ) -> Result<(Graph, TensorId, TensorId), TrainError> {
        let mut g = Graph::for_device(gpu);
        let model = Llama::declare(&mut g, config, base, lora, seq)?;
        let input = g.input("input_ids", &[rows * seq], DType::U32);
        let logits = model.forward_logits(&mut g, input, seq)?;
        g.mark_output(logits);
        Ok((g, input, logits))
    }

    /// A scorer with its own weights; the caller uploads them (`model::load::upload_model`).
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        rows: usize,
        seq: usize,
    ) -> Result<Scorer, TrainError> {
        let (g, input, logits) = Self::declare(gpu, config, base, lora, rows, seq)?;
        let compiled = CompiledGraph::new(gpu, g)?;
        Ok(Scorer {
            compiled,
            input,
            logits,
            rows,
            seq,
            vocab: config.vocab_size,
        })
    }

    /// A scorer over the weights and adapter of `other` (a training graph of the same model).
    pub fn sharing(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        rows: usize,
        seq: usize,
        other: &CompiledGraph,
    ) -> Result<Scorer, TrainError> {
        let (g, input, logits) = Self::declare(gpu, config, base, lora, rows, seq)?;
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
        Ok(Scorer {
            compiled,
            input,
            logits,
            rows,
            seq,
            vocab: config.vocab_size,
        })
    }

    /// For each row of `ids`/`targets` (each [rows·seq], targets IGNORE where not scored):
    /// (sum of the targets' log-probabilities, how many).
    pub async fn logprobs(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        targets: &[u32],
    ) -> Result<Vec<(f64, usize)>, TrainError> {
        self.compiled
            .write(gpu, self.input, bytemuck::cast_slice(ids))?;
        self.compiled.run(gpu);
        let logits = self.compiled.read_f32(gpu, self.logits).await?;
        let v = self.vocab;
        Ok(targets
            .chunks(self.seq)
            .enumerate()
            .map(|(r, row)| {
                let mut sum = 0.0f64;
                let mut count = 0;
                for (s, &t) in row.iter().enumerate() {
                    if t == IGNORE {
                        continue;
                    }
                    let at = (r * self.seq + s) * v;
                    let l = &logits[at..at + v];
                    let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
                    sum += l[t as usize] as f64 - lse;
                    count += 1;
                }
                (sum, count)
            })
            .collect())
    }

    /// Score `rows` of (ids, per-position next-token targets), padding the last pass.
    async fn score_rows(
        &self,
        gpu: &Gpu,
        rows: &[(Vec<u32>, Vec<u32>)],
        pad_id: u32,
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
        let scored = self.score_rows(gpu, &rows, pad_id).await?;
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
        let (mut right, mut right_norm) = (0usize, 0usize);
        for (qi, q) in questions.iter().enumerate() {
            let prompt = tok.encode(&q.prompt(), true)?;
            let mut rows = Vec::new();
            let mut lengths = Vec::new();
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
            let scored = self.score_rows(gpu, &rows, pad_id).await?;
            let best = |f: &dyn Fn(usize) -> f64| {
                (0..scored.len())
                    .max_by(|&a, &b| f(a).total_cmp(&f(b)).then(b.cmp(&a)))
                    .expect("at least two choices")
            };
            right += (best(&|i| scored[i].0) == q.answer) as usize;
            right_norm += (best(&|i| scored[i].0 / lengths[i]) == q.answer) as usize;
            progress(qi + 1);
        }
        let n = questions.len();
        Ok(McqScore {
            accuracy: right as f64 / n.max(1) as f64,
            acc_norm: right_norm as f64 / n.max(1) as f64,
            n,
        })
    }
}
