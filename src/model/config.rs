//! The Hugging Face `config.json` of a Llama-family model (llama, mistral, qwen2, qwen3).

use serde_json::Value;

use super::ModelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    /// Llama with biases on q, k and v.
    Qwen2,
    /// Llama with q_norm / k_norm: RMSNorm over each head before RoPE, no biases.
    Qwen3,
}

/// `quantization_config` of a bitsandbytes 4-bit checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct BnbQuantization {
    pub double_quant: bool,
    /// Modules left unquantized (`llm_int8_skip_modules`).
    pub skip_modules: Vec<String>,
}

/// How RoPE's frequencies are scaled for contexts longer than the model was first trained on.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1+ (`rope_type` "llama3"): wavelengths longer than
    /// `original_max_position_embeddings / low_freq_factor` are divided by `factor`, shorter
    /// than `… / high_freq_factor` kept, smoothly interpolated between (transformers'
    /// `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// A divisor per frequency, as llama.cpp stores llama3's scaling in a GGUF
    /// (`rope_freqs.weight`).
    Divisors(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// RMSNorm over each query and key head before RoPE (`self_attn.q_norm` / `k_norm`).
    pub qk_norm: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub quantization: Option<BnbQuantization>,
}

struct Fields<'a> {
    json: &'a Value,
    path: &'a str,
}

impl Fields<'_> {
    fn err(&self, msg: String) -> ModelError {
        ModelError::Invalid {
            path: self.path.into(),
            msg,
        }
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("'{key}' is missing")))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ModelError> {
        match &self.json[key] {
            Value::Null => Ok(None),
            v => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(format!("'{key}' is {v}, not a count"))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match &self.json[key] {
            Value::Null => Ok(default),
            v => v
                .as_f64()
                .ok_or_else(|| self.err(format!("'{key}' is {v}, not a number"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match &self.json[key] {
            Value::Null => Ok(default),
            v => v
                .as_bool()
                .ok_or_else(|| self.err(format!("'{key}' is {v}, not true or false"))),
        }
    }

    fn ids(&self, key: &str) -> Result<Vec<u32>, ModelError> {
        let bad = || {
            self.err(format!(
                "'{key}' is {}, not a token id or a list of them",
                self.json[key]
            ))
        };
        match &self.json[key] {
            Value::Null => Ok(vec![]),
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_u64().map(|n| n as u32).ok_or_else(bad))
                .collect(),
            v => v.as_u64().map(|n| vec![n as u32]).ok_or_else(bad),
        }
    }
}

impl ModelConfig {
    /// Parse the text of a config.json; `path` names it in errors.
    pub fn from_json(text: &str, path: &str) -> Result<ModelConfig, ModelError> {
        let json: Value = serde_json::from_str(text).map_err(|e| ModelError::Invalid {
            path: path.into(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let f = Fields { json: &json, path };
        let model_type = json["model_type"].as_str().unwrap_or("");
        let architecture = match model_type {
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            "qwen3" => Architecture::Qwen3,
            other => {
                return Err(f.err(format!(
                    "model_type '{other}' is not supported (llama, mistral, qwen2, qwen3)"
                )))
            }
        };
        let hidden_size = f.usize("hidden_size")?;
        let num_heads = f.usize("num_attention_heads")?;
        let num_kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(f.err(format!(
                "'num_attention_heads' {num_heads} cannot be grouped over \
                 'num_key_value_heads' {num_kv_heads} (a multiple of it, neither 0)"
            )));
        }
        let head_dim = f.opt_usize("head_dim")?.unwrap_or(hidden_size / num_heads);

        // transformers 5 nests rope settings in rope_parameters; older configs use rope_theta.
        let rope = if json["rope_parameters"].is_object() {
            Fields {
                json: &json["rope_parameters"],
                path,
            }
        } else {
            Fields { json: &json, path }
        };
        let rope_theta = rope.f64_or("rope_theta", 10000.0)?;
        // The scaling: `rope_scaling` (transformers 4), else the rope_parameters themselves.
        let scaling = if json["rope_scaling"].is_object() {
            &json["rope_scaling"]
        } else {
            rope.json
        };
        let rope_type = scaling["rope_type"]
            .as_str()
            .or(scaling["type"].as_str())
            .unwrap_or("default");
        let rope_scaling = match rope_type {
            "default" => RopeScaling::None,
            "llama3" => {
                let key = |k: &str| -> Result<f64, ModelError> {
                    match scaling[k].as_f64() {
                        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
                        _ => Err(f.err(format!(
                            "rope scaling 'llama3': '{k}' is {}, not a number above 0",
                            scaling[k]
                        ))),
                    }
                };
                let (low, high) = (key("low_freq_factor")?, key("high_freq_factor")?);
                if high <= low {
                    return Err(f.err(format!(
                        "rope scaling 'llama3': high_freq_factor {high} must exceed \
                         low_freq_factor {low}"
                    )));
                }
                RopeScaling::Llama3 {
                    factor: key("factor")?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: key("original_max_position_embeddings")?,
                }
            }
            other => {
                return Err(f.err(format!(
                    "rope scaling '{other}' is not supported (default, llama3)"
                )))
            }
        };

        let quantization = match &json["quantization_config"] {
            Value::Null => None,
            q => {
                let method = q["quant_method"].as_str().unwrap_or("");
                let quant_type = q["bnb_4bit_quant_type"].as_str().unwrap_or("");
                if method != "bitsandbytes"
                    || !q["load_in_4bit"].as_bool().unwrap_or(false)
                    || quant_type != "nf4"
                {
                    return Err(f.err(format!(
                        "quantization '{method}' ({quant_type}) is not supported: only bitsandbytes 4-bit nf4"
                    )));
                }
                let skip = q["llm_int8_skip_modules"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                });
                Some(BnbQuantization {
                    double_quant: q["bnb_4bit_use_double_quant"].as_bool().unwrap_or(false),
                    skip_modules: skip.unwrap_or_default(),
                })
            }
        };

        let config = ModelConfig {
            architecture,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_layers: f.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            qkv_bias: architecture == Architecture::Qwen2 || f.bool_or("attention_bias", false)?,
            qk_norm: architecture == Architecture::Qwen3,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            bos_token_id: f.ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.ids("eos_token_id")?,
            quantization,
        };
        config
            .check()
            .map_err(|(key, msg)| f.err(format!("'{key}' {msg}")))?;
        Ok(config)
    }

    /// RoPE's inverse frequencies (head_dim / 2 of them), scaled as the model says.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let mut inv = crate::ops::rope::inv_freq(self.head_dim, self.rope_theta);
        match &self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Divisors(d) => {
                for (f, d) in inv.iter_mut().zip(d) {
                    *f /= *d as f64;
                }
            }
            &RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    *f = if wavelen < high_wavelen {
                        *f
                    } else if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * *f / factor + smooth * *f
                    };
                }
            }
        }
        inv
    }

    /// RoPE's (cos, sin) table for `positions` positions, [positions, head_dim / 2, 2].
    pub fn rope_table(&self, positions: usize) -> Vec<f32> {
        crate::ops::rope::cos_sin_table_of(positions, &self.rope_inv_freq())
    }

    /// Values no model can have (a zero size, a negative epsilon): the config.json key and
    /// what is wrong with it. Both parsers call this, so a bad file is named at load instead
    /// of panicking in a kernel builder or training on NaN.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let counts = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((key, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err((key, "is 0".into()));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err((
                "num_key_value_heads",
                format!(
                    "is {}: the {} attention heads must be a multiple of it",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err((
                "head_dim",
                format!(
                    "is {}: rotary embeddings need an even head size",
                    self.head_dim
                ),
            ));
        }
        if let RopeScaling::Divisors(d) = &self.rope_scaling {
            if d.len() != self.head_dim / 2 || d.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err((
                    "rope_scaling",
                    format!(
                        "has {} frequency divisors, not {} positive ones",
                        d.len(),
                        self.head_dim / 2
                    ),
                ));
            }
        }
        for (key, v) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err((key, format!("is {v}: it must be a number above 0")));
            }
        }
        // Sizes the GPU indexes with 32-bit integers.
        let embedding = self.vocab_size as u128 * self.hidden_size as u128;
        if embedding > u32::MAX as u128 {
            return Err((
                "vocab_size",
                format!(
                    "{} × hidden_size {} is more values than one tensor can index",
                    self.vocab_size, self.hidden_size
                ),
            ));
        }
        Ok(())
    }

    /// Read `<dir>/config.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(dir: &std::path::Path) -> Result<ModelConfig, ModelError> {
        let path = dir.join("config.json");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_json(&text, &shown)
    }
}

impl ModelConfig {
    /// A transformers config.json for this model as a plain (unquantized) checkpoint, e.g. a
    /// merged model or one that came from a GGUF file.
    pub fn to_hf_json(&self, torch_dtype: &str) -> Value {
        let (model_type, class) = match self.architecture {
            Architecture::Llama => ("llama", "LlamaForCausalLM"),
            Architecture::Mistral => ("mistral", "MistralForCausalLM"),
            Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            Architecture::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
        };
        let eos: Value = match &self.eos_token_ids[..] {
            [] => Value::Null,
            [one] => (*one).into(),
            many => many.to_vec().into(),
        };
        serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": match self.rope_scaling {
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                } => serde_json::json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position_embeddings,
                }),
                _ => Value::Null,
            },
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.qkv_bias && self.architecture != Architecture::Qwen2,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "hidden_act": "silu",
            "torch_dtype": torch_dtype,
        })
    }
}
