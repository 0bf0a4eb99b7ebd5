//! CPU references of the attention kernels, in f64 (the kernels' tests compare with these).

use super::{AttentionShape, TokenMask};

/// CPU reference forward in f64: (out, lse).
pub fn cpu_forward(q: &[f64], k: &[f64], v: &[f64], s: AttentionShape) -> (Vec<f64>, Vec<f64>) {
    cpu_forward_masked(q, k, v, s, &TokenMask::sequences(s.tokens, s.seq_len))
}

/// CPU reference forward in f64 over packed rows with a per-token mask: (out, lse).
pub fn cpu_forward_masked(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    s: AttentionShape,
    mask: &[TokenMask],
) -> (Vec<f64>, Vec<f64>) {
    let (d, group) = (s.head_dim, s.heads / s.kv_heads);
    let scale = s.scores.scale as f64;
    let mut out = vec![0.0; q.len()];
    let mut lse = vec![0.0; s.tokens * s.heads];
    for t in 0..s.tokens {
        let keys: Vec<usize> = (0..s.tokens)
            .filter(|&j| mask[t].sees(t, j, &mask[j], s.scores.window))
            .collect();
        for h in 0..s.heads {
            let qi = &q[(t * s.heads + h) * d..][..d];
            let kv = h / group;
            let scores: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    qi.iter()
                        .zip(&k[(j * s.kv_heads + kv) * d..][..d])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|x| (x - m).exp()).sum();
            lse[t * s.heads + h] = m + sum.ln();
            for (jj, &j) in keys.iter().enumerate() {
                let p = (scores[jj] - m).exp() / sum;
                for c in 0..d {
                    out[(t * s.heads + h) * d + c] += p * v[(j * s.kv_heads + kv) * d + c];
                }
            }
        }
    }
    (out, lse)
}

/// CPU reference backward in f64: (dq, dk, dv), by the same formulas as the kernels.
pub fn cpu_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_out: &[f64],
    s: AttentionShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mask = TokenMask::sequences(s.tokens, s.seq_len);
    cpu_backward_masked(q, k, v, d_out, s, &mask)
}

/// CPU reference backward in f64 over packed rows with a per-token mask: (dq, dk, dv).
pub fn cpu_backward_masked(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_out: &[f64],
    s: AttentionShape,
    mask: &[TokenMask],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (out, lse) = cpu_forward_masked(q, k, v, s, mask);
    let (d, group) = (s.head_dim, s.heads / s.kv_heads);
    let scale = s.scores.scale as f64;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for t in 0..s.tokens {
        for h in 0..s.heads {
            let row = t * s.heads + h;
            let (qi, doi) = (&q[row * d..][..d], &d_out[row * d..][..d]);
            let delta = dot(doi, &out[row * d..][..d]);
            let kv = h / group;
            for j in (0..=t).filter(|&j| mask[t].sees(t, j, &mask[j], s.scores.window)) {
                let kb = (j * s.kv_heads + kv) * d;
                let p = (dot(qi, &k[kb..kb + d]) * scale - lse[row]).exp();
                let ds = p * (dot(doi, &v[kb..kb + d]) - delta) * scale;
                for c in 0..d {
                    dq[row * d + c] += ds * k[kb + c];
                    dk[kb + c] += ds * qi[c];
                    dv[kb + c] += p * doi[c];
                }
            }
        }
    }
    (dq, dk, dv)
}
