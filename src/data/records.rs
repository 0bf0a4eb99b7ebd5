//! JSONL datasets, one JSON object a line, in any of these shapes (the first that fits):
//! - `{"messages": [{"role": ..., "content": ...}, ...]}` — a chat, through the chat template
//! - `{"prompt": ..., "completion": ...}`
//! - `{"question": ..., "choices": [...], "answer": 2 | "C"}` — multiple choice
//! - `{"text": ...}`
//! - `{"input_ids": [...], "labels": [...]}` — already tokenized (labels optional, -100 = none)
//!
//! Blank lines are skipped; anything else that does not parse is an error naming the line.

use serde_json::Value;

use super::{DataError, Mcq};
use crate::tokenizer::Message;

#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Text(String),
    PromptCompletion {
        prompt: String,
        completion: String,
    },
    Chat(Vec<Message>),
    Mcq(Mcq),
    Tokens {
        input_ids: Vec<u32>,
        labels: Option<Vec<i64>>,
    },
}

/// A record and the line it came from (1-based).
pub type Numbered = (usize, Record);

fn string(v: &Value, key: &str) -> Result<String, String> {
    v[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("'{key}' must be a string, found {}", v[key]))
}

fn ints(v: &Value, key: &str) -> Result<Vec<i64>, String> {
    v[key]
        .as_array()
        .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
        .ok_or_else(|| format!("'{key}' must be a list of integers"))
}

fn record(v: &Value) -> Result<Record, String> {
    if !v.is_object() {
        return Err("a line must be a JSON object".into());
    }
    if let Some(messages) = v.get("messages") {
        let items = messages
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or("'messages' must be a non-empty list")?;
        let messages = items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Ok(Message {
                    role: string(m, "role").map_err(|e| format!("messages[{i}]: {e}"))?,
                    content: string(m, "content").map_err(|e| format!("messages[{i}]: {e}"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if messages.last().map(|m| m.role.as_str()) != Some("assistant") {
            return Err(
                "the last message must be the assistant's (the part that is learned)".into(),
            );
        }
        return Ok(Record::Chat(messages));
    }
    if v.get("prompt").is_some() || v.get("completion").is_some() {
        return Ok(Record::PromptCompletion {
            prompt: string(v, "prompt")?,
            completion: string(v, "completion")?,
        });
    }
    if v.get("question").is_some() {
        let choices: Vec<String> = v["choices"]
            .as_array()
            .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect())
            .ok_or("'choices' must be a list of strings")?;
        if !(2..=10).contains(&choices.len()) {
            return Err(format!("{} choices: 2 to 10 are supported", choices.len()));
        }
        let answer = Mcq::parse_answer(&v["answer"], choices.len())?;
        return Ok(Record::Mcq(Mcq {
            question: string(v, "question")?,
            choices,
            answer,
        }));
    }
    if v.get("text").is_some() {
        return Ok(Record::Text(string(v, "text")?));
    }
    if v.get("input_ids").is_some() {
        let ids = ints(v, "input_ids")?;
        if ids.is_empty() {
            return Err("'input_ids' is empty".into());
        }
        let input_ids = ids
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| format!("token id {i} is negative")))
            .collect::<Result<Vec<u32>, String>>()?;
        let labels = match v.get("labels") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let labels = ints(v, "labels")?;
                if labels.len() != input_ids.len() {
                    return Err(format!(
                        "{} labels for {} input_ids",
                        labels.len(),
                        input_ids.len()
                    ));
                }
                if let Some(bad) = labels.iter().find(|&&l| l < 0 && l != -100) {
                    return Err(format!(
                        "label {bad} is negative: a label is a token id, or -100 for none"
                    ));
                }
                Some(labels)
            }
        };
        return Ok(Record::Tokens { input_ids, labels });
    }
    Err(
        "no known fields: expected 'text', 'prompt'/'completion', 'messages', \
         'question'/'choices'/'answer' or 'input_ids'"
            .into(),
    )
}

/// The longest JSONL line read: 8 MiB of text is some two million tokens, far past any
/// context trained here, while parsing and tokenizing a line costs memory many times its size
/// (a 50 MB line took 5.6 GB). A longer line is refused by its size before it is parsed.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Parse a JSONL text; `path` names it in errors. An empty dataset is an error.
pub fn parse_jsonl(text: &str, path: &str) -> Result<Vec<Numbered>, DataError> {
    // Editors on Windows start UTF-8 files with a byte-order mark; it is not JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| DataError {
            path: path.into(),
            line: Some(i + 1),
            msg,
        };
        if line.len() > MAX_LINE_BYTES {
            return Err(err(format!(
                "the line is {:.1} MiB, past the {} MiB a record may take",
                line.len() as f64 / (1 << 20) as f64,
                MAX_LINE_BYTES >> 20
            )));
        }
        let v: Value = serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        out.push((i + 1, record(&v).map_err(err)?));
    }
    if out.is_empty() {
        return Err(DataError {
            path: path.into(),
            line: None,
            msg: "the dataset is empty".into(),
        });
    }
    Ok(out)
}

/// Read and parse a JSONL file.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_jsonl(path: &std::path::Path) -> Result<Vec<Numbered>, DataError> {
    let shown = path.display().to_string();
    // A device or a pipe (/dev/zero, a FIFO) would be read without end.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(DataError {
                path: shown,
                line: None,
                msg: "not a regular file (a JSONL dataset is a file, not a folder, device or \
                      pipe)"
                    .into(),
            })
        }
        _ => {}
    }
    let bytes = std::fs::read(path).map_err(|e| DataError {
        path: shown.clone(),
        line: None,
        msg: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        let column = at
            - bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)
            + 1;
        DataError {
            path: shown.clone(),
            line: Some(line),
            msg: format!("not UTF-8 text (byte {column} of the line)"),
        }
    })?;
    parse_jsonl(&text, &shown)
}
