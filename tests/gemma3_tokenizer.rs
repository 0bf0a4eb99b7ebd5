//! Gemma 3 270M's SentencePiece tokenizer, built from its Q4_K_M GGUF's metadata
//! (`tokenizer.ggml.model` "llama": tokens, scores, token types, no merges, no space prefix,
//! BOS first): the reference ids of golden/gemma3-270m (plain text, code, digits, punctuation,
//! accents, CJK, an emoji, new lines), and decoding back to the text.

mod common;

use common::{gemma3_path, golden_json};
use webqlora::model::gguf::read_metadata;
use webqlora::tokenizer::Tokenizer;

#[test]
fn gguf_sentencepiece_gives_the_reference_ids_and_decodes_back() {
    let path = gemma3_path();
    let metadata = read_metadata(&path).unwrap();
    let tok = Tokenizer::from_gguf(&metadata, &path.display().to_string()).unwrap();
    assert_eq!(tok.bos_id, Some(2));
    let reference = golden_json("gemma3-270m/reference.json");
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, want, "{text:?}");
        assert_eq!(tok.decode(&ids, true).unwrap(), text, "{ids:?}");
    }
}
