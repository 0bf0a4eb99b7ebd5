//! The Hugging Face `config.json` of a model of one of the families in `family/` (llama,
//! mistral, qwen2, qwen3, gemma3_text, smollm3, phi3).

use serde_json::Value;

use super::ModelError;
pub use crate::ops::rope::RopeScaling;
use crate::ops::swiglu::Activation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    /// Llama with biases on q, k and v.
    Qwen2,
    /// Llama with q_norm / k_norm: RMSNorm over each head before RoPE, no biases.
    Qwen3,
    /// Gemma 3 (text): q/k norms, x·(1 + w) norms, four a layer, GELU-tanh, scaled
    /// embeddings, sliding-window layers with their own RoPE base.
    Gemma3,
    /// SmolLM3: Llama with no rotary embedding on some layers (every fourth: `no_rope_layers`).
    SmolLm3,
    /// Phi-3, Phi-3.5 and Phi-4-mini: Llama with fused q|k|v and gate|up projections.
    Phi3,
}

/// How a layer attends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    Full,
    /// Only the last `sliding_window` positions, RoPE from `rope_local_theta` when set.
    Sliding,
}

/// `quantization_config` of a bitsandbytes 4-bit checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct BnbQuantization {
    pub double_quant: bool,
    /// Modules left unquantized (`llm_int8_skip_modules`).
    pub skip_modules: Vec<String>,
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
    /// The channels of each head RoPE rotates: head_dim, or its `partial_rotary_factor`
    /// (Phi-4-mini: 96 of 128); the rest pass unrotated.
    pub rotary_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// RMSNorm over each query and key head before RoPE (`self_attn.q_norm` / `k_norm`).
    pub qk_norm: bool,
    pub max_position_embeddings: usize,
    /// Scores are scaled by 1/√query_pre_attn_scalar instead of 1/√head_dim (Gemma).
    pub query_pre_attn_scalar: Option<f64>,
    /// Each layer's type (empty: all full attention).
    pub layer_types: Vec<LayerType>,
    /// How far sliding layers see.
    pub sliding_window: Option<usize>,
    /// Sliding layers' RoPE base, when it is not `rope_theta` (Gemma 3's 10,000); unscaled.
    pub rope_local_theta: Option<f64>,
    /// The layers that apply no rotary embedding to q and k (SmolLM3's every fourth, its
    /// `no_rope_layers` zeros); empty for every other family.
    pub no_rope_layers: Vec<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub quantization: Option<BnbQuantization>,
    /// The ggml block type of each quantized linear weight of a GGUF file, by Hugging Face
    /// name (what `BaseFormat::Gguf` keeps on the GPU); empty for other sources.
    pub gguf_types: std::collections::BTreeMap<String, crate::quant::ggml::GgmlType>,
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

    /// RoPE's settings: (base, the sliding layers' own base, the scaling, the rotary width of
    /// a head of `head_dim`). transformers 5 nests them in rope_parameters, per layer type
    /// where layer types differ (Gemma 3: sliding_attention, full_attention); older configs
    /// use rope_theta, and Gemma's own rope_local_base_freq for sliding layers.
    fn rope(&self, head_dim: usize) -> Result<(f64, Option<f64>, RopeScaling, usize), ModelError> {
        // transformers 5 nests rope settings in rope_parameters, per layer type where layer
        // types differ (Gemma 3: sliding_attention, full_attention); older configs use
        // rope_theta, and Gemma's own rope_local_base_freq for sliding layers.
        let (json, path, f) = (self.json, self.path, self);
        let params = &json["rope_parameters"];
        let per_type = params["full_attention"].is_object();
        let rope = if per_type {
            Fields {
                json: &params["full_attention"],
                path,
            }
        } else if params.is_object() {
            Fields { json: params, path }
        } else {
            Fields { json, path }
        };
        let rope_theta = rope.f64_or("rope_theta", 10000.0)?;
        // Phi-4-mini rotates only the first part of each head (transformers: int(head_dim ×
        // factor) channels), in rope_parameters or at the top.
        let mut rotary_dim = head_dim;
        for fields in [&rope, f] {
            if fields.json["partial_rotary_factor"].is_null() {
                continue;
            }
            let factor = fields.f64_or("partial_rotary_factor", 1.0)?;
            let dims = (head_dim as f64 * factor) as usize;
            if !(factor > 0.0 && factor <= 1.0) || dims < 2 || !dims.is_multiple_of(2) {
                return Err(f.err(format!(
                    "'partial_rotary_factor' is {factor}: it must rotate an even number of the \
                     {head_dim} channels of a head, at least 2 (a factor in (0, 1])"
                )));
            }
            rotary_dim = dims;
        }
        let rope_local_theta = if per_type && params["sliding_attention"].is_object() {
            let local = Fields {
                json: &params["sliding_attention"],
                path,
            };
            let kind = local.json["rope_type"].as_str().unwrap_or("default");
            if kind != "default" {
                return Err(f.err(format!(
                    "rope_parameters.sliding_attention: rope_type '{kind}' is not supported \
                     (default)"
                )));
            }
            Some(local.f64_or("rope_theta", rope_theta)?)
        } else {
            match &json["rope_local_base_freq"] {
                Value::Null => None,
                _ => Some(f.f64_or("rope_local_base_freq", rope_theta)?),
            }
        };
        // The scaling: `rope_scaling` (transformers 4), else the rope_parameters themselves.
        let scaling = if json["rope_scaling"].is_object() {
            &json["rope_scaling"]
        } else {
            rope.json
        };
        let rope_scaling = self.rope_scaling(scaling, rotary_dim)?;
        Ok((rope_theta, rope_local_theta, rope_scaling, rotary_dim))
    }

    /// The RoPE scaling `scaling` describes (`rope_scaling`, or the rope_parameters), for
    /// heads that rotate `rotary_dim` channels.
    fn rope_scaling(&self, scaling: &Value, rotary_dim: usize) -> Result<RopeScaling, ModelError> {
        let f = self;
        let rope_type = scaling["rope_type"]
            .as_str()
            .or(scaling["type"].as_str())
            .unwrap_or("default");
        Ok(match rope_type {
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
            "linear" => match scaling["factor"].as_f64() {
                Some(factor) if factor.is_finite() && factor > 0.0 => {
                    RopeScaling::Linear { factor }
                }
                _ => {
                    return Err(f.err(format!(
                        "rope scaling 'linear': 'factor' is {}, not a number above 0",
                        scaling["factor"]
                    )))
                }
            },
            "longrope" => {
                let factors = |k: &str| -> Result<Vec<f64>, ModelError> {
                    let values: Option<Vec<f64>> = scaling[k].as_array().and_then(|a| {
                        a.iter()
                            .map(|v| v.as_f64().filter(|v| v.is_finite() && *v > 0.0))
                            .collect()
                    });
                    match values {
                        Some(v) if v.len() == rotary_dim / 2 => Ok(v),
                        _ => Err(f.err(format!(
                            "rope scaling 'longrope': '{k}' is not {} numbers above 0 (one a \
                             frequency of the {rotary_dim} rotated channels of a head)",
                            rotary_dim / 2
                        ))),
                    }
                };
                // transformers: the original length from the scaling or the config; the
                // factor max_position / original; attention scaled by √(1 + ln f / ln orig).
                let original = match scaling["original_max_position_embeddings"].as_u64() {
                    Some(n) => Some(n as usize),
                    None => f.opt_usize("original_max_position_embeddings")?,
                };
                let max = f.opt_usize("max_position_embeddings")?.unwrap_or(2048);
                let (original, factor) = match original {
                    Some(o) if o > 0 => (o, max as f64 / o as f64),
                    Some(_) => return Err(f.err("'original_max_position_embeddings' is 0".into())),
                    None => (max, scaling["factor"].as_f64().unwrap_or(1.0)),
                };
                let attention_factor = match scaling["attention_factor"].as_f64() {
                    Some(a) if a.is_finite() && a > 0.0 => a,
                    Some(a) => {
                        return Err(f.err(format!(
                            "rope scaling 'longrope': 'attention_factor' is {a}, not above 0"
                        )))
                    }
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                RopeScaling::LongRope {
                    short: factors("short_factor")?,
                    long: factors("long_factor")?,
                    original_max_position_embeddings: original,
                    attention_factor,
                }
            }
            other => {
                return Err(f.err(format!(
                    "rope scaling '{other}' is not supported (default, linear, llama3, longrope)"
                )))
            }
        })
    }

    /// `quantization_config`: a bitsandbytes 4-bit NF4 checkpoint, or none.
    fn quantization(&self) -> Result<Option<BnbQuantization>, ModelError> {
        Ok(match &self.json["quantization_config"] {
            Value::Null => None,
            q => {
                let method = q["quant_method"].as_str().unwrap_or("");
                let quant_type = q["bnb_4bit_quant_type"].as_str().unwrap_or("");
                if method != "bitsandbytes"
                    || !q["load_in_4bit"].as_bool().unwrap_or(false)
                    || quant_type != "nf4"
                {
                    return Err(self.err(format!(
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
        })
    }

    /// The activation a config names is the one the family's kernels compute.
    fn check_activation(&self, activation: Activation) -> Result<(), ModelError> {
        let act_key = ["hidden_activation", "hidden_act"]
            .into_iter()
            .find(|k| self.json[*k].is_string());
        if let Some(key) = act_key {
            let act = self.json[key].as_str().unwrap_or("");
            let ok = match activation {
                Activation::Silu => act == "silu",
                Activation::GeluTanh => {
                    matches!(act, "gelu_pytorch_tanh" | "gelu_tanh")
                }
            };
            if !ok {
                return Err(self.err(format!(
                    "'{key}' is '{act}', not the {:?} this family's kernels compute",
                    activation
                )));
            }
        }
        Ok(())
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
        let Some(family) = super::family::by_model_type(model_type) else {
            let hint = if json["text_config"].is_object() {
                " (a multimodal checkpoint: its text model alone, model_type 'gemma3_text', \
                 is what trains here)"
            } else {
                ""
            };
            return Err(f.err(format!(
                "model_type '{model_type}' is not supported ({}){hint}",
                super::family::model_types()
            )));
        };
        let architecture = family.architecture;
        // Options of other families that change the arithmetic: refuse rather than ignore.
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if !json[key].is_null() {
                return Err(f.err(format!(
                    "'{key}' is {}: logit soft-capping is not supported",
                    json[key]
                )));
            }
        }
        f.check_activation(family.activation)?;
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

        let (rope_theta, rope_local_theta, rope_scaling, rotary_dim) = f.rope(head_dim)?;

        // Layer types: transformers 5 lists them; older Gemma 3 configs give the pattern
        // (every sliding_window_pattern-th layer full).
        let num_layers = f.usize("num_hidden_layers")?;
        let sliding_window = f.opt_usize("sliding_window")?;
        let layer_types = match &json["layer_types"] {
            Value::Array(items) => items
                .iter()
                .map(|v| match v.as_str() {
                    Some("full_attention") => Ok(LayerType::Full),
                    Some("sliding_attention") => Ok(LayerType::Sliding),
                    _ => Err(f.err(format!(
                        "'layer_types' holds {v}: only full_attention and sliding_attention \
                         are supported"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        let quantization = f.quantization()?;

        let mut config = ModelConfig {
            architecture,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rotary_dim,
            rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            qkv_bias: family.qkv_bias || f.bool_or("attention_bias", false)?,
            qk_norm: family.qk_norm,
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            query_pre_attn_scalar: match &json["query_pre_attn_scalar"] {
                Value::Null => None,
                _ => Some(f.f64_or("query_pre_attn_scalar", 0.0)?),
            },
            layer_types,
            sliding_window,
            rope_local_theta,
            no_rope_layers: Vec::new(),
            bos_token_id: f.ids("bos_token_id")?.first().copied(),
            eos_token_ids: f.ids("eos_token_id")?,
            quantization,
            gguf_types: Default::default(),
        };
        (family.hooks.read_config)(&json, &mut config).map_err(|msg| f.err(msg))?;
        // Families without sliding layers of their own (Mistral's, Qwen2's option) attend
        // fully, as before: windows are read where layer types name them. All full, as
        // transformers 5 writes for every model, is the same as none.
        if config.layer_types.iter().all(|t| *t == LayerType::Full) {
            config.layer_types.clear();
        }
        config
            .check()
            .map_err(|(key, msg)| f.err(format!("'{key}' {msg}")))?;
        Ok(config)
    }

    /// This model's family (what its block does differently).
    pub fn family(&self) -> &'static super::family::Family {
        self.architecture.family()
    }

    /// The output rows of the linear at `path` within a layer (`self_attn.q_proj`, …, one of
    /// `family::LINEAR_PATHS`, or a fused module: the sum of its parts).
    pub fn linear_rows(&self, path: &str) -> usize {
        let (q, kv) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        match path.rsplit('.').next().unwrap_or(path) {
            "q_proj" => q,
            "k_proj" | "v_proj" => kv,
            "o_proj" | "down_proj" => self.hidden_size,
            "gate_proj" | "up_proj" => self.intermediate_size,
            _ => match self.family().fused.iter().find(|f| f.module == path) {
                Some(f) => f.parts.iter().map(|p| self.linear_rows(p)).sum(),
                None => 0,
            },
        }
    }

    /// (first row, rows of the whole) of `part` within the fused module `fused`.
    pub fn fused_rows(&self, fused: &super::family::FusedLinear, part: &str) -> (usize, usize) {
        let at = fused.parts.iter().position(|p| *p == part).unwrap_or(0);
        let first = fused.parts[..at].iter().map(|p| self.linear_rows(p)).sum();
        (first, self.linear_rows(fused.module))
    }

    /// The fused weight in the files that holds the weight `name` of the graph
    /// (`model.layers.0.self_attn.q_proj.weight` → `….qkv_proj.weight` for Phi-3), if any.
    pub fn fused_weight(&self, name: &str) -> Option<String> {
        self.fused_part(name).map(|f| f.0)
    }

    /// (the fused weight's name, the part's module path in the layer, the fused module) of
    /// the graph's weight `name`, if a fused weight holds it.
    pub fn fused_part<'n>(
        &self,
        name: &'n str,
    ) -> Option<(String, &'n str, &'static super::family::FusedLinear)> {
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, module) = rest.split_once('.')?;
        let part = module.strip_suffix(".weight")?;
        let fused = self.family().fused_holding(part)?;
        let whole = format!("model.layers.{layer}.{}.weight", fused.module);
        Some((whole, part, fused))
    }

    /// Whether layer `i` rotates q and k (all but SmolLM3's `no_rope_layers`).
    pub fn layer_rope(&self, i: usize) -> bool {
        !self.no_rope_layers.contains(&i)
    }

    /// Layer `i`'s type.
    pub fn layer_type(&self, i: usize) -> LayerType {
        self.layer_types.get(i).copied().unwrap_or(LayerType::Full)
    }

    /// The keys layer `i` sees: all earlier ones, or the last `sliding_window`.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        match self.layer_type(i) {
            LayerType::Full => None,
            LayerType::Sliding => self.sliding_window,
        }
    }

    /// Whether layer `i` reads the sliding layers' own RoPE table (`rope_local_table`).
    pub fn layer_local_rope(&self, i: usize) -> bool {
        self.rope_local_theta.is_some() && self.layer_type(i) == LayerType::Sliding
    }

    /// How layer `i` scores keys.
    pub fn layer_scores(&self, i: usize) -> crate::ops::attention::Scores {
        let scale = match self.query_pre_attn_scalar {
            Some(s) => (s as f32).powf(-0.5),
            None => 1.0 / (self.head_dim as f32).sqrt(),
        };
        crate::ops::attention::Scores {
            scale,
            window: self.layer_window(i),
        }
    }

    /// The factor on embeddings: √hidden_size in f32 for Gemma (as transformers rounds it),
    /// else 1.
    pub fn embed_scale(&self) -> f32 {
        if self.family().embed_scale {
            (self.hidden_size as f32).sqrt()
        } else {
            1.0
        }
    }

    /// RoPE's (cos, sin) table of the sliding layers with their own base (unscaled),
    /// [positions, rotary_dim / 2, 2]; `rope_table` when they have none.
    pub fn rope_local_table(&self, positions: usize) -> Vec<f32> {
        match self.rope_local_theta {
            Some(theta) => crate::ops::rope::cos_sin_table_of(
                positions,
                &crate::ops::rope::inv_freq(self.rotary_dim, theta),
            ),
            None => self.rope_table(positions),
        }
    }

    /// RoPE's inverse frequencies (rotary_dim / 2 of them), scaled as the model says (for
    /// LongRoPE, as for contexts within its original length).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        self.rope_inv_freq_for(1)
    }

    /// `rope_inv_freq` for a table of `positions` positions: LongRoPE takes its long factors
    /// when the table reaches past the original context, as transformers does for sequences
    /// that long.
    pub fn rope_inv_freq_for(&self, positions: usize) -> Vec<f64> {
        let inv = crate::ops::rope::inv_freq(self.rotary_dim, self.rope_theta);
        self.rope_scaling.scaled(inv, positions)
    }

    /// RoPE's (cos, sin) table for `positions` positions, [positions, rotary_dim / 2, 2].
    pub fn rope_table(&self, positions: usize) -> Vec<f32> {
        let inv = self.rope_inv_freq_for(positions);
        self.rope_scaling.table(positions, &inv)
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
        self.check_rope_scaling()?;
        if self.rotary_dim == 0
            || self.rotary_dim > self.head_dim
            || !self.rotary_dim.is_multiple_of(2)
        {
            return Err((
                "partial_rotary_factor",
                format!(
                    "gives {} rotated channels of a head of {}: an even number, 2 to head_dim",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        // A special token past the vocabulary would be blamed on the first data line that
        // gets one; it is the model's file that is wrong.
        if let Some(bos) = self.bos_token_id.filter(|&b| b as usize >= self.vocab_size) {
            return Err((
                "bos_token_id",
                format!(
                    "is {bos}, past the vocabulary of {} tokens",
                    self.vocab_size
                ),
            ));
        }
        if let Some(&eos) = self
            .eos_token_ids
            .iter()
            .find(|&&e| e as usize >= self.vocab_size)
        {
            return Err((
                "eos_token_id",
                format!(
                    "is {eos}, past the vocabulary of {} tokens",
                    self.vocab_size
                ),
            ));
        }
        if self.layer_types.contains(&LayerType::Sliding) && self.sliding_window.is_none() {
            return Err((
                "sliding_window",
                "is missing: the layer types name sliding-window layers".into(),
            ));
        }
        if self.sliding_window == Some(0) {
            return Err((
                "sliding_window",
                "is 0: a layer must see its own token".into(),
            ));
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.num_layers {
            return Err((
                "layer_types",
                format!(
                    "lists {} layers, not num_hidden_layers {}",
                    self.layer_types.len(),
                    self.num_layers
                ),
            ));
        }
        if self.head_dim > crate::ops::attention::MAX_HEAD_DIM || !self.head_dim.is_multiple_of(4) {
            return Err((
                "head_dim",
                format!(
                    "is {}: the attention kernels take multiples of 4 up to {}",
                    self.head_dim,
                    crate::ops::attention::MAX_HEAD_DIM
                ),
            ));
        }
        for (key, v) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
            ("rope_local_base_freq", self.rope_local_theta.unwrap_or(1.0)),
            (
                "query_pre_attn_scalar",
                self.query_pre_attn_scalar.unwrap_or(1.0),
            ),
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

    /// The RoPE scaling's per-frequency values against the rotated channels: one a frequency,
    /// each finite and above 0 (LongRoPE's factors and attention factor, llama.cpp's divisors).
    fn check_rope_scaling(&self) -> Result<(), (&'static str, String)> {
        if let RopeScaling::LongRope {
            short,
            long,
            attention_factor,
            ..
        } = &self.rope_scaling
        {
            let half = self.rotary_dim / 2;
            let fits = |f: &[f64]| f.len() == half && f.iter().all(|v| v.is_finite() && *v > 0.0);
            if !(fits(short) && fits(long)) {
                return Err((
                    "rope_scaling",
                    format!(
                        "has {} short and {} long LongRoPE factors, not {half} positive ones each",
                        short.len(),
                        long.len()
                    ),
                ));
            }
            if !(attention_factor.is_finite() && *attention_factor > 0.0) {
                return Err((
                    "rope_scaling",
                    format!("has a LongRoPE attention factor of {attention_factor}, not above 0"),
                ));
            }
        }
        if let RopeScaling::Divisors(d) = &self.rope_scaling {
            if d.len() != self.rotary_dim / 2 || d.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err((
                    "rope_scaling",
                    format!(
                        "has {} frequency divisors, not {} positive ones",
                        d.len(),
                        self.rotary_dim / 2
                    ),
                ));
            }
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
        let family = self.family();
        let (model_type, class) = (family.model_types[0], family.hf_class);
        let eos: Value = match &self.eos_token_ids[..] {
            [] => Value::Null,
            [one] => (*one).into(),
            many => many.to_vec().into(),
        };
        let mut json = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "partial_rotary_factor": self.rotary_dim as f64 / self.head_dim as f64,
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
            // Qwen2's q/k/v biases are the family's; attention_bias is everyone else's.
            "attention_bias": self.qkv_bias && !family.qkv_bias,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "hidden_act": match family.activation {
                crate::ops::swiglu::Activation::Silu => "silu",
                crate::ops::swiglu::Activation::GeluTanh => "gelu_pytorch_tanh",
            },
            "torch_dtype": torch_dtype,
        });
        if let RopeScaling::Linear { factor } = self.rope_scaling {
            json["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor});
        }
        if let RopeScaling::LongRope {
            short,
            long,
            original_max_position_embeddings,
            attention_factor,
        } = &self.rope_scaling
        {
            json["rope_scaling"] = serde_json::json!({
                "rope_type": "longrope",
                "short_factor": short,
                "long_factor": long,
                "attention_factor": attention_factor,
            });
            json["original_max_position_embeddings"] = (*original_max_position_embeddings).into();
        }
        if family.activation == crate::ops::swiglu::Activation::GeluTanh {
            json["hidden_activation"] = "gelu_pytorch_tanh".into();
        }
        if let Some(s) = self.query_pre_attn_scalar {
            json["query_pre_attn_scalar"] = s.into();
        }
        (family.hooks.write_config)(self, &mut json);
        if let Some(w) = self.sliding_window {
            json["sliding_window"] = w.into();
        }
        if !self.layer_types.is_empty() {
            let types: Vec<&str> = self
                .layer_types
                .iter()
                .map(|t| match t {
                    LayerType::Full => "full_attention",
                    LayerType::Sliding => "sliding_attention",
                })
                .collect();
            json["layer_types"] = types.into();
        }
        if let Some(local) = self.rope_local_theta {
            json["rope_local_base_freq"] = local.into();
        }
        json
    }
}
