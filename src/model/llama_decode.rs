//! Decoding one token at a time with a KV cache: each layer's K and V (after RoPE) are stored
//! at the token's position, and the token attends to every cached position up to its own.
//! One compiled graph for every position: the position is a one-value input (`step`) and
//! RoPE's (cos, sin) row for it is written by the host before each run. Prompt tokens run
//! only the nodes before the lm-head.

use super::llama::{BaseFormat, HeadNorm, Llama};
use super::ModelConfig;
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, GraphError, RunError, TensorId};
use crate::lora::LoraConfig;
use crate::ops::decode;
use crate::ops::matmul::{matmul, Operand};
use crate::ops::rope::{rope, Positions};
use crate::ops::{embedding, residual, rmsnorm, swiglu};

pub struct Decoder {
    pub compiled: CompiledGraph,
    pub max_ctx: usize,
    /// The K/V caches' value type (`ops::decode::cache_dtype`).
    pub cache: DType,
    input: TensorId,
    step: TensorId,
    cos_sin: TensorId,
    logits: TensorId,
    /// Nodes before the lm-head: all a prompt token needs.
    body_nodes: usize,
    /// RoPE's table for every position, [max_ctx, head_dim / 2, 2].
    table: Vec<f32>,
    half: usize,
}

/// The names of layer `i`'s K and V caches.
pub fn cache_names(i: usize) -> [String; 2] {
    [format!("kv_cache.{i}.k"), format!("kv_cache.{i}.v")]
}

impl Decoder {
    fn declare(
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        max_ctx: usize,
        cache: DType,
    ) -> Result<(Graph, [TensorId; 4], usize), GraphError> {
        let c = config;
        let eps = c.rms_norm_eps as f32;
        let mut g = Graph::new();
        // One RoPE row: the current position's, rewritten before every run.
        let model = Llama::declare(&mut g, c, base, lora, 1)?;
        let input = g.input("input_id", &[1], DType::U32);
        let step = g.input("step", &[1], DType::U32);
        let at = Positions {
            seq_len: 1,
            pos_offset: 0,
        };
        let q_dim = c.num_heads * c.head_dim;
        let mut h = embedding::gather(&mut g, "h0", input, model.embed)?;
        for (i, l) in model.layers.iter().enumerate() {
            let p = format!("layers.{i}");
            let [k_name, v_name] = cache_names(i);
            let cache_shape = [max_ctx, c.num_kv_heads, c.head_dim];
            let k_cache = g.param(&k_name, &cache_shape, cache);
            let v_cache = g.param(&v_name, &cache_shape, cache);
            let (x, _) = rmsnorm::forward(&mut g, &format!("{p}.h_norm"), h, l.input_norm, eps)?;
            let q = l.q.forward(&mut g, &format!("{p}.q"), x)?;
            let k = l.k.forward(&mut g, &format!("{p}.k"), x)?;
            let v = l.v.forward(&mut g, &format!("{p}.v"), x)?;
            let q = g.view(q, &format!("{p}.q_heads"), &[1, c.num_heads, c.head_dim])?;
            let k = g.view(k, &format!("{p}.k_heads"), &[1, c.num_kv_heads, c.head_dim])?;
            let (q, k) = match l.qk_norm {
                Some((qw, kw)) => (
                    HeadNorm::forward(&mut g, &format!("{p}.q_norm"), q, qw, eps)?.0,
                    HeadNorm::forward(&mut g, &format!("{p}.k_norm"), k, kw, eps)?.0,
                ),
                None => (q, k),
            };
            let q = rope(&mut g, &format!("{p}.q_rot"), q, model.cos_sin, at, false)?;
            let k = rope(&mut g, &format!("{p}.k_rot"), k, model.cos_sin, at, false)?;
            decode::kv_store(&mut g, &format!("{p}.k_store"), k, step, k_cache)?;
            decode::kv_store(&mut g, &format!("{p}.v_store"), v, step, v_cache)?;
            let q = g.view(q, &format!("{p}.q_flat"), &[c.num_heads, c.head_dim])?;
            let attn = decode::attention(&mut g, &format!("{p}.attn"), q, k_cache, v_cache, step)?;
            let attn = g.view(attn, &format!("{p}.attn_flat"), &[1, q_dim])?;
            let o = l.o.forward(&mut g, &format!("{p}.o"), attn)?;
            let h_attn = residual::add(&mut g, &format!("{p}.h_attn"), h, o)?;
            let (x2, _) =
                rmsnorm::forward(&mut g, &format!("{p}.h_norm2"), h_attn, l.post_norm, eps)?;
            let gate = l.gate.forward(&mut g, &format!("{p}.gate"), x2)?;
            let up = l.up.forward(&mut g, &format!("{p}.up"), x2)?;
            let act = swiglu::forward(&mut g, &format!("{p}.act"), gate, up)?;
            let down = l.down.forward(&mut g, &format!("{p}.down"), act)?;
            h = residual::add(&mut g, &format!("{p}.h_out"), h_attn, down)?;
        }
        let (h_final, _) = rmsnorm::forward(&mut g, "h_final", h, model.norm, eps)?;
        let body_nodes = g.nodes.len();
        let logits = matmul(
            &mut g,
            "logits",
            Operand::plain(h_final),
            Operand::transposed(model.lm_head),
            1.0,
        )?;
        g.mark_output(logits);
        Ok((g, [input, step, model.cos_sin, logits], body_nodes))
    }

    fn finish(
        compiled: CompiledGraph,
        ids: [TensorId; 4],
        body_nodes: usize,
        config: &ModelConfig,
        max_ctx: usize,
        cache: DType,
    ) -> Decoder {
        let [input, step, cos_sin, logits] = ids;
        Decoder {
            compiled,
            max_ctx,
            cache,
            input,
            step,
            cos_sin,
            logits,
            body_nodes,
            table: config.rope_table(max_ctx),
            half: config.head_dim / 2,
        }
    }

    /// A decoder with its own weights; the caller uploads them (`model::load::upload_model`;
    /// the caches it reports missing need no values).
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        max_ctx: usize,
    ) -> Result<Decoder, GraphError> {
        let cache = decode::cache_dtype(gpu);
        Self::with_cache(gpu, config, base, lora, max_ctx, cache)
    }

    /// `new` with the caches' value type chosen by the caller (f16 needs `shader-f16`).
    pub fn with_cache(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        max_ctx: usize,
        cache: DType,
    ) -> Result<Decoder, GraphError> {
        if cache == DType::F16 && !gpu.has(wgpu::Features::SHADER_F16) {
            return Err(GraphError::Unsupported {
                op: "decode".into(),
                detail: format!(
                    "f16 KV caches need shader-f16, which {} lacks",
                    gpu.info.name
                ),
            });
        }
        let (g, ids, body) = Self::declare(config, base, lora, max_ctx, cache)?;
        let compiled = CompiledGraph::new(gpu, g)?;
        Ok(Self::finish(compiled, ids, body, config, max_ctx, cache))
    }

    /// A decoder over the weights and adapter of `other` (e.g. a training graph).
    pub fn sharing(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        max_ctx: usize,
        other: &CompiledGraph,
    ) -> Result<Decoder, GraphError> {
        let cache = decode::cache_dtype(gpu);
        let (g, ids, body) = Self::declare(config, base, lora, max_ctx, cache)?;
        let (compiled, _unshared) = CompiledGraph::new_sharing(gpu, g, other)?;
        Ok(Self::finish(compiled, ids, body, config, max_ctx, cache))
    }

    /// Run `token` at position `pos`; with `want_logits`, return its next-token logits.
    pub async fn feed(
        &self,
        gpu: &Gpu,
        token: u32,
        pos: usize,
        want_logits: bool,
    ) -> Result<Option<Vec<f32>>, RunError> {
        if pos >= self.max_ctx {
            return Err(RunError::Graph(GraphError::Unsupported {
                op: "decode".into(),
                detail: format!(
                    "position {pos} is past the KV cache of {} positions",
                    self.max_ctx
                ),
            }));
        }
        let c = &self.compiled;
        c.write(gpu, self.input, bytemuck::bytes_of(&token))?;
        c.write(gpu, self.step, bytemuck::bytes_of(&(pos as u32)))?;
        let row = &self.table[pos * self.half * 2..(pos + 1) * self.half * 2];
        c.write(gpu, self.cos_sin, bytemuck::cast_slice(row))?;
        if !want_logits {
            c.run_nodes(gpu, 0..self.body_nodes);
            return Ok(None);
        }
        c.run(gpu);
        Ok(Some(c.read_f32(gpu, self.logits).await?))
    }
}
