//! A model's weights as seeded random values: any shape a config describes, with nothing to
//! download or carry (`webqlora bench step --random-weights`, where a machine has the config
//! but not the weights). Not a model to train: values to time and size steps with.

use super::{ModelConfig, ModelError, WeightSource};

/// Every tensor a model asks for, uniform values of unit output variance (±√3/√fan-in for
/// matrices, fan-in their last dimension; the embedding ±0.05), norm weights one (zero where
/// the family stores offsets from one). Each tensor's values follow from `seed` and its name,
/// so they are the same in every run.
pub struct RandomWeights {
    seed: u64,
    norm_plus_one: bool,
}

impl RandomWeights {
    pub fn new(seed: u64, config: &ModelConfig) -> Self {
        RandomWeights {
            seed,
            norm_plus_one: config.family().norm_plus_one,
        }
    }
}

/// splitmix64: a well-mixed stream from any seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl WeightSource for RandomWeights {
    /// The model's own weights (`model.*`, `lm_head.weight`); not the adapter's, the
    /// optimizer's or a session's state, which start as the session starts them (AdamW's second
    /// moments random would be negative: NaN from the first update on).
    fn contains(&self, name: &str) -> bool {
        name.starts_with("model.") || name == "lm_head.weight"
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let n: usize = shape.iter().product();
        if name.ends_with("norm.weight") {
            let one = if self.norm_plus_one { 0.0 } else { 1.0 };
            return Ok(vec![one; n]);
        }
        let fan_in = shape.last().copied().unwrap_or(1).max(1) as f32;
        let bound = if name.contains("embed_tokens") {
            0.05
        } else {
            3f32.sqrt() / fan_in.sqrt()
        };
        // The seed, then the name's bytes (FNV-1a), start the stream.
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        Ok((0..n)
            .map(|_| {
                let unit = (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * unit - 1.0) * bound
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_seeded_bounded_and_named() {
        let config = ModelConfig::from_json(
            r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 100, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}"#,
            "config.json",
        )
        .unwrap();
        let w = RandomWeights::new(7, &config);
        let a = w
            .f32("model.layers.0.self_attn.q_proj.weight", &[64, 64])
            .unwrap();
        assert_eq!(
            a,
            w.f32("model.layers.0.self_attn.q_proj.weight", &[64, 64])
                .unwrap()
        );
        assert_ne!(
            a,
            w.f32("model.layers.0.self_attn.k_proj.weight", &[64, 64])
                .unwrap()
        );
        let bound = 3f32.sqrt() / 8.0;
        assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| v.abs() > bound / 2.0));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.02, "{mean}");
        let norm = w
            .f32("model.layers.0.input_layernorm.weight", &[64])
            .unwrap();
        assert_eq!(norm, vec![1.0; 64]);
        assert_ne!(
            a,
            RandomWeights::new(8, &config)
                .f32("model.layers.0.self_attn.q_proj.weight", &[64, 64])
                .unwrap()
        );
        // Only the model's weights: the adapter and AdamW's moments start as a session
        // starts them.
        assert!(w.contains("model.norm.weight") && w.contains("lm_head.weight"));
        let adapter = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        assert!(!w.contains(adapter));
        assert!(!w.contains(&format!("adamw.v.{adapter}")));
    }
}
