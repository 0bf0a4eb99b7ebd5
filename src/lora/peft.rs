//! PEFT's adapter files: adapter_config.json and adapter_model.safetensors, read and written so
//! that PEFT loads ours and we load PEFT's.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::LoraConfig;
use crate::model::file_bytes::FileBytes;
use crate::model::safetensors_files::SafetensorsFiles;
use crate::model::ModelError;

/// An adapter: its configuration and its tensors by PEFT name, as (shape, f32 values).
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub config: LoraConfig,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn invalid(path: &Path, msg: String) -> ModelError {
    ModelError::Invalid {
        path: path.display().to_string(),
        msg,
    }
}

/// Parse PEFT's adapter_config.json, refusing what we do not implement.
pub fn parse_config(text: &str, path: &Path) -> Result<LoraConfig, ModelError> {
    let j: Value =
        serde_json::from_str(text).map_err(|e| invalid(path, format!("not valid JSON: {e}")))?;
    if j["peft_type"] != "LORA" {
        return Err(invalid(
            path,
            format!("peft_type {} is not supported (only LORA)", j["peft_type"]),
        ));
    }
    for (key, ok) in [
        (
            "fan_in_fan_out",
            j["fan_in_fan_out"].as_bool() != Some(true),
        ),
        ("bias", j["bias"].is_null() || j["bias"] == "none"),
        ("modules_to_save", j["modules_to_save"].is_null()),
        (
            "rank_pattern",
            j["rank_pattern"].as_object().is_none_or(|m| m.is_empty()),
        ),
        (
            "alpha_pattern",
            j["alpha_pattern"].as_object().is_none_or(|m| m.is_empty()),
        ),
    ] {
        if !ok {
            return Err(invalid(
                path,
                format!("'{key}': {} is not supported", j[key]),
            ));
        }
    }
    let r = j["r"]
        .as_u64()
        .filter(|&r| r > 0)
        .ok_or_else(|| invalid(path, format!("'r' is {}, not a rank", j["r"])))?;
    // A set in PEFT (saved in arbitrary order): kept sorted here.
    let mut target_modules: Vec<String> = match &j["target_modules"] {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        other => {
            return Err(invalid(
                path,
                format!("target_modules {other} is not supported (a list of module names)"),
            ))
        }
    };
    target_modules.sort();
    // PEFT refuses a target that matches no module; so do we, naming the ones there are.
    if target_modules.is_empty() {
        return Err(invalid(path, "target_modules is empty".into()));
    }
    if let Some(bad) = target_modules
        .iter()
        .find(|t| !super::ALL_LINEAR.contains(&t.as_str()))
    {
        return Err(invalid(
            path,
            format!(
                "target_modules: '{bad}' matches no module this model family has LoRA for ({})",
                super::ALL_LINEAR.join(", ")
            ),
        ));
    }
    let alpha = j["lora_alpha"].as_f64().unwrap_or(8.0);
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(invalid(path, format!("lora_alpha {alpha} must be above 0")));
    }
    Ok(LoraConfig {
        r: r as usize,
        alpha,
        dropout: j["lora_dropout"].as_f64().unwrap_or(0.0),
        target_modules,
        use_rslora: j["use_rslora"].as_bool().unwrap_or(false),
        use_dora: j["use_dora"].as_bool().unwrap_or(false),
        base_model_name_or_path: j["base_model_name_or_path"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    })
}

/// adapter_config.json as PEFT writes it (the fields PEFT needs to load the adapter).
pub fn config_json(c: &LoraConfig) -> String {
    let v = json!({
        "alpha_pattern": {},
        "base_model_name_or_path": c.base_model_name_or_path,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": c.r,
        "rank_pattern": {},
        "revision": null,
        "target_modules": c.target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": c.use_dora,
        "use_rslora": c.use_rslora,
    });
    serde_json::to_string_pretty(&v).expect("a JSON value serializes")
}

impl Adapter {
    /// Load a PEFT adapter folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(dir: &Path) -> Result<Adapter, ModelError> {
        let config_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.display().to_string(),
            source,
        })?;
        // The configuration's errors first: an unsupported adapter is named as such.
        parse_config(&text, &config_path)?;
        let weights_path = dir.join("adapter_model.safetensors");
        let weights = crate::model::file_bytes::map_file(&weights_path)?;
        Self::from_bytes(
            &text,
            &config_path.display().to_string(),
            weights,
            &weights_path.display().to_string(),
        )
    }

    /// An adapter from the text of adapter_config.json and the bytes of
    /// adapter_model.safetensors (`*_name` name them in errors).
    pub fn from_bytes(
        config_text: &str,
        config_name: &str,
        weights: FileBytes,
        weights_name: &str,
    ) -> Result<Adapter, ModelError> {
        let config = parse_config(config_text, Path::new(config_name))?;
        let weights_path = Path::new(weights_name);
        let files = SafetensorsFiles::from_files(vec![(weights_name.to_string(), weights)])?;
        let mut tensors = BTreeMap::new();
        for name in files.names() {
            let (_, shape, _) = files.raw(name)?;
            if name.ends_with(super::MAGNITUDE_SUFFIX) {
                if !config.use_dora {
                    return Err(invalid(
                        weights_path,
                        format!(
                            "tensor '{name}' is a DoRA magnitude, but {config_name} does not say \
                             use_dora"
                        ),
                    ));
                }
                if shape.len() != 1 {
                    return Err(ModelError::BadTensor {
                        path: weights_name.to_string(),
                        tensor: name.into(),
                        expected: "a vector (one magnitude a output)".into(),
                        found: format!("shape {shape:?}"),
                    });
                }
                let values = crate::model::load::finite(name, files.f32(name, &shape)?)
                    .map_err(|e| invalid(weights_path, e.to_string()))?;
                tensors.insert(name.to_string(), (shape.clone(), values));
                continue;
            }
            if !(name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")) {
                return Err(invalid(
                    weights_path,
                    format!("tensor '{name}' is not a LoRA A or B weight or a DoRA magnitude"),
                ));
            }
            let rank_dim = if name.ends_with(".lora_A.weight") {
                shape.first()
            } else {
                shape.get(1)
            };
            if shape.len() != 2 || rank_dim != Some(&config.r) {
                return Err(ModelError::BadTensor {
                    path: weights_name.to_string(),
                    tensor: name.into(),
                    expected: format!("a matrix of rank {}", config.r),
                    found: format!("shape {shape:?}"),
                });
            }
            let values = crate::model::load::finite(name, files.f32(name, &shape)?)
                .map_err(|e| invalid(weights_path, e.to_string()))?;
            tensors.insert(name.to_string(), (shape.clone(), values));
        }
        Ok(Adapter { config, tensors })
    }

    /// The two files of the adapter: adapter_config.json's text and
    /// adapter_model.safetensors' bytes.
    pub fn to_bytes(&self) -> Result<(String, Vec<u8>), ModelError> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                let bytes: &[u8] = bytemuck::cast_slice(values);
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )
                .expect("shape and data agree");
                (name.clone(), view)
            })
            .collect();
        let metadata = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| {
            invalid(
                Path::new("adapter_model.safetensors"),
                format!("cannot serialize the adapter: {e}"),
            )
        })?;
        Ok((config_json(&self.config), bytes))
    }

    /// Write adapter_config.json and adapter_model.safetensors into `dir` (created if needed),
    /// each through a temporary file renamed into place.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        use crate::io::write_atomic;
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let (config_text, bytes) = self.to_bytes()?;
        let weights = dir.join("adapter_model.safetensors");
        write_atomic(&weights, &bytes).map_err(|source| ModelError::Io {
            path: weights.display().to_string(),
            source,
        })?;
        let config = dir.join("adapter_config.json");
        write_atomic(&config, config_text.as_bytes()).map_err(|source| ModelError::Io {
            path: config.display().to_string(),
            source,
        })
    }
}
