//! Scoring with the model: log-likelihoods of target tokens, from which validation loss,
//! perplexity and multiple-choice accuracy follow (lm-evaluation-harness `acc` and
//! `acc_norm`).
//!
//! A forward-only graph over a pass of `tokens` packed tokens: items (an example, or a
//! question with all its choices) are laid end to end, each token attending within its item
//! as a per-token mask says (`attention::TokenMask`). A question's choices are branches after
//! its prompt: each sees the prompt and itself, so the prompt is computed once, not once per
//! choice. The body runs once a pass up to the final hidden state; the head (gather of the
//! scored positions, lm-head in vocabulary blocks) then runs once per `capacity` scored
//! positions, the host writing the positions each time and computing the log-softmax of those
//! rows only. During training the scorer shares the training graph's weights and adapter.

use crate::data::batch::next_targets;
use crate::data::{Example, Mcq};
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, TensorId};
use crate::lora::LoraConfig;
use crate::model::transformer::{BaseFormat, Transformer};
use crate::model::ModelConfig;
use crate::ops::attention::TokenMask;
use crate::ops::cross_entropy::IGNORE;
use crate::ops::embedding;
use crate::tokenizer::Tokenizer;

use super::TrainError;

/// The logits of one head run are kept under this many bytes.
const LOGITS_BYTES: u64 = 64 << 20;

/// Tokens a pass holds by default (more when one item is longer).
pub const PASS_TOKENS: usize = 1024;

/// One thing to score, laid out in a pass as one group of tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub ids: Vec<u32>,
    /// Per token: 0 for the shared part, c + 1 for branch c (which sees only the shared part
    /// and itself).
    pub branch: Vec<u32>,
    /// Per token: its RoPE position.
    pub positions: Vec<u32>,
    /// (token index in the item, target id, result slot): the token's hidden state scores
    /// the target, and the log-probability adds to the slot's sum.
    pub targets: Vec<(usize, u32, usize)>,
}

impl Item {
    /// An example (its next-token targets) scored into `slot`.
    pub fn example(e: &Example, slot: usize) -> Item {
        let n = e.ids.len();
        Item {
            ids: e.ids.clone(),
            branch: vec![0; n],
            positions: (0..n as u32).collect(),
            targets: next_targets(&e.labels)
                .into_iter()
                .enumerate()
                .filter(|&(_, t)| t != IGNORE)
                .map(|(p, t)| (p, t, slot))
                .collect(),
        }
    }

    /// A question: its prompt, then every choice's continuation as a branch, choice c scored
    /// into `first_slot + c`. The prompt's last token predicts each continuation's first.
    pub fn question(
        tok: &Tokenizer,
        q: &Mcq,
        by_letter: bool,
        first_slot: usize,
    ) -> Result<Item, TrainError> {
        let prompt = tok.encode(&q.prompt(), true)?;
        let p = prompt.len();
        if p == 0 {
            return Err(TrainError::Invalid(format!(
                "question '{}' has an empty prompt",
                q.question
            )));
        }
        let mut item = Item {
            ids: prompt,
            branch: vec![0; p],
            positions: (0..p as u32).collect(),
            targets: Vec::new(),
        };
        for c in 0..q.choices.len() {
            let cont = tok.encode(&q.continuation(c, by_letter), false)?;
            let slot = first_slot + c;
            for (k, &id) in cont.iter().enumerate() {
                // Token k of the continuation is predicted by the token before it.
                let before = if k == 0 { p - 1 } else { item.ids.len() - 1 };
                item.targets.push((before, id, slot));
                item.ids.push(id);
                item.branch.push(c as u32 + 1);
                item.positions.push((p + k) as u32);
            }
        }
        Ok(item)
    }

    /// One past the highest RoPE position: the longest sequence it stands for (a question's
    /// prompt and its longest choice).
    pub fn positions_needed(&self) -> usize {
        self.positions.iter().max().map_or(0, |&p| p as usize + 1)
    }
}

/// The items of `examples`, example i scored into slot i.
pub fn example_items(examples: &[Example]) -> Vec<Item> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| Item::example(e, i))
        .collect()
}

/// Multiple-choice questions as scorer items, tokenized once for both sizing the scorer
/// (`ScorerShape::for_items`) and scoring (`Scorer::mcq`).
pub struct QuestionItems {
    /// Question i's item, choice c scored into slot `first_row[i] + c`.
    pub items: Vec<Item>,
    /// The slots where each question's choices start, then their total.
    pub first_row: Vec<usize>,
    /// Whether the choices are scored by their letter alone.
    pub by_letter: bool,
}

/// The items of `questions`.
pub fn question_items(
    tok: &Tokenizer,
    questions: &[Mcq],
    by_letter: bool,
) -> Result<QuestionItems, TrainError> {
    let mut first_row = Vec::with_capacity(questions.len() + 1);
    let mut next = 0;
    let mut items = Vec::with_capacity(questions.len());
    for q in questions {
        first_row.push(next);
        items.push(Item::question(tok, q, by_letter, next)?);
        next += q.choices.len();
    }
    first_row.push(next);
    Ok(QuestionItems {
        items,
        first_row,
        by_letter,
    })
}

/// Items packed greedily into passes of `tokens`: the index ranges of each pass.
fn passes(items: &[Item], tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        if used + item.ids.len() > tokens && i > start {
            out.push(start..i);
            (start, used) = (i, 0);
        }
        used += item.ids.len();
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}

/// A scorer's size: tokens a pass, RoPE positions, scored positions a head run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScorerShape {
    pub tokens: usize,
    pub positions: usize,
    pub capacity: usize,
}

impl ScorerShape {
    /// The shape that scores every list of `jobs` in passes of about `pass_tokens` (more if
    /// an item is longer): capacity for the fullest pass, within LOGITS_BYTES and the storage
    /// binding limit (fuller passes take several head runs).
    pub fn for_items(
        jobs: &[&[Item]],
        pass_tokens: usize,
        vocab: usize,
        max_binding: u64,
    ) -> ScorerShape {
        let all = || jobs.iter().flat_map(|j| j.iter());
        let longest = all().map(|i| i.ids.len()).max().unwrap_or(1);
        let tokens = pass_tokens.max(longest).max(1);
        let positions = all().map(Item::positions_needed).max().unwrap_or(1).max(1);
        let fullest = jobs
            .iter()
            .flat_map(|items| {
                passes(items, tokens)
                    .into_iter()
                    .map(|r| items[r].iter().map(|i| i.targets.len()).sum::<usize>())
            })
            .max()
            .unwrap_or(1);
        let limit = (LOGITS_BYTES.min(max_binding) / (4 * vocab as u64)) as usize;
        ScorerShape {
            tokens,
            positions,
            capacity: fullest.clamp(1, limit.max(1)),
        }
    }
}

pub struct Scorer {
    pub compiled: CompiledGraph,
    /// Its params with their kinds (what `upload_model` fills).
    pub model: Transformer,
    pub shape: ScorerShape,
    input: TensorId,
    mask: TensorId,
    positions: TensorId,
    /// [capacity]: the positions (of the pass) the head scores in one run.
    scored: TensorId,
    /// [capacity, vocab].
    logits: TensorId,
    /// Nodes up to the final hidden state: what a pass runs once.
    body_nodes: usize,
    vocab: usize,
}

/// Multiple-choice results over `n` questions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct McqScore {
    pub accuracy: f64,
    pub acc_norm: f64,
    pub n: usize,
    /// The right answers' summed log-likelihood and token count: the loss of the questions
    /// as training examples (prompt, then the answer's continuation), without scoring them
    /// again.
    pub answer_logprob: f64,
    pub answer_tokens: usize,
}

/// Loss over the counted tokens of a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScore {
    pub loss: f64,
    pub perplexity: f64,
    pub tokens: usize,
}

impl LossScore {
    /// From a summed log-likelihood over `tokens` targets.
    pub fn of(logprob: f64, tokens: usize) -> LossScore {
        let loss = -logprob / tokens.max(1) as f64;
        LossScore {
            loss,
            perplexity: loss.exp(),
            tokens,
        }
    }
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
        shape: ScorerShape,
    ) -> Result<(Graph, Transformer, [TensorId; 5], usize), TrainError> {
        let t = shape.tokens;
        let mut g = Graph::for_device(gpu);
        let model = Transformer::declare(&mut g, config, base, lora, shape.positions)?;
        let input = g.input("input_ids", &[t], DType::U32);
        let mask = g.input("attention.mask", &[t, 4], DType::F32);
        let positions = g.input("rope.positions", &[t], DType::U32);
        let hidden = model.forward_hidden_packed(&mut g, input, mask, positions)?;
        // Read by every head run: its own buffer, which no later node reuses.
        g.mark_output(hidden);
        let body_nodes = g.nodes.len();
        let scored = g.input("scored.positions", &[shape.capacity], DType::U32);
        let rows = embedding::gather(&mut g, "h_scored", scored, hidden)?;
        let logits = crate::ops::matmul::logits_parts(&mut g, "logits", rows, &model.lm_head)?;
        g.mark_output(logits);
        Ok((
            g,
            model,
            [input, mask, positions, scored, logits],
            body_nodes,
        ))
    }

    fn finish(
        compiled: CompiledGraph,
        model: Transformer,
        ids: [TensorId; 5],
        body_nodes: usize,
        shape: ScorerShape,
        vocab: usize,
    ) -> Scorer {
        let [input, mask, positions, scored, logits] = ids;
        Scorer {
            compiled,
            model,
            shape,
            input,
            mask,
            positions,
            scored,
            logits,
            body_nodes,
            vocab,
        }
    }

    /// A scorer with its own weights; the caller uploads them (`model::load::upload_model`).
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        shape: ScorerShape,
    ) -> Result<Scorer, TrainError> {
        let (g, model, ids, body) = Self::declare(gpu, config, base, lora, shape)?;
        let compiled = CompiledGraph::new(gpu, g)?;
        Ok(Self::finish(
            compiled,
            model,
            ids,
            body,
            shape,
            config.vocab_size,
        ))
    }

    /// A scorer over the weights and adapter of `other` (a training graph of the same model).
    pub fn sharing(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        shape: ScorerShape,
        other: &CompiledGraph,
    ) -> Result<Scorer, TrainError> {
        let (g, model, ids, body) = Self::declare(gpu, config, base, lora, shape)?;
        let (compiled, unshared) = CompiledGraph::new_sharing(gpu, g, other)?;
        for name in unshared {
            use crate::model::transformer::{ROPE_TABLE, ROPE_TABLE_LOCAL};
            let table = match name.as_str() {
                ROPE_TABLE => config.rope_table(shape.positions),
                ROPE_TABLE_LOCAL => config.rope_local_table(shape.positions),
                _ => {
                    return Err(TrainError::Invalid(format!(
                        "evaluation graph: '{name}' is not in the training graph"
                    )))
                }
            };
            let t = compiled.graph.find(&name).expect("listed from the graph");
            debug_assert_eq!(table.len(), compiled.graph.tensor(t).numel());
            compiled.write(gpu, t, bytemuck::cast_slice(&table))?;
        }
        Ok(Self::finish(
            compiled,
            model,
            ids,
            body,
            shape,
            config.vocab_size,
        ))
    }

    /// Score `items` into `slots` result slots: (sum of the targets' log-probabilities, how
    /// many) for each slot. `progress` hears how many items are done.
    pub async fn score(
        &self,
        gpu: &Gpu,
        items: &[Item],
        slots: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<(f64, usize)>, TrainError> {
        let mut out = vec![(0.0f64, 0usize); slots];
        for range in passes(items, self.shape.tokens) {
            let pass = &items[range.clone()];
            self.score_pass(gpu, pass, &mut out).await?;
            progress(range.end);
        }
        Ok(out)
    }

    /// One pass: the body once, then the head for every `capacity` scored positions.
    async fn score_pass(
        &self,
        gpu: &Gpu,
        pass: &[Item],
        out: &mut [(f64, usize)],
    ) -> Result<(), TrainError> {
        let s = self.shape;
        let mut ids = Vec::with_capacity(s.tokens);
        let mut mask = Vec::with_capacity(s.tokens);
        let mut positions = Vec::with_capacity(s.tokens);
        // (position in the pass, target, slot)
        let mut scored = Vec::new();
        for item in pass {
            let first = ids.len();
            if first + item.ids.len() > s.tokens
                || item.positions_needed() > s.positions
                || item.targets.iter().any(|t| t.2 >= out.len())
            {
                return Err(TrainError::Invalid(format!(
                    "an item of {} tokens does not fit a scorer of {} tokens and {} positions",
                    item.ids.len(),
                    s.tokens,
                    s.positions
                )));
            }
            ids.extend_from_slice(&item.ids);
            mask.extend(
                item.branch
                    .iter()
                    .zip(&item.positions)
                    .map(|(&branch, &position)| TokenMask {
                        first,
                        branch,
                        position: position as usize,
                    }),
            );
            positions.extend_from_slice(&item.positions);
            scored.extend(
                item.targets
                    .iter()
                    .map(|&(p, t, slot)| (first + p, t, slot)),
            );
        }
        // The rest of the pass: tokens that see only themselves, scored by no one.
        while ids.len() < s.tokens {
            mask.push(TokenMask {
                first: ids.len(),
                branch: 0,
                position: 0,
            });
            ids.push(0);
            positions.push(0);
        }
        let c = &self.compiled;
        c.write(gpu, self.input, bytemuck::cast_slice(&ids))?;
        c.write(
            gpu,
            self.mask,
            bytemuck::cast_slice(&TokenMask::values(&mask)),
        )?;
        c.write(gpu, self.positions, bytemuck::cast_slice(&positions))?;
        c.run_nodes(gpu, 0..self.body_nodes);
        let v = self.vocab;
        for run in scored.chunks(s.capacity) {
            let mut at: Vec<u32> = run.iter().map(|&(p, _, _)| p as u32).collect();
            at.resize(s.capacity, 0);
            c.write(gpu, self.scored, bytemuck::cast_slice(&at))?;
            c.run_nodes(gpu, self.body_nodes..c.graph.nodes.len());
            let logits = c.read_f32(gpu, self.logits).await?;
            for (row, &(_, target, slot)) in run.iter().enumerate() {
                out[slot].0 += log_prob(&logits[row * v..(row + 1) * v], target);
                out[slot].1 += 1;
            }
        }
        Ok(())
    }

    /// Mean loss and perplexity over the labelled tokens of `examples`.
    pub async fn loss(&self, gpu: &Gpu, examples: &[Example]) -> Result<LossScore, TrainError> {
        let (sum, tokens) = self.logprob_sum(gpu, examples).await?;
        Ok(LossScore::of(sum, tokens))
    }

    /// The summed log-likelihood of the labelled tokens of `examples`, and their count.
    pub async fn logprob_sum(
        &self,
        gpu: &Gpu,
        examples: &[Example],
    ) -> Result<(f64, usize), TrainError> {
        let items = example_items(examples);
        let scored = self.score(gpu, &items, examples.len(), &mut |_| {}).await?;
        Ok(scored
            .iter()
            .fold((0.0, 0), |(s, n), &(ls, c)| (s + ls, n + c)))
    }

    /// Accuracy over multiple-choice questions (`items` made from them by `question_items`):
    /// the choice whose continuation has the highest summed log-likelihood after the prompt
    /// (`acc`), or per character (`acc_norm`). `progress` hears how many questions are done.
    pub async fn mcq(
        &self,
        gpu: &Gpu,
        questions: &[Mcq],
        items: &QuestionItems,
        mut progress: impl FnMut(usize),
    ) -> Result<McqScore, TrainError> {
        let QuestionItems {
            items,
            first_row,
            by_letter,
        } = items;
        let by_letter = *by_letter;
        let slots = *first_row.last().expect("one entry past the questions");
        let scored = self.score(gpu, items, slots, &mut progress).await?;
        let (mut right, mut right_norm) = (0usize, 0usize);
        let (mut answer_logprob, mut answer_tokens) = (0.0, 0);
        for (qi, q) in questions.iter().enumerate() {
            let first = first_row[qi];
            answer_logprob += scored[first + q.answer].0;
            answer_tokens += scored[first + q.answer].1;
            let chars = |c: usize| q.continuation(c, by_letter).chars().count().max(1) as f64;
            let best = |f: &dyn Fn(usize) -> f64| {
                (0..q.choices.len())
                    .max_by(|&a, &b| f(a).total_cmp(&f(b)).then(b.cmp(&a)))
                    .expect("at least two choices")
            };
            right += (best(&|c| scored[first + c].0) == q.answer) as usize;
            right_norm += (best(&|c| scored[first + c].0 / chars(c)) == q.answer) as usize;
        }
        let n = questions.len();
        Ok(McqScore {
            accuracy: right as f64 / n.max(1) as f64,
            acc_norm: right_norm as f64 / n.max(1) as f64,
            n,
            answer_logprob,
            answer_tokens,
        })
    }
}
