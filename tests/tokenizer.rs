//! Tokenizers against the golden SmolLM2 ids (`../shared/golden/smollm2/`): built from the
//! GGUF metadata, and the same tokenizer through a tokenizer.json folder; chat templates.

mod common;

use std::collections::BTreeMap;

use webqlora::model::gguf::{GgufFile, MetaValue};
use webqlora::tokenizer::{tokenizer_json_from_gguf, Message, Tokenizer};

fn smollm2() -> (GgufFile, Tokenizer) {
    let path = common::smollm2_path();
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file.metadata, &path.display().to_string()).unwrap();
    (file, tok)
}

fn reference_cases() -> Vec<(String, Vec<u32>)> {
    common::golden_json("smollm2/smollm2_reference.json")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[test]
fn gguf_tokenizer_gives_the_reference_ids_and_decodes_back() {
    let (_, tok) = smollm2();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos_id, tok.eos_ids.clone()), (Some(1), vec![2]));
    for (text, ids) in reference_cases() {
        assert_eq!(tok.encode(&text, true).unwrap(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn tokenizer_json_folder_gives_the_same_ids() {
    let (file, gguf_tok) = smollm2();
    let dir = common::temp_dir("tok");
    let json = tokenizer_json_from_gguf(&file.metadata).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({
            "chat_template": gguf_tok.chat_template,
            "eos_token": "<|im_end|>",
            "bos_token": "<|im_start|>",
        })
        .to_string(),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(&dir, file.config()).unwrap();
    for (text, ids) in reference_cases() {
        assert_eq!(tok.encode(&text, true).unwrap(), ids, "{text:?}");
    }
    assert_eq!(tok.eos_ids, vec![2]);
    assert!(tok.chat_template.is_some());
}

#[test]
fn chat_template_renders_like_transformers() {
    let (_, tok) = smollm2();
    let messages = [Message {
        role: "user".into(),
        content: "What is 2+2?".into(),
    }];
    // SmolLM2's template adds its default system prompt when the conversation has none.
    let text = tok.apply_chat_template(&messages, true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    // Its tail is the golden chat case, token for token.
    let (chat_text, chat_ids) = reference_cases()
        .into_iter()
        .find(|(t, _)| t.starts_with("<|im_start|>user"))
        .unwrap();
    assert!(text.ends_with(&chat_text));
    let ids = tok.encode(&text, true).unwrap();
    assert!(ids.ends_with(&chat_ids));
}

#[test]
fn bad_tokenizer_metadata_is_a_clear_error() {
    let mut m = BTreeMap::new();
    let err = Tokenizer::from_gguf(&m, "x.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("x.gguf") && err.contains("tokenizer.ggml.model"),
        "{err}"
    );

    m.insert("tokenizer.ggml.model".into(), MetaValue::Str("bert".into()));
    let err = Tokenizer::from_gguf(&m, "x.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'bert' is not supported"), "{err}");

    // SentencePiece needs a score per token.
    m.insert(
        "tokenizer.ggml.model".into(),
        MetaValue::Str("llama".into()),
    );
    m.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(vec![MetaValue::Str("a".into()), MetaValue::Str("b".into())]),
    );
    let err = Tokenizer::from_gguf(&m, "x.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'tokenizer.ggml.scores' is missing"), "{err}");
    m.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::Array(vec![MetaValue::Float(0.0)]),
    );
    let err = Tokenizer::from_gguf(&m, "x.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("one number per token (2)"), "{err}");

    m.insert("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into()));
    m.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(vec![MetaValue::Str("a".into())]),
    );
    m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(vec![]));
    m.insert(
        "tokenizer.ggml.pre".into(),
        MetaValue::Str("mystery".into()),
    );
    let err = Tokenizer::from_gguf(&m, "x.gguf")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("pre-tokenizer 'mystery'"), "{err}");

    let dir = common::temp_dir("notok");
    let config =
        webqlora::model::ModelConfig::load(&common::golden("tiny-llama/base-f32")).unwrap();
    let err = Tokenizer::from_dir(&dir, &config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}
