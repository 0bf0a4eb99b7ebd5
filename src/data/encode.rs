//! Records into token ids and labels. Labels follow Hugging Face: aligned with the ids
//! (the shift to next-token targets happens in `Batch::targets`), -100 where no loss is taken.
//! The prompt part of a record (prompt, question, all but the last chat turn) carries no loss
//! unless `train_on_inputs`.

use super::records::Numbered;
use super::{DataError, Record, NO_LOSS};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct EncodeOptions {
    /// Take the loss on prompts too.
    pub train_on_inputs: bool,
    /// The longest example allowed, in tokens; a longer one is an error naming its line.
    pub max_len: usize,
    /// For multiple-choice records, learn the answer's letter instead of its text.
    pub mcq_by_letter: bool,
}

/// One tokenized example and the line it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub line: usize,
}

impl Example {
    /// Tokens that carry a loss (the first one never does: nothing predicts it).
    pub fn counted(&self) -> usize {
        self.labels
            .iter()
            .skip(1)
            .filter(|&&l| l != NO_LOSS)
            .count()
    }

    /// Examples of these lengths, every token learned, lines from 1 (for unit tests).
    #[cfg(test)]
    pub(crate) fn of_lengths(lengths: &[usize]) -> Vec<Example> {
        lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| Example {
                ids: vec![1; n],
                labels: vec![1; n],
                line: i + 1,
            })
            .collect()
    }
}

fn prompt_and_answer(
    tok: &Tokenizer,
    prompt: &str,
    answer: &str,
    eos: bool,
    train_on_inputs: bool,
) -> Result<(Vec<u32>, Vec<i64>), String> {
    let p = tok.encode(prompt, true).map_err(|e| e.msg)?;
    let mut a = tok.encode(answer, false).map_err(|e| e.msg)?;
    if eos {
        a.extend(tok.eos_ids.first());
    }
    Ok(joined(p, a, train_on_inputs))
}

/// The prompt's ids (learned only with `train_on_inputs`) followed by the answer's.
fn joined(p: Vec<u32>, a: Vec<u32>, train_on_inputs: bool) -> (Vec<u32>, Vec<i64>) {
    let labels = p
        .iter()
        .map(|&id| if train_on_inputs { id as i64 } else { NO_LOSS })
        .chain(a.iter().map(|&id| id as i64))
        .collect();
    ([p, a].concat(), labels)
}

fn encode_one(
    record: &Record,
    tok: Option<&Tokenizer>,
    opts: &EncodeOptions,
) -> Result<(Vec<u32>, Vec<i64>), String> {
    if let Record::Tokens { input_ids, labels } = record {
        let labels = labels
            .clone()
            .unwrap_or_else(|| input_ids.iter().map(|&i| i as i64).collect());
        return Ok((input_ids.clone(), labels));
    }
    let tok = tok.ok_or("this record is text and the model has no tokenizer")?;
    match record {
        Record::Text(text) => {
            let mut ids = tok.encode(text, true).map_err(|e| e.msg)?;
            ids.extend(tok.eos_ids.first());
            let labels = ids.iter().map(|&i| i as i64).collect();
            Ok((ids, labels))
        }
        Record::PromptCompletion { prompt, completion } => {
            prompt_and_answer(tok, prompt, completion, true, opts.train_on_inputs)
        }
        Record::Mcq(q) => prompt_and_answer(
            tok,
            &q.prompt(),
            &q.continuation(q.answer, opts.mcq_by_letter),
            false,
            opts.train_on_inputs,
        ),
        Record::Chat(messages) => {
            // The conversation before the last (assistant) turn, up to where the assistant
            // starts, is the prompt; the rest of the rendered chat is learned (as TRL splits
            // it). Both parts are the template's text tokenized with no special tokens added:
            // the template writes them.
            let full = tok
                .apply_chat_template(messages, false)
                .map_err(|e| e.msg)?;
            let prompt = tok
                .apply_chat_template(&messages[..messages.len() - 1], true)
                .map_err(|e| e.msg)?;
            let answer = full.strip_prefix(&prompt).ok_or(
                "the chat template renders the conversation without the last turn differently \
                 from its start; cannot tell prompt from answer",
            )?;
            let p = tok.encode(&prompt, false).map_err(|e| e.msg)?;
            let a = tok.encode(answer, false).map_err(|e| e.msg)?;
            Ok(joined(p, a, opts.train_on_inputs))
        }
        Record::Tokens { .. } => unreachable!("handled above"),
    }
}

/// An error naming the first id of `ids` outside a vocabulary of `vocab`.
pub fn check_vocab(ids: &[u32], vocab: usize) -> Result<(), String> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        )),
        None => Ok(()),
    }
}

/// Tokenize every record; `path` names the file in errors. Ids outside `vocab` and examples
/// longer than `opts.max_len` or with no token to learn are errors naming the line.
pub fn encode_records(
    records: &[Numbered],
    tok: Option<&Tokenizer>,
    vocab: usize,
    opts: &EncodeOptions,
    path: &str,
) -> Result<Vec<Example>, DataError> {
    records
        .iter()
        .map(|(line, record)| {
            let err = |msg: String| DataError {
                path: path.into(),
                line: Some(*line),
                msg,
            };
            let (ids, labels) = encode_one(record, tok, opts).map_err(err)?;
            check_vocab(&ids, vocab).map_err(err)?;
            if let Some(bad) = labels.iter().find(|&&l| l >= vocab as i64) {
                return Err(err(format!(
                    "label {bad} is outside the model's vocabulary of {vocab}"
                )));
            }
            if ids.len() > opts.max_len {
                return Err(err(format!(
                    "{} tokens, longer than the maximum sequence length {} (--max-seq-len)",
                    ids.len(),
                    opts.max_len
                )));
            }
            let example = Example {
                ids,
                labels,
                line: *line,
            };
            if example.counted() == 0 {
                return Err(err("no token carries a loss".into()));
            }
            Ok(example)
        })
        .collect()
}
