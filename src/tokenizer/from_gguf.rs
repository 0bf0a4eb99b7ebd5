//! A Hugging Face tokenizer.json built from GGUF metadata, as transformers' GGUF converter and
//! llama.cpp read it: `tokenizer.ggml.model` "gpt2" is byte-level BPE with `tokens` and
//! `merges`; control tokens (type 3) and user-defined ones (type 4) are added tokens that
//! match before pre-tokenization; `tokenizer.ggml.pre` names the pre-tokenizer.

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
    if model != "gpt2" {
        return Err(format!(
            "tokenizer model '{model}' is not supported (byte-level BPE, 'gpt2'); use the \
             model's tokenizer.json"
        ));
    }
    let tokens = strings(m, "tokenizer.ggml.tokens")?;
    let merges = strings(m, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match m.get("tokenizer.ggml.token_type") {
        Some(MetaValue::Array(items)) => items
            .iter()
            .map(|v| match v {
                MetaValue::Int(i) => *i,
                _ => 1,
            })
            .collect(),
        _ => vec![1; tokens.len()],
    };
    let pre = m
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("default");

    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (token, ty)) in tokens
        .iter()
        .zip(types.iter().chain(std::iter::repeat(&1)))
        .enumerate()
    {
        vocab.insert(token.to_string(), json!(id));
        // 3 = control, 4 = user defined (llama.cpp's llama_token_type).
        if *ty == 3 || *ty == 4 {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *ty == 3,
            }));
        }
    }
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
