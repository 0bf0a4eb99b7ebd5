//! Decoding with a KV cache: storing one token's K/V at a position read from a buffer, and
//! one token's grouped-query attention over the cache.

use crate::graph::{
    shape_str, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::ops::attention::{Scores, MAX_HEAD_DIM};
use crate::shaders;

/// The kernels for a cache of `$cache` values (f32, or f16 where the device has `shader-f16`).
macro_rules! cache_kernels {
    ($store:ident, $attention:ident, $cache:expr, $store_shader:expr, $attention_shader:expr,
     $suffix:literal) => {
        pub static $store: Kernel = Kernel {
            name: concat!("kv_store", $suffix),
            shader: &$store_shader,
            entry: "kv_store",
            textures: &[],
            bindings: &[
                Binding::read("src", DType::F32),
                Binding::read("step", DType::U32),
                Binding::read_write("cache", $cache),
            ],
        };

        pub static $attention: Kernel = Kernel {
            name: concat!("attention_decode", $suffix),
            shader: &$attention_shader,
            entry: "attention_decode",
            textures: &[],
            bindings: &[
                Binding::read("q", DType::F32),
                Binding::read("k_cache", $cache),
                Binding::read("v_cache", $cache),
                Binding::read("step", DType::U32),
                Binding::write("out", DType::F32),
            ],
        };
    };
}

cache_kernels!(
    KV_STORE,
    ATTENTION,
    DType::F32,
    shaders::KV_STORE,
    shaders::ATTENTION_DECODE,
    ""
);
cache_kernels!(
    KV_STORE_F16,
    ATTENTION_F16,
    DType::F16,
    shaders::KV_STORE_F16,
    shaders::ATTENTION_DECODE_F16,
    "_f16"
);

/// The cache's value type when the device allows a choice: f16 halves the cache and what
/// each decoded token reads, at the price of rounding K and V to 11 significant bits, as
/// llama.cpp's and WebLLM's default caches do. Used on GPUs with `shader-f16`. Software
/// devices keep f32: on lavapipe the f16 cache decoded no faster (4.8–4.9 tokens/s either way
/// over 300 SmolLM2 tokens, where attention is a small part of a token), and the f32 cache
/// keeps decoding within 1e-4 of the training forward. `WEBQLORA_F16=1` or `0` overrides the
/// choice (f16 still needs the feature).
pub fn cache_dtype(gpu: &crate::gpu::Gpu) -> DType {
    let has = gpu.has(wgpu::Features::SHADER_F16);
    let wanted = match std::env::var("WEBQLORA_F16").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => gpu.class != crate::gpu::DeviceClass::Software,
    };
    if has && wanted {
        DType::F16
    } else {
        DType::F32
    }
}

/// The kernels for a cache tensor's value type.
fn kernels_for(
    g: &Graph,
    name: &str,
    cache: TensorId,
) -> Result<(&'static Kernel, &'static Kernel), GraphError> {
    match g.tensor(cache).dtype {
        DType::F32 => Ok((&KV_STORE, &ATTENTION)),
        DType::F16 => Ok((&KV_STORE_F16, &ATTENTION_F16)),
        other => Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "cache '{}' holds {other} values; KV caches are f32 or f16",
                g.tensor(cache).name
            ),
        }),
    }
}

fn check_step(g: &Graph, name: &str, step: TensorId) -> Result<(), GraphError> {
    let d = g.tensor(step);
    if d.dtype != DType::U32 || d.numel() != 1 {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!("step '{}' must be one u32", d.name),
        });
    }
    Ok(())
}

/// Write `src` (one token's K or V, any shape of `kv_dim` values) into row `step[0]` of
/// `cache` [max_ctx, ...].
pub fn kv_store(
    g: &mut Graph,
    name: &str,
    src: TensorId,
    step: TensorId,
    cache: TensorId,
) -> Result<(), GraphError> {
    check_step(g, name, step)?;
    let kv_dim = g.tensor(src).numel();
    let cs = g.tensor(cache).shape.clone();
    if cs.is_empty() || cs[1..].iter().product::<usize>() != kv_dim {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "cache {} does not hold rows of {kv_dim} values",
                shape_str(&cs)
            ),
        });
    }
    let params = Params::new().u32(kv_dim as u32).u32(cs[0] as u32);
    let (store, _) = kernels_for(g, name, cache)?;
    g.push(
        name,
        store,
        &[src, step, cache],
        params,
        Dispatch::linear(kv_dim, 64),
    )?;
    Ok(())
}

/// One token's attention: `q` [heads, head_dim] over `k_cache`, `v_cache`
/// [max_ctx, kv_heads, head_dim] up to and including position `step[0]` (and, with a window,
/// from `step[0] + 1 - window`), scores scaled by `scores.scale`.
pub fn attention(
    g: &mut Graph,
    name: &str,
    q: TensorId,
    k_cache: TensorId,
    v_cache: TensorId,
    step: TensorId,
    scores: Scores,
) -> Result<TensorId, GraphError> {
    check_step(g, name, step)?;
    let qs = g.tensor(q).shape.clone();
    let ks = g.tensor(k_cache).shape.clone();
    let bad = |detail: String| GraphError::ShapeMismatch {
        op: name.into(),
        detail,
    };
    let ([heads, head_dim], [max_ctx, kv_heads, kd]) = (&qs[..], &ks[..]) else {
        return Err(bad(format!(
            "q {} must be [heads, head_dim] and the cache [max_ctx, kv_heads, head_dim], not {}",
            shape_str(&qs),
            shape_str(&ks)
        )));
    };
    let (heads, head_dim, max_ctx, kv_heads) = (*heads, *head_dim, *max_ctx, *kv_heads);
    if *kd != head_dim
        || g.tensor(v_cache).shape != ks
        || kv_heads == 0
        || heads % kv_heads != 0
        || head_dim % 4 != 0
        || head_dim > MAX_HEAD_DIM
    {
        return Err(bad(format!(
            "q {} and caches {} / {}: head_dim must agree, be a multiple of 4 up to 256, \
             and heads a multiple of kv_heads",
            shape_str(&qs),
            shape_str(&ks),
            shape_str(&g.tensor(v_cache).shape)
        )));
    }
    let out = g.temp(name, &qs, DType::F32);
    let params = Params::new()
        .u32(heads as u32)
        .u32(kv_heads as u32)
        .u32(max_ctx as u32)
        .f32(scores.scale)
        .u32(scores.window_param());
    let (_, kernel) = kernels_for(g, name, k_cache)?;
    g.push_specialized(
        name,
        kernel,
        &[q, k_cache, v_cache, step, out],
        params,
        Dispatch::linear(heads, 64),
        &[("HEAD_DIM", head_dim as f64)],
    )?;
    Ok(out)
}

/// CPU reference of `attention` (f64): q [heads, d], caches [ctx, kv_heads, d], keys 0..=pos.
#[allow(clippy::too_many_arguments)]
pub fn cpu_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    heads: usize,
    kv_heads: usize,
    d: usize,
    pos: usize,
    scores: Scores,
) -> Vec<f64> {
    let scale = scores.scale as f64;
    let first = (pos + 1).saturating_sub(scores.window.unwrap_or(usize::MAX));
    let mut out = vec![0.0; heads * d];
    for h in 0..heads {
        let kv = h / (heads / kv_heads);
        let qh = &q[h * d..(h + 1) * d];
        let scores: Vec<f64> = (first..=pos)
            .map(|j| {
                let kj = &k[(j * kv_heads + kv) * d..][..d];
                scale * qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        for (j, w) in weights.iter().enumerate() {
            let vj = &v[((first + j) * kv_heads + kv) * d..][..d];
            for i in 0..d {
                out[h * d + i] += w / sum * vj[i];
            }
        }
    }
    out
}
