//! Rotary position embedding, Hugging Face rotate-half layout, for q and k of shape
//! [tokens, heads, head_dim]; tokens are `batch × seq_len` and position = offset + t % seq_len.
//! The table's width sets the rotary part of each head: [positions, rotary / 2, 2] rotates the
//! first `rotary` channels (all of them, or Phi-4-mini's partial_rotary_factor of them) and
//! copies the rest.

use crate::graph::{
    shape_str, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

pub static ROPE: Kernel = Kernel {
    name: "rope",
    shader: &shaders::ROPE,
    entry: "rope",
    textures: &[],
    bindings: &[
        Binding::read("x", DType::F32),
        Binding::read("cos_sin", DType::F32),
        Binding::write("y", DType::F32),
    ],
};

/// `ROPE` four pairs an invocation (head dims of a multiple of 8, same arithmetic).
pub static ROPE_VEC4: Kernel = Kernel {
    name: "rope_vec4",
    shader: &shaders::ROPE_VEC4,
    entry: "rope_vec4",
    textures: &[],
    bindings: ROPE.bindings,
};

/// `ROPE_VEC4` over q and k at once (one dispatch for both).
pub static ROPE_QK: Kernel = Kernel {
    name: "rope_qk",
    shader: &shaders::ROPE_QK,
    entry: "rope_qk",
    textures: &[],
    bindings: &[
        Binding::read("q", DType::F32),
        Binding::read("k", DType::F32),
        Binding::read("cos_sin", DType::F32),
        Binding::write("q_out", DType::F32),
        Binding::write("k_out", DType::F32),
    ],
};

/// The (cos, sin) table for `positions` positions, [positions, head_dim / 2, 2], computed as
/// transformers does (inv_freq = 1 / theta^(2i / d), angle = position · inv_freq) in f64.
pub fn cos_sin_table(positions: usize, head_dim: usize, theta: f64) -> Vec<f32> {
    cos_sin_table_of(positions, &inv_freq(head_dim, theta))
}

/// RoPE's unscaled inverse frequencies: 1 / theta^(2i / d) for i < d / 2.
pub fn inv_freq(head_dim: usize, theta: f64) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
        .collect()
}

/// The (cos, sin) table for `positions` positions of these inverse frequencies (a model's
/// scaled ones: `ModelConfig::rope_table`).
pub fn cos_sin_table_of(positions: usize, inv_freq: &[f64]) -> Vec<f32> {
    let mut table = Vec::with_capacity(positions * inv_freq.len() * 2);
    for p in 0..positions {
        for f in inv_freq {
            let angle = p as f64 * f;
            table.push(angle.cos() as f32);
            table.push(angle.sin() as f32);
        }
    }
    table
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
    /// Every frequency divided by `factor` (transformers' "linear"; Gemma 3 4B and up).
    Linear {
        factor: f64,
    },
    /// LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini; transformers' "longrope"): frequency i
    /// divided by `short[i]` for contexts up to `original_max_position_embeddings`, by
    /// `long[i]` beyond, and cos and sin multiplied by `attention_factor`.
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_max_position_embeddings: usize,
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// Inverse frequencies `inv` (1 / θ^(2i / d)) as this scaling makes them for a table of
    /// `positions` positions (LongRoPE takes its long factors when the table reaches past the
    /// original context, as transformers does for sequences that long).
    pub fn scaled(&self, mut inv: Vec<f64>, positions: usize) -> Vec<f64> {
        match self {
            RopeScaling::None => {}
            RopeScaling::LongRope {
                short,
                long,
                original_max_position_embeddings,
                ..
            } => {
                let factors = match positions > *original_max_position_embeddings {
                    true => long,
                    false => short,
                };
                for (f, d) in inv.iter_mut().zip(factors) {
                    *f /= d;
                }
            }
            RopeScaling::Linear { factor } => {
                for f in inv.iter_mut() {
                    *f /= factor;
                }
            }
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

    /// The (cos, sin) table of these (scaled) inverse frequencies for `positions` positions;
    /// LongRoPE scales cos and sin (in f32, as transformers scales its f32 cos and sin).
    pub fn table(&self, positions: usize, inv: &[f64]) -> Vec<f32> {
        let table = cos_sin_table_of(positions, inv);
        match self {
            RopeScaling::LongRope {
                attention_factor, ..
            } => table
                .into_iter()
                .map(|v| v * *attention_factor as f32)
                .collect(),
            _ => table,
        }
    }
}

/// Where a rope node applies: tokens are `seq_len`-long sequences starting at `pos_offset`.
#[derive(Clone, Copy, Debug)]
pub struct Positions {
    pub seq_len: usize,
    pub pos_offset: usize,
}

/// `x` is [tokens, heads, head_dim] with an even head dim, the table [positions, rotary / 2,
/// 2] for an even rotary width up to head_dim, and the sequences fit the table: x's
/// [tokens, heads, head_dim, rotary].
fn check(
    g: &Graph,
    name: &str,
    x: TensorId,
    cos_sin: TensorId,
    at: Positions,
) -> Result<[usize; 4], GraphError> {
    let shape = g.tensor(x).shape.clone();
    let table = g.tensor(cos_sin).shape.clone();
    let bad = |detail: String| GraphError::ShapeMismatch {
        op: name.into(),
        detail,
    };
    let [tokens, heads, head_dim] = shape[..] else {
        return Err(bad(format!(
            "'{}' is {}, not [tokens, heads, head_dim]",
            g.tensor(x).name,
            shape_str(&shape)
        )));
    };
    if head_dim % 2 != 0
        || table.len() != 3
        || table[2] != 2
        || table[1] == 0
        || table[1] > head_dim / 2
    {
        return Err(bad(format!(
            "table '{}' is {} but head_dim {head_dim} needs [positions, at most {}, 2]",
            g.tensor(cos_sin).name,
            shape_str(&table),
            head_dim / 2
        )));
    }
    if at.seq_len == 0 || tokens % at.seq_len != 0 || at.pos_offset + at.seq_len > table[0] {
        return Err(bad(format!(
            "{tokens} tokens in sequences of {} from position {} do not fit a table of {} positions",
            at.seq_len, at.pos_offset, table[0]
        )));
    }
    Ok([tokens, heads, head_dim, table[1] * 2])
}

/// Rotate `x` [tokens, heads, head_dim] (forward), or rotate back (`inverse`: the backward).
pub fn rope(
    g: &mut Graph,
    name: &str,
    x: TensorId,
    cos_sin: TensorId,
    at: Positions,
    inverse: bool,
) -> Result<TensorId, GraphError> {
    let [tokens, heads, head_dim, rotary] = check(g, name, x, cos_sin, at)?;
    let y = g.temp(name, &[tokens, heads, head_dim], DType::F32);
    let params = Params::new()
        .u32(tokens as u32)
        .u32(heads as u32)
        .u32(head_dim as u32)
        .u32(at.seq_len as u32)
        .u32(at.pos_offset as u32)
        .u32(inverse as u32)
        .u32(rotary as u32);
    let pairs = tokens * heads * head_dim / 2;
    // Four pairs an invocation where the half head dim and the rotary part allow.
    let (kernel, items) = if head_dim.is_multiple_of(8) && rotary.is_multiple_of(8) {
        (&ROPE_VEC4, pairs / 4)
    } else {
        (&ROPE, pairs)
    };
    g.push(
        name,
        kernel,
        &[x, cos_sin, y],
        params,
        Dispatch::linear(items, 64),
    )?;
    Ok(y)
}

/// Rotate q [tokens, q_heads, head_dim] and k [tokens, k_heads, head_dim] alike (the same
/// positions and table): new temporaries `names`. One dispatch where the head dim is a
/// multiple of 8, else `rope` on each.
pub fn rope_qk(
    g: &mut Graph,
    names: [&str; 2],
    [q, k]: [TensorId; 2],
    cos_sin: TensorId,
    at: Positions,
    inverse: bool,
) -> Result<[TensorId; 2], GraphError> {
    let (qs, ks) = (g.tensor(q).shape.clone(), g.tensor(k).shape.clone());
    let rotary = g.tensor(cos_sin).shape.get(1).map_or(0, |half| 2 * half);
    let fused = qs.len() == 3
        && ks.len() == 3
        && qs[0] == ks[0]
        && qs[2] == ks[2]
        && qs[2].is_multiple_of(8)
        && rotary.is_multiple_of(8);
    if !fused {
        let q_rot = rope(g, names[0], q, cos_sin, at, inverse)?;
        let k_rot = rope(g, names[1], k, cos_sin, at, inverse)?;
        return Ok([q_rot, k_rot]);
    }
    // Shapes, table and positions checked as `rope` checks them, on q (k shares them).
    let [tokens, _, head_dim, rotary] = check(g, names[0], q, cos_sin, at)?;
    let q_out = g.temp(names[0], &qs, DType::F32);
    let k_out = g.temp(names[1], &ks, DType::F32);
    let params = Params::new()
        .u32(tokens as u32)
        .u32(qs[1] as u32)
        .u32(ks[1] as u32)
        .u32(head_dim as u32)
        .u32(at.seq_len as u32)
        .u32(at.pos_offset as u32)
        .u32(inverse as u32)
        .u32(rotary as u32);
    let items = tokens * (qs[1] + ks[1]) * head_dim / 8;
    let label = format!("{} + {}", names[0], names[1]);
    g.push(
        label,
        &ROPE_QK,
        &[q, k, cos_sin, q_out, k_out],
        params,
        Dispatch::linear(items, 64),
    )?;
    Ok([q_out, k_out])
}

/// CPU reference (f64 angles), forward or inverse.
pub fn cpu_rope(
    x: &[f64],
    heads: usize,
    head_dim: usize,
    at: Positions,
    theta: f64,
    inverse: bool,
) -> Vec<f64> {
    cpu_rope_partial(x, heads, head_dim, head_dim, at, theta, inverse)
}

/// `cpu_rope` on the first `rotary` channels of each head (transformers' partial rotary:
/// pairs (i, i + rotary / 2), frequencies 1 / theta^(2i / rotary)), the rest copied.
pub fn cpu_rope_partial(
    x: &[f64],
    heads: usize,
    head_dim: usize,
    rotary: usize,
    at: Positions,
    theta: f64,
    inverse: bool,
) -> Vec<f64> {
    let half = rotary / 2;
    let mut y = x.to_vec();
    for (row, chunk) in x.chunks_exact(head_dim).enumerate() {
        let t = row / heads;
        let p = (at.pos_offset + t % at.seq_len) as f64;
        for i in 0..half {
            let angle = p / theta.powf((2 * i) as f64 / rotary as f64);
            let (c, s) = (
                angle.cos(),
                if inverse { -angle.sin() } else { angle.sin() },
            );
            y[row * head_dim + i] = chunk[i] * c - chunk[i + half] * s;
            y[row * head_dim + i + half] = chunk[i + half] * c + chunk[i] * s;
        }
    }
    y
}
