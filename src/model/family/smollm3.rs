//! SmolLM3: the Llama block with no rotary embedding on the layers `no_rope_layers` marks 0
//! (else every `no_rope_layer_interval`-th, as transformers builds the list); llama.cpp
//! fixes every fourth in GGUF files, with no metadata key.

use serde_json::Value;

use super::{Family, Hooks, LLAMA};
use crate::model::{Architecture, ModelConfig};

pub const SMOLLM3: Family = Family {
    architecture: Architecture::SmolLm3,
    model_types: &["smollm3"],
    hf_class: "SmolLM3ForCausalLM",
    gguf: "smollm3",
    hooks: Hooks {
        read_config,
        gguf_defaults,
        write_config,
    },
    ..LLAMA
};

fn read_config(json: &Value, c: &mut ModelConfig) -> Result<(), String> {
    let layers = c.num_layers;
    c.no_rope_layers = match &json["no_rope_layers"] {
        Value::Array(items) => {
            if items.len() != layers {
                return Err(format!(
                    "'no_rope_layers' has {} entries for {layers} layers",
                    items.len()
                ));
            }
            let mut none = Vec::new();
            for (i, v) in items.iter().enumerate() {
                match v.as_u64() {
                    Some(0) => none.push(i),
                    Some(1) => {}
                    _ => {
                        return Err(format!(
                            "'no_rope_layers' holds {v}: expected 1 (rotary) or 0 (none)"
                        ))
                    }
                }
            }
            none
        }
        Value::Null => {
            let interval = match &json["no_rope_layer_interval"] {
                Value::Null => 4,
                v => v
                    .as_u64()
                    .ok_or(format!("'no_rope_layer_interval' is {v}, not a count"))?
                    as usize,
            };
            if interval == 0 {
                return Err("'no_rope_layer_interval' is 0".into());
            }
            (0..layers).filter(|i| (i + 1) % interval == 0).collect()
        }
        v => return Err(format!("'no_rope_layers' is {v}, not a list")),
    };
    Ok(())
}

fn gguf_defaults(c: &mut ModelConfig) {
    c.no_rope_layers = (0..c.num_layers).filter(|i| (i + 1) % 4 == 0).collect();
}

fn write_config(c: &ModelConfig, json: &mut Value) {
    let rope: Vec<u32> = (0..c.num_layers).map(|i| c.layer_rope(i) as u32).collect();
    json["no_rope_layers"] = rope.into();
}
