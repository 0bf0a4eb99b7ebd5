//! Chat records split into the prompt (no loss) and the reply (learned) exactly as
//! transformers' `apply_chat_template` and TRL split them, for the families' own chat
//! templates and tokenizers: Qwen3 (its empty `<think>` block in the reply), Qwen2.5 (its
//! default system prompt when a conversation has none), Llama 3.2 (BOS and
//! the dated system header written by the template), Gemma 3 (`<start_of_turn>` turns, the
//! system prompt folded into the first user turn, BOS written by the template). The expected
//! ids and labels come from transformers (tests/data/chat_templates/make_expected.py), the
//! tokenizers from `cargo xtask fetch-model --model tokenizers`. The generation prompt
//! (`encode_chat`, what `generate --chat` and the page use) is the masked part.

mod common;

use serde_json::Value;
use webqlora::data::{encode_records, parse_jsonl, EncodeOptions};
use webqlora::model::ModelConfig;
use webqlora::tokenizer::{Message, Tokenizer};

fn expected() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/chat_templates/expected.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A config with the released model's vocabulary size and special-token ids (what its
/// config.json says), on the tiny golden shapes.
fn config(golden: &str, vocab: usize, bos: u32, eos: &[u32]) -> ModelConfig {
    let path = common::golden(&format!("{golden}/base-f32/config.json"));
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["vocab_size"] = vocab.into();
    json["bos_token_id"] = bos.into();
    json["eos_token_id"] = eos.to_vec().into();
    ModelConfig::from_json(&json.to_string(), &path.display().to_string()).unwrap()
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Every expected case of `family`, encoded as a chat record by `tok`.
fn splits_like_transformers(tok: &Tokenizer, family: &str) {
    let cases = expected()["families"][family].as_array().unwrap().clone();
    assert!(cases.len() >= 3, "{family}");
    let jsonl: String = cases
        .iter()
        .map(|c| serde_json::json!({ "messages": c["messages"] }).to_string() + "\n")
        .collect();
    let records = parse_jsonl(&jsonl, "chat.jsonl").unwrap();
    let opts = EncodeOptions {
        train_on_inputs: false,
        max_len: 4096,
        mcq_by_letter: false,
    };
    let examples = encode_records(&records, Some(tok), tok.vocab_size(), &opts, "chat.jsonl")
        .unwrap_or_else(|e| panic!("{family}: {e}"));
    for (case, example) in cases.iter().zip(&examples) {
        let want_ids = ids_of(&case["ids"]);
        let ids: Vec<i64> = example.ids.iter().map(|&i| i as i64).collect();
        let shown = |ids: &[i64]| {
            let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
            tok.decode(&ids, false).unwrap()
        };
        assert_eq!(
            ids,
            want_ids,
            "{family}, line {}: ids\n got  {:?}\n want {:?}",
            example.line,
            shown(&ids),
            shown(&want_ids)
        );
        assert_eq!(
            example.labels,
            ids_of(&case["labels"]),
            "{family}, line {}: labels",
            example.line
        );
        // What `generate --chat` and the page feed the model: the prompt up to the reply.
        let messages: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        let prompt: Vec<i64> = tok
            .encode_chat(&messages[..messages.len() - 1], true)
            .unwrap()
            .iter()
            .map(|&i| i as i64)
            .collect();
        let masked = example.labels.iter().take_while(|&&l| l == -100).count();
        assert_eq!(
            prompt,
            want_ids[..masked],
            "{family}: the generation prompt"
        );
    }
}

fn hf_tokenizer(family: &str, config: &ModelConfig) -> Tokenizer {
    let dir = common::tokenizers_dir().join(family);
    Tokenizer::from_dir(&dir, config).unwrap()
}

#[test]
fn qwen3_chat_splits_like_transformers() {
    let config = config("tiny-qwen3", 151_936, 151_643, &[151_645]);
    splits_like_transformers(&hf_tokenizer("qwen3", &config), "qwen3");
}

#[test]
fn qwen2_5_chat_splits_like_transformers() {
    let config = config("tiny-qwen3", 151_936, 151_643, &[151_645]);
    splits_like_transformers(&hf_tokenizer("qwen2_5", &config), "qwen2_5");
}

#[test]
fn llama3_2_chat_splits_like_transformers() {
    let config = config("tiny-llama", 128_256, 128_000, &[128_001, 128_008, 128_009]);
    splits_like_transformers(&hf_tokenizer("llama3_2", &config), "llama3_2");
}

#[test]
fn gemma3_chat_splits_like_transformers() {
    let config = config("tiny-gemma3", 262_144, 2, &[1, 106]);
    splits_like_transformers(&hf_tokenizer("gemma3", &config), "gemma3");
}
