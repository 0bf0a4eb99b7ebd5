//! Tokenizers: built from a GGUF file's metadata or read from a Hugging Face tokenizer.json,
//! both run by the `tokenizers` crate; chat templates rendered with minijinja.

pub(crate) mod chat;
mod from_gguf;

use std::collections::BTreeMap;

pub use chat::Message;
pub use from_gguf::tokenizer_json_from_gguf;

use crate::model::gguf::MetaValue;

#[derive(Clone, Debug, thiserror::Error)]
#[error("{source_name}: {msg}")]
pub struct TokenizerError {
    /// The file (or metadata) the tokenizer came from.
    pub source_name: String,
    pub msg: String,
}

/// A tokenizer with what training and generation need beside it: the special ids, whether a
/// BOS starts every text, and the model's chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source_name: String,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    /// Prepend `bos_id` to encoded texts (GGUF's `tokenizer.ggml.add_bos_token`); a
    /// tokenizer.json does this through its own post-processor instead.
    add_bos: bool,
    pub chat_template: Option<String>,
}

impl Tokenizer {
    fn err(&self, msg: String) -> TokenizerError {
        TokenizerError {
            source_name: self.source_name.clone(),
            msg,
        }
    }

    /// The tokenizer a GGUF file describes (`tokenizer.ggml.*` metadata).
    pub fn from_gguf(
        metadata: &BTreeMap<String, MetaValue>,
        source_name: &str,
    ) -> Result<Tokenizer, TokenizerError> {
        let err = |msg: String| TokenizerError {
            source_name: source_name.into(),
            msg,
        };
        let json = tokenizer_json_from_gguf(metadata).map_err(err)?;
        let inner: tokenizers::Tokenizer = json
            .to_string()
            .parse()
            .map_err(|e| err(format!("tokenizer metadata not usable: {e}")))?;
        let id = |key: &str| {
            metadata
                .get(key)
                .and_then(MetaValue::as_u64)
                .map(|v| v as u32)
        };
        let flag = |key: &str| matches!(metadata.get(key), Some(MetaValue::Bool(true)));
        let mut eos_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            if !eos_ids.contains(&eot) {
                eos_ids.push(eot);
            }
        }
        Ok(Tokenizer {
            inner,
            source_name: source_name.into(),
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_ids,
            add_bos: flag("tokenizer.ggml.add_bos_token"),
            chat_template: metadata
                .get("tokenizer.chat_template")
                .and_then(MetaValue::as_str)
                .map(str::to_string),
        })
    }

    /// A Hugging Face tokenizer.json, with the chat template and special tokens of the
    /// tokenizer_config.json beside it (if any) and the ids of config.json.
    pub fn from_json(
        tokenizer_json: &str,
        tokenizer_config: Option<&str>,
        config: &crate::model::ModelConfig,
        source_name: &str,
    ) -> Result<Tokenizer, TokenizerError> {
        let err = |msg: String| TokenizerError {
            source_name: source_name.into(),
            msg,
        };
        let inner: tokenizers::Tokenizer = tokenizer_json
            .parse()
            .map_err(|e| err(format!("not a usable tokenizer.json: {e}")))?;
        let mut chat_template = None;
        let mut eos_ids = config.eos_token_ids.clone();
        let mut bos_id = config.bos_token_id;
        if let Some(text) = tokenizer_config {
            let j: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| err(format!("tokenizer_config.json is not valid JSON: {e}")))?;
            chat_template = match &j["chat_template"] {
                serde_json::Value::String(s) => Some(s.clone()),
                // A list of named templates: the default one.
                serde_json::Value::Array(items) => items
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str().map(str::to_string)),
                _ => None,
            };
            let token_id = |key: &str| {
                let content = match &j[key] {
                    serde_json::Value::String(s) => Some(s.as_str()),
                    v => v["content"].as_str(),
                };
                content.and_then(|c| inner.token_to_id(c))
            };
            if let Some(eos) = token_id("eos_token") {
                if !eos_ids.contains(&eos) {
                    eos_ids.push(eos);
                }
            }
            bos_id = bos_id.or(token_id("bos_token"));
        }
        Ok(Tokenizer {
            inner,
            source_name: source_name.into(),
            bos_id,
            eos_ids,
            add_bos: false,
            chat_template,
        })
    }

    /// A tokenizer.json and tokenizer_config.json from a model folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(
        dir: &std::path::Path,
        config: &crate::model::ModelConfig,
    ) -> Result<Tokenizer, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| TokenizerError {
            source_name: shown.clone(),
            msg: format!("cannot read the tokenizer ({e}); a model folder needs tokenizer.json"),
        })?;
        let tc = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok();
        Self::from_json(&text, tc.as_deref(), config, &shown)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`. Special-token texts (e.g. `<|im_start|>`) become their ids; with
    /// `add_special`, the BOS (or the tokenizer.json's post-processing) is added.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| self.err(format!("cannot encode {text:?}: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special && self.add_bos {
            if let Some(bos) = self.bos_id {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`; special tokens kept unless `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| self.err(format!("cannot decode {ids:?}: {e}")))
    }

    /// Tokens that end a generated reply: the EOS ids and, for chat models whose EOS is another
    /// token, their end-of-turn token.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut stop = self.eos_ids.clone();
        for end in ["<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = self.inner.token_to_id(end) {
                if !stop.contains(&id) {
                    stop.push(id);
                }
            }
        }
        stop
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The ids of `messages` through the chat template (with `add_generation_prompt`, ending
    /// where the assistant's reply starts), as transformers' `apply_chat_template(tokenize=True)`
    /// gives them: the template writes the special tokens it wants (Gemma's and Llama's write
    /// BOS), so none is added.
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.encode(
            &self.apply_chat_template(messages, add_generation_prompt)?,
            false,
        )
    }

    /// The BOS token's text, as a chat template's `bos_token` writes it.
    pub fn bos_text(&self) -> Option<String> {
        self.bos_id.and_then(|i| self.inner.id_to_token(i))
    }

    /// The chat template applied to `messages`; with `add_generation_prompt`, ending where
    /// the assistant's reply starts.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| self.err("this model has no chat template".into()))?;
        let text_of = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        chat::render(
            template,
            messages,
            add_generation_prompt,
            text_of(self.bos_id).as_deref(),
            text_of(self.eos_ids.first().copied()).as_deref(),
        )
        .map_err(|e| self.err(format!("chat template: {e}")))
    }
}
