//! Text generation: sampling (greedy, temperature, nucleus/top-p) and the loop that feeds a
//! prompt through the KV-cache decoder and then samples until an end token or a length limit.

use rand::{Rng, SeedableRng};

use super::transformer_decode::Decoder;
use crate::gpu::Gpu;
use crate::graph::RunError;

pub struct Sampler {
    /// 0: greedy (argmax).
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches this.
    pub top_p: f32,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Sampler {
        Sampler {
            temperature,
            top_p,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 {
                        (i, l)
                    } else {
                        best
                    }
                })
                .0 as u32
        };
        if self.temperature <= 0.0 {
            return argmax();
        }
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let t = self.temperature as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l as f64 - max) / t).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            kept += 1;
            mass += p.1 / total;
            if mass >= self.top_p as f64 {
                break;
            }
        }
        let kept = &probs[..kept.max(1)];
        let sum: f64 = kept.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f64>() * sum;
        for p in kept {
            r -= p.1;
            if r <= 0.0 {
                return p.0;
            }
        }
        kept[kept.len() - 1].0
    }
}

/// Feed `prompt` and sample up to `max_new` tokens, stopping after any of `stop`. `on_token`
/// sees each new token as it comes (for streaming) and may return false to stop early.
pub async fn generate(
    decoder: &Decoder,
    gpu: &Gpu,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>, RunError> {
    let mut out = Vec::new();
    if prompt.is_empty() || max_new == 0 {
        return Ok(out);
    }
    let room = decoder.max_ctx.saturating_sub(prompt.len());
    let mut logits = None;
    for (pos, &t) in prompt.iter().enumerate() {
        let last = pos + 1 == prompt.len();
        logits = decoder.feed(gpu, t, pos, last).await?;
    }
    let mut pos = prompt.len();
    while out.len() < max_new.min(room + 1) {
        let next = sampler.sample(logits.as_deref().expect("logits of the last token"));
        out.push(next);
        if stop.contains(&next) || !on_token(next) || pos >= decoder.max_ctx {
            break;
        }
        logits = decoder.feed(gpu, next, pos, true).await?;
        pos += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_nucleus_and_temperature() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        assert_eq!(Sampler::new(0.0, 1.0, 1).sample(&logits), 1);
        // A tiny top-p keeps only the most likely token.
        let mut s = Sampler::new(1.0, 1e-6, 1);
        assert!((0..50).all(|_| s.sample(&logits) == 1));
        // Probabilities ≈ (0.024, 0.478, 0.064, 0.433): top-p 0.9 keeps tokens 1 and 3 only.
        let mut s = Sampler::new(1.0, 0.9, 7);
        let draws: Vec<u32> = (0..2000).map(|_| s.sample(&logits)).collect();
        assert!(!draws.contains(&0) && !draws.contains(&2));
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 2000.0;
        // Renormalized over {1, 3}: p(1) = e^3 / (e^3 + e^2.9) ≈ 0.525.
        assert!((ones - 0.525).abs() < 0.04, "{ones}");
    }
}
