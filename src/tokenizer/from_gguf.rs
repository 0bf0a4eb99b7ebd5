//! A Hugging Face tokenizer.json built from GGUF metadata, as transformers' GGUF converter and
//! llama.cpp read it: `tokenizer.ggml.model` "gpt2" is byte-level BPE with `tokens` and
//! `merges`, and "llama" SentencePiece BPE with `scores` (`sentencepiece_json`); control
//! tokens (type 3) and user-defined ones (type 4) are added tokens that match before
//! pre-tokenization; `tokenizer.ggml.pre` names a byte-level BPE's pre-tokenizer.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::model::gguf::MetaValue;

/// The regex of Llama 3 ("llama-bpe") and, with single digits, Qwen2.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split_then_bytes(pattern: &str) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
        byte_level(false),
    ]})
}

/// llama.cpp's pre-tokenizer names (`tokenizer.ggml.pre`) as tokenizers' pre-tokenizers.
fn pre_tokenizer(pre: &str) -> Result<Value, String> {
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        // llama.cpp: "\p{N}" then the GPT-2 regex; SmolLM's tokenizer.json: Digits then ByteLevel.
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva" => {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]})
        }
        "llama-bpe" | "llama3" | "smaug-bpe" => split_then_bytes(LLAMA3_SPLIT),
        "qwen2" => split_then_bytes(QWEN2_SPLIT),
        other => {
            return Err(format!(
                "pre-tokenizer '{other}' (tokenizer.ggml.pre) is not supported; known: gpt2, \
                 smollm, starcoder, llama-bpe, qwen2"
            ))
        }
    })
}

fn strings<'a>(m: &'a BTreeMap<String, MetaValue>, key: &str) -> Result<Vec<&'a str>, String> {
    match m.get(key) {
        Some(MetaValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| format!("'{key}'[{i}] is not a string"))
            })
            .collect(),
        Some(_) => Err(format!("metadata '{key}' is not an array of strings")),
        None => Err(format!(
            "metadata '{key}' is missing: no tokenizer in this file"
        )),
    }
}

/// The tokenizer.json of a GGUF file's tokenizer.
pub fn tokenizer_json_from_gguf(m: &BTreeMap<String, MetaValue>) -> Result<Value, String> {
    let model = m
        .get("tokenizer.ggml.model")
        .and_then(MetaValue::as_str)
        .ok_or("metadata 'tokenizer.ggml.model' is missing: no tokenizer in this file")?;
    if model != "gpt2" && model != "llama" {
        return Err(format!(
            "tokenizer model '{model}' is not supported (byte-level BPE 'gpt2', SentencePiece \
             'llama'); use the model's tokenizer.json"
        ));
    }
    let tokens = strings(m, "tokenizer.ggml.tokens")?;
    // Which tokens are control and user-defined ones: of the wrong type or length, control
    // tokens would be split as text (`<start_of_turn>` as 6 tokens), so it is refused.
    let key = "tokenizer.ggml.token_type";
    let types: Vec<i64> = match m.get(key) {
        None => vec![1; tokens.len()],
        Some(MetaValue::Array(items)) => {
            let types = items
                .iter()
                .map(|v| match v {
                    MetaValue::Int(i) if (0..=6).contains(i) => Ok(*i),
                    other => Err(format!(
                        "metadata '{key}' holds {other:?}: a token type is an integer 0 to 6"
                    )),
                })
                .collect::<Result<Vec<i64>, String>>()?;
            if types.len() != tokens.len() {
                return Err(format!(
                    "metadata '{key}' has {} entries for {} tokens",
                    types.len(),
                    tokens.len()
                ));
            }
            types
        }
        Some(_) => return Err(format!("metadata '{key}' is not an array of integers")),
    };
    if model == "llama" {
        return sentencepiece_json(m, &tokens, &types);
    }
    let merges = strings(m, "tokenizer.ggml.merges")?;
    let pre = m
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("default");

    let (vocab, added) = vocab_and_added(&tokens, &types);
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre)?,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// Every token's id, and the tokens matched whole before the model runs: control tokens
/// (type 3, special) and user-defined ones (type 4; llama.cpp's `llama_token_type`).
fn vocab_and_added(tokens: &[&str], types: &[i64]) -> (Map<String, Value>, Vec<Value>) {
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, ty)) in tokens
        .iter()
        .zip(types.iter().chain(std::iter::repeat(&1)))
        .enumerate()
    {
        vocab.insert(token.to_string(), json!(id));
        if *ty == 3 || *ty == 4 {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *ty == 3,
            }));
        }
    }
    (vocab, added)
}

/// A SentencePiece BPE model (`tokenizer.ggml.model` "llama": Llama 2, Gemma) as transformers'
/// GGUF converter builds it: spaces become "▁" (after a "▁" prefix unless
/// `tokenizer.ggml.add_space_prefix` is false), no pre-tokenizer, BPE with byte fallback whose
/// merges, absent from the file, come from the scores: every split of a token into two tokens,
/// ranked by the merged token's score (SentencePiece merges the best-scoring pair first), ties
/// by the halves' scores, then by token order.
fn sentencepiece_json(
    m: &BTreeMap<String, MetaValue>,
    tokens: &[&str],
    types: &[i64],
) -> Result<Value, String> {
    let scores: Vec<f32> = match m.get("tokenizer.ggml.scores") {
        Some(MetaValue::Array(items)) if items.len() == tokens.len() => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| format!("'tokenizer.ggml.scores'[{i}] is not a number"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "metadata 'tokenizer.ggml.scores' must hold one number per token ({})",
                tokens.len()
            ))
        }
        None => return Err("metadata 'tokenizer.ggml.scores' is missing".into()),
    };
    let score_of: std::collections::HashMap<&str, f32> =
        tokens.iter().zip(&scores).map(|(t, s)| (*t, *s)).collect();
    let merges: Vec<Value> = match m.get("tokenizer.ggml.merges") {
        Some(_) => strings(m, "tokenizer.ggml.merges")?
            .iter()
            .map(|pair| {
                let (l, r) = pair.split_once(' ').unwrap_or((pair, ""));
                json!([l, r])
            })
            .collect(),
        None => {
            let mut all: Vec<(&str, &str, f32)> = Vec::new();
            for (token, &score) in tokens.iter().zip(&scores) {
                let mut local: Vec<(&str, &str, f32)> = token
                    .char_indices()
                    .skip(1)
                    .map(|(at, _)| token.split_at(at))
                    .filter(|(l, r)| score_of.contains_key(l) && score_of.contains_key(r))
                    .map(|(l, r)| (l, r, score))
                    .collect();
                local.sort_by(|a, b| {
                    let key = |x: &(&str, &str, f32)| (score_of[x.0], score_of[x.1]);
                    let (ka, kb) = (key(a), key(b));
                    kb.0.total_cmp(&ka.0).then(kb.1.total_cmp(&ka.1))
                });
                all.extend(local);
            }
            // Stable: equal scores keep the order above.
            all.sort_by(|a, b| b.2.total_cmp(&a.2));
            all.into_iter().map(|(l, r, _)| json!([l, r])).collect()
        }
    };
    let (vocab, added) = vocab_and_added(tokens, types);
    let unk = m
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(MetaValue::as_u64)
        .and_then(|i| tokens.get(i as usize));
    let prefix = !matches!(
        m.get("tokenizer.ggml.add_space_prefix"),
        Some(MetaValue::Bool(false))
    );
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if prefix {
        json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"}, replace]})
    } else {
        replace
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}
