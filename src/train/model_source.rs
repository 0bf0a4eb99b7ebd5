//! Opening a model by path: a GGUF file or a Hugging Face folder (safetensors, maybe
//! bitsandbytes 4-bit), with its configuration, weights and tokenizer.

use std::path::{Path, PathBuf};

use crate::model::gguf::GgufFile;
use crate::model::safetensors_files::SafetensorsFiles;
use crate::model::{ModelConfig, ModelError, WeightSource};
use crate::tokenizer::{Tokenizer, TokenizerError};

pub struct ModelSource {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub weights: Box<dyn WeightSource>,
    /// Absent for a folder without tokenizer.json: pre-tokenized data still works.
    pub tokenizer: Option<Tokenizer>,
    /// Why there is no tokenizer, for the error when one is needed.
    pub tokenizer_error: Option<TokenizerError>,
}

/// The default model: SmolLM2-135M-Instruct as `cargo xtask fetch-model` caches it.
pub fn default_model_path() -> PathBuf {
    cache_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The model cache, as xtask's: `$WEBQLORA_CACHE`, else `$XDG_CACHE_HOME/webqlora`, else
/// `$HOME/.cache/webqlora`; of the last two only absolute values count (a relative
/// `XDG_CACHE_HOME` is ignored, as the XDG spec says), and with none of them the system's temporary folder,
/// never a `.cache` relative to wherever the command runs.
pub fn cache_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = std::env::var_os("WEBQLORA_CACHE") {
        return dir.into();
    }
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("webqlora")
}

impl ModelSource {
    pub fn open(path: &Path) -> Result<ModelSource, ModelError> {
        if !path.exists() {
            let hint = if path == default_model_path() {
                " (`cargo xtask fetch-model` downloads the default model)"
            } else {
                " (nor a model name: `webqlora models` lists the catalog's; \
                 hf:ORG/REPO/FILE.gguf or hf:ORG/REPO downloads from Hugging Face)"
            };
            return Err(ModelError::Invalid {
                path: path.display().to_string(),
                msg: format!("no such model file or folder{hint}"),
            });
        }
        if path.is_file() {
            let file = GgufFile::open(path)?;
            let config = file.config().clone();
            let (tokenizer, tokenizer_error) =
                match Tokenizer::from_gguf(&file.metadata, &path.display().to_string()) {
                    Ok(t) => (Some(t), None),
                    Err(e) => (None, Some(e)),
                };
            return Ok(ModelSource {
                path: path.to_path_buf(),
                config,
                weights: Box::new(file),
                tokenizer,
                tokenizer_error,
            });
        }
        let config = ModelConfig::load(path)?;
        let weights = SafetensorsFiles::open_dir(path)?;
        let (tokenizer, tokenizer_error) = match Tokenizer::from_dir(path, &config) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e)),
        };
        Ok(ModelSource {
            path: path.to_path_buf(),
            config,
            weights: Box::new(weights),
            tokenizer,
            tokenizer_error,
        })
    }

    /// The tokenizer, or the error saying why there is none.
    pub fn tokenizer(&self) -> Result<&Tokenizer, TokenizerError> {
        self.tokenizer.as_ref().ok_or_else(|| {
            self.tokenizer_error.clone().unwrap_or(TokenizerError {
                source_name: self.path.display().to_string(),
                msg: "no tokenizer".into(),
            })
        })
    }

    /// What its weights are, for the default base (`BaseFormat::default_for`).
    pub fn kind(&self) -> crate::model::transformer::ModelKind {
        crate::model::transformer::ModelKind::of(&self.config, self.weights.as_ref())
    }

    /// The id batches are padded with: the EOS (masked anyway), else 0.
    pub fn pad_id(&self) -> u32 {
        super::trainer::pad_id(self.tokenizer.as_ref(), &self.config)
    }
}
