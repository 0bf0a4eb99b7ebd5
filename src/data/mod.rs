//! Training and evaluation data: JSONL records in the formats practitioners use (TRL /
//! mlx-lm style), tokenized into examples with per-token labels, and padded batches.

pub mod batch;
pub mod encode;
pub mod mcq;
pub mod pack;
pub mod records;

pub use batch::Batch;
pub use encode::{check_vocab, encode_records, EncodeOptions, Example};
pub use mcq::Mcq;
pub use records::{parse_jsonl, Record};

/// A bad dataset: the file, the line (1-based) when one is to blame, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct DataError {
    pub path: String,
    pub line: Option<usize>,
    pub msg: String,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path, line, self.msg),
            None => write!(f, "{}: {}", self.path, self.msg),
        }
    }
}

/// Labels of tokens that carry no loss (PyTorch's ignore_index).
pub const NO_LOSS: i64 = -100;
