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

/// `export --format ollama` writes a chat template as Ollama's Go template only where it
/// renders what the model's own Jinja template does (with and without a system message; a
/// default system message becomes the Modelfile's SYSTEM): ChatML for Qwen2.5 (with its default
/// system message) and Qwen3, Gemma's for Gemma 3; Llama 3.2's writes dates into the system
/// header, which no fixed Go template reproduces, so Ollama is left to read it from the GGUF.
#[test]
fn ollama_templates_are_written_only_where_they_render_the_same() {
    use webqlora::lora::ollama::{verified_chat, ChatFormat};
    let cases = [
        (
            "qwen2_5",
            config("tiny-qwen3", 151_936, 151_643, &[151_645]),
        ),
        ("qwen3", config("tiny-qwen3", 151_936, 151_643, &[151_645])),
        (
            "llama3_2",
            config("tiny-llama", 128_256, 128_000, &[128_001, 128_008, 128_009]),
        ),
        ("gemma3", config("tiny-gemma3", 262_144, 2, &[1, 106])),
    ];
    for (family, config) in cases {
        let tok = hf_tokenizer(family, &config);
        let chat = verified_chat(
            tok.chat_template.as_deref().unwrap(),
            &|m| tok.apply_chat_template(m, true).ok(),
            tok.bos_text().as_deref(),
        );
        eprintln!("{family}: {chat:?}");
        let want = match family {
            "qwen2_5" | "qwen3" => Some(ChatFormat::ChatMl),
            "gemma3" => Some(ChatFormat::Gemma),
            _ => None,
        };
        assert_eq!(chat.as_ref().map(|c| c.format), want, "{family}");
        if family == "qwen2_5" {
            let system = chat.as_ref().unwrap().default_system.clone().unwrap();
            assert!(system.starts_with("You are Qwen"), "{system}");
        }
        // The Modelfile with it follows Ollama's syntax.
        let dir = common::temp_dir("ollama_modelfile");
        std::fs::write(dir.join("base.gguf"), b"").unwrap();
        std::fs::write(dir.join("adapter.gguf"), b"").unwrap();
        let base = dir.join("base.gguf").display().to_string();
        let text = webqlora::lora::ollama::modelfile(&base, "./adapter.gguf", chat.as_ref(), true);
        std::fs::write(dir.join("Modelfile"), &text).unwrap();
        let m = common::modelfile::check(&dir.join("Modelfile"));
        assert_eq!(m.template.is_some(), chat.is_some(), "{text}");
        if let Some(chat) = &chat {
            assert_eq!(m.template.as_deref(), Some(chat.format.template()));
            assert_eq!(m.system, chat.default_system);
            let stops: Vec<String> = chat
                .format
                .stops()
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect();
            let got: Vec<String> = m.parameters.iter().map(|p| p.1.clone()).collect();
            assert_eq!(got, stops);
        }
    }
}
