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

/// `text` parsed as `T`, with the key of a value of the wrong type named in the error
/// (`'lora_alpha': invalid type: string "16", expected f64`).
pub fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ModelError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        if at == "." {
            invalid(path, format!("not valid: {inner}"))
        } else {
            invalid(path, format!("'{at}': {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| invalid(path, format!("not valid JSON: {e}")))?;
    Ok(value)
}

/// PEFT's LoraConfig as adapter_config.json holds it: the keys we read, each of its type
/// (PEFT's other keys are allowed and ignored: task_type, revision, inference_mode, ...).
/// The keys of options we do not implement are read to refuse them by name.
#[derive(serde::Deserialize)]
struct PeftConfigFile {
    peft_type: String,
    r: usize,
    /// PEFT's default.
    #[serde(default = "default_alpha")]
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    target_modules: TargetModules,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    bias: Option<String>,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    rank_pattern: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    alpha_pattern: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    layers_to_transform: Option<Value>,
    #[serde(default)]
    layers_pattern: Option<Value>,
    #[serde(default)]
    exclude_modules: Option<Value>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
}

fn default_alpha() -> f64 {
    8.0
}

/// `target_modules`: a list of names, or (PEFT) one string, a regular expression.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

/// Whether an optional JSON value says anything: not absent, null, an empty list or map.
fn given(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Parse PEFT's adapter_config.json, refusing what we do not implement by the key's name.
pub fn parse_config(text: &str, path: &Path) -> Result<LoraConfig, ModelError> {
    let f: PeftConfigFile = parse_json(text, path)?;
    if f.peft_type != "LORA" {
        return Err(invalid(
            path,
            format!("peft_type \"{}\" is not supported (only LORA)", f.peft_type),
        ));
    }
    let unsupported = [
        ("fan_in_fan_out", f.fan_in_fan_out),
        ("bias", f.bias.as_deref().is_some_and(|b| b != "none")),
        (
            "modules_to_save",
            f.modules_to_save.is_some_and(|m| !m.is_empty()),
        ),
        (
            "rank_pattern",
            f.rank_pattern.is_some_and(|m| !m.is_empty()),
        ),
        (
            "alpha_pattern",
            f.alpha_pattern.is_some_and(|m| !m.is_empty()),
        ),
        ("layers_to_transform", given(&f.layers_to_transform)),
        ("layers_pattern", given(&f.layers_pattern)),
        ("exclude_modules", given(&f.exclude_modules)),
    ];
    if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
        let j: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        return Err(invalid(
            path,
            format!("'{key}': {} is not supported", j[key]),
        ));
    }
    if f.r == 0 {
        return Err(invalid(path, "'r' is 0, not a rank".into()));
    }
    if !(f.lora_alpha.is_finite() && f.lora_alpha > 0.0) {
        return Err(invalid(
            path,
            format!("'lora_alpha': {} must be above 0", f.lora_alpha),
        ));
    }
    if !(0.0..1.0).contains(&f.lora_dropout) {
        return Err(invalid(
            path,
            format!("'lora_dropout': {} must be in [0, 1)", f.lora_dropout),
        ));
    }
    // A set in PEFT (saved in arbitrary order): kept sorted here.
    let mut target_modules = match f.target_modules {
        TargetModules::List(names) => names,
        TargetModules::Pattern(p) => {
            return Err(invalid(
                path,
                format!(
                    "'target_modules': the pattern \"{p}\" is not supported (a list of module \
                     names)"
                ),
            ))
        }
    };
    target_modules.sort();
    target_modules.dedup();
    // PEFT refuses a target that matches no module; so do we, naming the ones there are.
    if target_modules.is_empty() {
        return Err(invalid(path, "'target_modules' is empty".into()));
    }
    let known = super::module_names();
    if let Some(bad) = target_modules.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(invalid(
            path,
            format!(
                "'target_modules': '{bad}' matches no module the model families have LoRA for ({})",
                known.join(", ")
            ),
        ));
    }
    Ok(LoraConfig {
        r: f.r,
        alpha: f.lora_alpha,
        dropout: f.lora_dropout,
        target_modules,
        use_rslora: f.use_rslora,
        use_dora: f.use_dora,
        base_model_name_or_path: f.base_model_name_or_path.unwrap_or_default(),
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
                let values = crate::model::finite(name, files.f32(name, &shape)?)
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
            let values = crate::model::finite(name, files.f32(name, &shape)?)
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
