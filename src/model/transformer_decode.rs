//! Decoding one token at a time with a KV cache: the training block (`Attend::Cached`), whose
//! K and V (after RoPE) are stored at the token's position, and the token attends to the
//! cached positions up to its own (the last `sliding_window` on sliding layers).
//! One compiled graph for every position: the position is a one-value input (`step`) and
//! RoPE's (cos, sin) rows for it are written by the host before each run. Prompt tokens run
//! only the nodes before the lm-head.

use super::transformer::Attend;
use super::transformer::{BaseFormat, Transformer};
use super::ModelConfig;
use crate::gpu::Gpu;
use crate::graph::{CompiledGraph, DType, Graph, GraphError, RunError, TensorId};
use crate::lora::LoraConfig;
use crate::ops::decode;
use crate::ops::matmul::logits_parts;

pub struct Decoder {
    pub compiled: CompiledGraph,
    /// Its params with their kinds (what `upload_model` fills).
    pub model: Transformer,
    pub max_ctx: usize,
    /// The K/V caches' value type (`ops::decode::cache_dtype`).
    pub cache: DType,
    input: TensorId,
    step: TensorId,
    logits: TensorId,
    /// Nodes before the lm-head: all a prompt token needs.
    body_nodes: usize,
    /// RoPE's one-row params with their tables for every position, [max_ctx, rotary_dim / 2, 2].
    tables: Vec<(TensorId, Vec<f32>)>,
    half: usize,
}

/// What `declare` hands to `finish`.
struct Declared {
    model: Transformer,
    input: TensorId,
    step: TensorId,
    logits: TensorId,
    body_nodes: usize,
    rope: Vec<(TensorId, bool)>,
}

/// The names of layer `i`'s K and V caches.
pub fn cache_names(i: usize) -> [String; 2] {
    [format!("kv_cache.{i}.k"), format!("kv_cache.{i}.v")]
}

impl Decoder {
    fn declare(
        gpu: &Gpu,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        max_ctx: usize,
        cache: DType,
    ) -> Result<(Graph, Declared), GraphError> {
        let c = config;
        // Buffer kernels (one-row products run as matrix-vector kernels), tables split as the
        // device needs and as a training graph on it splits them (`sharing` matches by name).
        let mut g = Graph::new();
        g.max_binding_bytes = gpu.limits.max_storage_buffer_binding_size;
        // One RoPE row a table: the current position's, rewritten before every run.
        let model = Transformer::declare(&mut g, c, base, lora, 1)?;
        let input = g.input("input_id", &[1], DType::U32);
        let step = g.input("step", &[1], DType::U32);
        let h = model.embed_tokens(&mut g, input)?;
        // Each layer attends to its own KV caches.
        let cache_shape = [max_ctx, c.num_kv_heads, c.head_dim];
        let attend = |g: &mut Graph, i: usize| {
            let [k_name, v_name] = cache_names(i);
            Ok(Attend::Cached {
                step,
                k_cache: g.param(&k_name, &cache_shape, cache),
                v_cache: g.param(&v_name, &cache_shape, cache),
            })
        };
        let (_, (h_final, _)) = model.layers_forward(&mut g, h, attend, |_, _, _| {})?;
        let body_nodes = g.nodes.len();
        let logits = logits_parts(&mut g, "logits", h_final, &model.lm_head)?;
        g.mark_output(logits);
        let mut rope = vec![(model.cos_sin, false)];
        rope.extend(model.cos_sin_local.map(|t| (t, true)));
        let declared = Declared {
            model,
            input,
            step,
            logits,
            body_nodes,
            rope,
        };
        Ok((g, declared))
    }

    fn finish(
        compiled: CompiledGraph,
        d: Declared,
        config: &ModelConfig,
        max_ctx: usize,
        cache: DType,
    ) -> Decoder {
        let tables = d
            .rope
            .iter()
            .map(|&(t, local)| {
                let table = match local {
                    true => config.rope_local_table(max_ctx),
                    false => config.rope_table(max_ctx),
                };
                (t, table)
            })
            .collect();
        Decoder {
            compiled,
            model: d.model,
            max_ctx,
            cache,
            input: d.input,
            step: d.step,
            logits: d.logits,
            body_nodes: d.body_nodes,
            tables,
            half: config.rotary_dim / 2,
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
        let (g, declared) = Self::declare(gpu, config, base, lora, max_ctx, cache)?;
        let compiled = CompiledGraph::new(gpu, g)?;
        Ok(Self::finish(compiled, declared, config, max_ctx, cache))
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
        let (g, declared) = Self::declare(gpu, config, base, lora, max_ctx, cache)?;
        let (compiled, unshared) = CompiledGraph::new_sharing(gpu, g, other)?;
        // Its own: the caches and the one-row RoPE tables. A weight `other` lacks (another
        // model, tables split otherwise) would be left unwritten.
        let own = |n: &str| n.starts_with("kv_cache.") || n.starts_with("rope.");
        if let Some(name) = unshared.iter().find(|n| !own(n)) {
            return Err(GraphError::Unsupported {
                op: "decode".into(),
                detail: format!("'{name}' is not in the graph whose weights it shares"),
            });
        }
        Ok(Self::finish(compiled, declared, config, max_ctx, cache))
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
        for (t, table) in &self.tables {
            let row = &table[pos * self.half * 2..(pos + 1) * self.half * 2];
            c.write(gpu, *t, bytemuck::cast_slice(row))?;
        }
        if !want_logits {
            c.run_nodes(gpu, 0..self.body_nodes);
            return Ok(None);
        }
        c.run(gpu);
        Ok(Some(c.read_f32(gpu, self.logits).await?))
    }
}
