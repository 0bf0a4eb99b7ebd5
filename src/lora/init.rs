//! Fresh adapters as PEFT initialises them (init_lora_weights=True): A from
//! kaiming_uniform(a = √5), i.e. U(−1/√in, 1/√in); B zero, so training starts at the base model.

use rand::rngs::StdRng;
use rand::Rng;

/// Initial values of the adapter tensor `name` (a PEFT lora_A or lora_B weight) of `shape`;
/// None for any other name (optimizer moments named after a weight included).
pub fn initial_values(name: &str, shape: &[usize], rng: &mut StdRng) -> Option<Vec<f32>> {
    if !name.starts_with("base_model.model.") {
        return None;
    }
    // A fused module's B in row parts is zero like a whole one.
    let name = crate::model::transformer::parse_part_name(name).map_or(name, |p| p.0);
    let n: usize = shape.iter().product();
    if name.ends_with(".lora_A.weight") {
        let bound = 1.0 / (shape[1] as f32).sqrt();
        Some((0..n).map(|_| rng.random_range(-bound..bound)).collect())
    } else if name.ends_with(".lora_B.weight") {
        Some(vec![0.0; n])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_is_bounded_by_fan_in_and_b_is_zero() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = initial_values("base_model.model.x.lora_A.weight", &[16, 576], &mut rng).unwrap();
        let bound = 1.0 / 24.0;
        assert!(a.iter().all(|v| v.abs() < bound) && a.iter().any(|v| v.abs() > bound * 0.9));
        let b = initial_values("base_model.model.x.lora_B.weight", &[576, 16], &mut rng).unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
        assert!(initial_values("model.norm.weight", &[576], &mut rng).is_none());
        // Optimizer state named after an adapter tensor is not the adapter tensor.
        let moment = "adamw.v.base_model.model.x.lora_A.weight";
        assert!(initial_values(moment, &[16, 576], &mut rng).is_none());
    }
}
