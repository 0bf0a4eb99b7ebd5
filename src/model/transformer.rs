//! The transformer as a graph of our kernels, with an optional LoRA adapter on any of the
//! seven linear modules: one block for every family (`family/` says what differs).
//! Parameters are named as in the Hugging Face checkpoint
//! (`model.layers.0.self_attn.q_proj.weight`, NF4 absmax as `<name>.absmax`) and the PEFT
//! adapter (`base_model.model.<module path>.lora_A.weight`), so loading is a lookup by name.
//!
//! Per layer (`layer_pass` in transformer_train.rs, run by the one loop `layers_forward` for
//! training, scoring and decoding, and undone by `layer_backward`), as
//! transformers' LlamaDecoderLayer, with the other families' options in brackets:
//!   h_norm = rmsnorm(h);  q, k, v = linear(h_norm);  [q, k = rmsnorm per head]
//!   q, k = rope(q, k)  [sliding layers: their own table]
//!   a = o_proj(attention(q, k, v))  [scale 1/√query_pre_attn_scalar; sliding window]
//!   h = h + a  [Gemma: h + rmsnorm(a)];  h_norm = rmsnorm(h)
//!   m = down_proj(act(gate_proj(h_norm)) * up_proj(h_norm))  [act SiLU or GELU-tanh]
//!   h = h + m  [Gemma: h + rmsnorm(m)]
//! after h = embedding [× √hidden for Gemma], and then logits = rmsnorm(h) · lm_headᵀ (the
//! embedding when tied). Gemma's x·(1 + w) norms are ordinary RMSNorms over 1 + w (added at
//! load).

use std::cell::RefCell;

use super::params::ParamKind;
use super::{ModelConfig, ModelError};
use crate::graph::{DType, Graph, GraphError, TensorId};
use crate::lora::{base_norms2_name, peft_magnitude_name, peft_name, LoraConfig};
use crate::ops::attention::Scores;
use crate::ops::dropout::{self, DropoutSite};
use crate::ops::ggml_matmul::{self, GgmlWeight};
use crate::ops::matmul::{matmul, matmul_into, Operand};
use crate::ops::nf4_matmul::{self, LowRank, Nf4Compute, Nf4Weight};
use crate::ops::{dora, embedding, residual, rmsnorm};

/// How a layer's tokens attend.
#[derive(Clone, Copy, Debug)]
pub enum Attend {
    /// Causal sequences of this many tokens, RoPE positions from 0 in each.
    Sequences(usize),
    /// Packed rows (training with `--packing`, and scoring): `mask` [tokens, 4] for
    /// `attention::forward_masked` / `backward_masked` and each
    /// token's RoPE row, `cos_sin` [tokens, head_dim / 2, 2] (and the sliding layers' own).
    Packed {
        mask: TensorId,
        cos_sin: TensorId,
        cos_sin_local: Option<TensorId>,
    },
    /// One token of decoding (forward only): its K and V are stored in this layer's caches
    /// [max_ctx, kv_heads, head_dim] at position `step[0]` and it attends to the cache up to
    /// there; RoPE's tables hold that position's row alone.
    Cached {
        step: TensorId,
        k_cache: TensorId,
        v_cache: TensorId,
    },
}

/// How base linear weights are stored on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseFormat {
    F32,
    /// NF4 with this blocksize.
    Nf4 {
        blocksize: usize,
    },
    /// Each linear weight in the block type its GGUF file stores it in
    /// (`ModelConfig::gguf_types`: Q4_K, Q6_K, …, read by the `ggml_matmul` kernels); weights
    /// the file keeps in a float type in f32.
    Gguf,
}

impl BaseFormat {
    /// `--base`'s value for this format (what checkpoints and `summary.json` record).
    pub fn key(self) -> &'static str {
        match self {
            BaseFormat::F32 => "f32",
            BaseFormat::Nf4 { .. } => "nf4",
            BaseFormat::Gguf => "gguf",
        }
    }

    /// The format's name in a run's header.
    pub fn name(self) -> &'static str {
        match self {
            BaseFormat::F32 => "f32",
            BaseFormat::Nf4 { .. } => "NF4",
            BaseFormat::Gguf => "GGUF codes",
        }
    }

    /// The base a model is held in when none is asked for, and why: the weights the user
    /// downloaded, exactly, wherever that is the fast path.
    ///
    /// - A GGUF file keeps its own weights. On a device whose base products run the portable
    ///   kernels (every hardware GPU, every browser adapter) that is the file's codes
    ///   (`Gguf`: Q4_K, Q6_K, … read by the ggml kernels, no second quantization). On a
    ///   software device (lavapipe, SwiftShader) the texture kernels make the exact f32
    ///   dequantization of the same codes the fast exact path, and there it is `F32`.
    ///   Requantizing a GGUF to NF4 rounds its weights a second time and trains an adapter for
    ///   a base it is never deployed on, so it is only done when asked (`--base nf4`).
    /// - A Hugging Face f16/bf16/f32 folder is quantized to NF4, the QLoRA default; a
    ///   bitsandbytes 4-bit folder is used as its own NF4 codes.
    pub fn default_for(model: ModelKind, kernels: &crate::kernels::Kernels) -> BaseChoice {
        use crate::kernels::{Family, Path};
        let (format, why) = match model {
            ModelKind::Gguf => match kernels.path(Family::Nf4) {
                Path::Portable => (
                    BaseFormat::Gguf,
                    "the GGUF file's own codes, the weights as downloaded",
                ),
                Path::Software => (
                    BaseFormat::F32,
                    "the GGUF file's weights dequantized exactly: on a software device that is \
                     faster than its codes",
                ),
            },
            ModelKind::Folder => (
                BaseFormat::Nf4 { blocksize: 64 },
                "a Hugging Face folder is quantized to NF4, the QLoRA default",
            ),
            ModelKind::BnbFolder => (
                BaseFormat::Nf4 { blocksize: 64 },
                "the folder's own bitsandbytes NF4 codes",
            ),
        };
        BaseChoice {
            format,
            why: why.to_string(),
            asked: false,
        }
    }
}

/// What a model's weights are, for choosing its default base (`BaseFormat::default_for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A GGUF file.
    Gguf,
    /// A Hugging Face folder of f16/bf16/f32 safetensors (or weights made up for a config).
    Folder,
    /// A Hugging Face folder holding a bitsandbytes 4-bit checkpoint.
    BnbFolder,
}

impl ModelKind {
    pub fn of(config: &ModelConfig, weights: &dyn super::WeightSource) -> ModelKind {
        if weights.as_gguf().is_some() {
            ModelKind::Gguf
        } else if config.quantization.is_some() {
            ModelKind::BnbFolder
        } else {
            ModelKind::Folder
        }
    }
}

/// The base a run holds its frozen weights in, and why (said by `devices`, a run's header and
/// `summary.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct BaseChoice {
    pub format: BaseFormat,
    pub why: String,
    /// Whether `--base` (or the page's setting) asked for it.
    pub asked: bool,
}

impl BaseChoice {
    /// What was asked for.
    pub fn asked(format: BaseFormat) -> BaseChoice {
        BaseChoice {
            format,
            why: "asked for".into(),
            asked: true,
        }
    }

    /// "f32 (the GGUF file's weights dequantized exactly: …)", for headers.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.format.name(), self.why)
    }
}

/// A base linear layer's weight [out, in].
#[derive(Clone, Copy, Debug)]
pub enum Linear {
    F32(TensorId),
    Nf4(Nf4Weight),
    /// A GGUF file's own block codes.
    Ggml(GgmlWeight),
}

/// LoRA factors A [r, in] and B [out, r] with their scale.
#[derive(Clone, Copy, Debug)]
pub struct LoraFactors {
    pub a: TensorId,
    pub b: TensorId,
    pub scale: f32,
    /// Dropout on the adapter's input (training graphs only; PEFT's lora_dropout).
    pub dropout: Option<DropoutSite>,
    /// DoRA's tensors, when the adapter is a DoRA one.
    pub dora: Option<DoraTensors>,
}

/// A DoRA module's magnitude m [out] (trained) and its base weight's ‖W_j‖² [out] (frozen).
#[derive(Clone, Copy, Debug)]
pub struct DoraTensors {
    pub magnitude: TensorId,
    pub base_norms2: TensorId,
}

/// What a DoRA module's backward reads from its forward.
#[derive(Clone, Copy, Debug)]
pub struct DoraSaved {
    /// x·Wᵀ + s·(x·Aᵀ)·Bᵀ, before the magnitude's scale (and the bias).
    pub unscaled: TensorId,
    /// ‖W + s·B·A‖ by row.
    pub norm: TensorId,
}

/// A linear module with its optional adapter.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub weight: Linear,
    /// A frozen bias [out] (q/k/v of qwen2-style models).
    pub bias: Option<TensorId>,
    pub lora: Option<LoraFactors>,
}

/// What a module's backward needs from its forward.
#[derive(Clone, Copy, Debug)]
pub struct ModuleSaved {
    pub x: TensorId,
    /// x·Aᵀ, when the module has an adapter.
    pub x_a: Option<TensorId>,
    /// dropout(x), the adapter's input, when the adapter has dropout.
    pub x_dropped: Option<TensorId>,
    /// The unscaled product and the norm, when the adapter is a DoRA one.
    pub dora: Option<DoraSaved>,
}

/// The gradients of a module's adapter.
#[derive(Clone, Copy, Debug)]
pub struct LoraGrads {
    pub a: TensorId,
    pub b: TensorId,
    /// DoRA's magnitude.
    pub magnitude: Option<TensorId>,
}

impl Module {
    /// y = x·Wᵀ (+ scale · (x·Aᵀ)·Bᵀ), a new temporary named `name`.
    pub fn forward(&self, g: &mut Graph, name: &str, x: TensorId) -> Result<TensorId, GraphError> {
        Ok(self.forward_saving(g, name, x)?.0)
    }

    /// `forward`, also returning what the backward needs.
    pub fn forward_saving(
        &self,
        g: &mut Graph,
        name: &str,
        x: TensorId,
    ) -> Result<(TensorId, ModuleSaved), GraphError> {
        self.forward_reusing(g, name, x, None)
    }

    /// `forward_saving`, with the adapter's x·Aᵀ taken from `x_a` where given (an earlier
    /// pass over the same x: gradient checkpointing keeps the forward's, a few columns a
    /// token, rather than computing them again).
    pub fn forward_reusing(
        &self,
        g: &mut Graph,
        name: &str,
        x: TensorId,
        x_a: Option<TensorId>,
    ) -> Result<(TensorId, ModuleSaved), GraphError> {
        let mut saved = self.adapter_inputs(g, name, x, x_a)?;
        let dora = self.lora.and_then(|l| l.dora.map(|d| (l, d)));
        // DoRA scales the adapted product into the output: the product gets a name of its own.
        let product = match dora {
            Some(_) => format!("{name}.unscaled"),
            None => name.to_string(),
        };
        let mut y = match (self.weight, self.lora.zip(saved.x_a)) {
            (Linear::Ggml(w), Some((l, xa))) => {
                let term = LowRank {
                    lhs: xa,
                    factor: l.b,
                    scale: l.scale,
                };
                ggml_matmul::forward_lora(g, &product, x, &w, term)?
            }
            (Linear::F32(_), lora) | (Linear::Ggml(_), lora @ None) => {
                let y = self.base_forward(g, &product, x)?;
                if let Some((l, xa)) = lora {
                    let (lhs, b) = (Operand::plain(xa), Operand::transposed(l.b));
                    matmul_into(g, &format!("{product} += lora"), y, lhs, b, l.scale)?;
                }
                y
            }
            (Linear::Nf4(w), None) => nf4_matmul::forward(g, &product, x, &w)?,
            // The adapter's term inside the NF4 or ggml product where the kernels allow.
            (Linear::Nf4(w), Some((l, xa))) => {
                let term = LowRank {
                    lhs: xa,
                    factor: l.b,
                    scale: l.scale,
                };
                nf4_matmul::forward_lora(g, &product, x, &w, term)?
            }
        };
        if let Some((l, d)) = dora {
            let norm = self.dora_norm(g, &format!("{name}.dora_norm"), &l, d)?;
            saved.dora = Some(DoraSaved { unscaled: y, norm });
            y = dora::scale(g, name, y, d.magnitude, norm)?;
        }
        if let Some(bias) = self.bias {
            residual::bias_add(g, &format!("{name} += bias"), y, bias)?;
        }
        Ok((y, saved))
    }

    /// `first`'s x·Aᵀ where this module shares its adapter's A and input (the parts of a
    /// fused module, Phi-3's q|k|v): the product to reuse rather than compute again.
    pub fn shared_product(&self, first: &Module, saved: &ModuleSaved) -> Option<TensorId> {
        match (self.lora, first.lora) {
            (Some(a), Some(b)) if a.a == b.a && a.dropout == b.dropout => saved.x_a,
            _ => None,
        }
    }

    /// x·Wᵀ of the base weight alone, a new temporary `name`.
    fn base_forward(&self, g: &mut Graph, name: &str, x: TensorId) -> Result<TensorId, GraphError> {
        match self.weight {
            Linear::Ggml(w) => ggml_matmul::forward(g, name, x, &w),
            Linear::F32(w) => matmul(g, name, Operand::plain(x), Operand::transposed(w), 1.0),
            Linear::Nf4(w) => nf4_matmul::forward(g, name, x, &w),
        }
    }

    /// DoRA's ‖W + s·B·A‖ by row (`ops::dora::norm`): A·Wᵀ through the base weight's own
    /// product, B·(A·Aᵀ) from two small ones.
    fn dora_norm(
        &self,
        g: &mut Graph,
        name: &str,
        l: &LoraFactors,
        d: DoraTensors,
    ) -> Result<TensorId, GraphError> {
        let aw = self.base_forward(g, &format!("{name}.a_w"), l.a)?;
        let aa = matmul(
            g,
            &format!("{name}.a_a"),
            Operand::plain(l.a),
            Operand::transposed(l.a),
            1.0,
        )?;
        let bg = matmul(
            g,
            &format!("{name}.b_a_a"),
            Operand::plain(l.b),
            Operand::plain(aa),
            1.0,
        )?;
        dora::norm(g, name, d.base_norms2, l.b, aw, bg, l.scale)
    }

    /// What the backward needs from the forward (the adapter's input and x·Aᵀ), without the
    /// output: for recomputing a layer whose module output nothing reads again (except with
    /// DoRA, whose magnitude's gradient reads the product).
    pub fn saved_without_output(
        &self,
        g: &mut Graph,
        name: &str,
        x: TensorId,
    ) -> Result<ModuleSaved, GraphError> {
        self.saved_reusing(g, name, x, None)
    }

    /// `saved_without_output`, with x·Aᵀ from `kept` where given (see `forward_reusing`).
    pub fn saved_reusing(
        &self,
        g: &mut Graph,
        name: &str,
        x: TensorId,
        kept: Option<TensorId>,
    ) -> Result<ModuleSaved, GraphError> {
        if self.lora.is_some_and(|l| l.dora.is_some()) {
            return Ok(self.forward_reusing(g, name, x, kept)?.1);
        }
        self.adapter_inputs(g, name, x, kept)
    }

    /// The adapter's input (after dropout) and x·Aᵀ (from `kept` where given).
    fn adapter_inputs(
        &self,
        g: &mut Graph,
        name: &str,
        x: TensorId,
        kept: Option<TensorId>,
    ) -> Result<ModuleSaved, GraphError> {
        let (mut x_a, mut x_dropped) = (None, None);
        if let Some(l) = self.lora {
            let x_in = match l.dropout {
                Some(site) => {
                    let d = dropout::dropout(g, &format!("{name}.x_dropped"), x, site)?;
                    x_dropped = Some(d);
                    d
                }
                None => x,
            };
            let xa = match kept {
                Some(xa) => xa,
                None => matmul(
                    g,
                    &format!("{name}.x_a"),
                    Operand::plain(x_in),
                    Operand::transposed(l.a),
                    1.0,
                )?,
            };
            x_a = Some(xa);
        }
        Ok(ModuleSaved {
            x,
            x_a,
            x_dropped,
            dora: None,
        })
    }

    /// For the output gradient `dy` [T, out]: dx = dy·W + s·(dy·B)·A (added into `dx_into`
    /// when given, else a new temporary `name`), and the adapter's
    /// dB = s·dyᵀ·(x·Aᵀ), dA = s·(dy·B)ᵀ·x. W is never written in f32.
    pub fn backward(
        &self,
        g: &mut Graph,
        name: &str,
        dy: TensorId,
        saved: ModuleSaved,
        dx_into: Option<TensorId>,
    ) -> Result<(TensorId, Option<LoraGrads>), GraphError> {
        let (Some(l), Some(x_a)) = (self.lora, saved.x_a) else {
            return Ok((self.base_backward(g, name, dy, dx_into)?, None));
        };
        // DoRA: the magnitude's gradient, and dy through the scale (the norm is a constant).
        let (dy, magnitude) = match (l.dora, saved.dora) {
            (Some(d), Some(s)) => {
                let dm = dora::magnitude_grad(
                    g,
                    &format!("{name}.d_lora_magnitude"),
                    dy,
                    s.unscaled,
                    s.norm,
                )?;
                let dy = dora::scale(g, &format!("{name}.dy_unscaled"), dy, d.magnitude, s.norm)?;
                (dy, Some(dm))
            }
            _ => (dy, None),
        };
        let d_b = matmul(
            g,
            &format!("{name}.d_lora_B"),
            Operand::transposed(dy),
            Operand::plain(x_a),
            l.scale,
        )?;
        let dy_b = matmul(
            g,
            &format!("{name}.dy_B"),
            Operand::plain(dy),
            Operand::plain(l.b),
            1.0,
        )?;
        let d_a = matmul(
            g,
            &format!("{name}.d_lora_A"),
            Operand::transposed(dy_b),
            Operand::plain(saved.x_dropped.unwrap_or(saved.x)),
            l.scale,
        )?;
        let grads = Some(LoraGrads {
            a: d_a,
            b: d_b,
            magnitude,
        });
        let dx = match (self.weight, l.dropout) {
            // The adapter's term inside the NF4 or ggml product where the kernels allow.
            (Linear::Nf4(w), None) => {
                let term = LowRank {
                    lhs: dy_b,
                    factor: l.a,
                    scale: l.scale,
                };
                nf4_matmul::backward_lora(g, name, dy, &w, dx_into, term)?
            }
            (Linear::Ggml(w), None) => {
                let term = LowRank {
                    lhs: dy_b,
                    factor: l.a,
                    scale: l.scale,
                };
                ggml_matmul::backward_lora(g, name, dy, &w, dx_into, term)?
            }
            // dx gains the adapter path's gradient through the same dropout mask.
            (_, Some(site)) => {
                let dx = self.base_backward(g, name, dy, dx_into)?;
                let dx_lora = matmul(
                    g,
                    &format!("{name}.dx_lora"),
                    Operand::plain(dy_b),
                    Operand::plain(l.a),
                    l.scale,
                )?;
                dropout::dropout_into(g, &format!("{name} += lora"), dx, dx_lora, site)?;
                dx
            }
            (Linear::F32(_), None) => {
                let dx = self.base_backward(g, name, dy, dx_into)?;
                matmul_into(
                    g,
                    &format!("{name} += lora"),
                    dx,
                    Operand::plain(dy_b),
                    Operand::plain(l.a),
                    l.scale,
                )?;
                dx
            }
        };
        Ok((dx, grads))
    }

    /// dx = dy·W of the base weight alone (added into `dx_into` when given).
    fn base_backward(
        &self,
        g: &mut Graph,
        name: &str,
        dy: TensorId,
        dx_into: Option<TensorId>,
    ) -> Result<TensorId, GraphError> {
        let into = format!("{name} += dy W");
        Ok(match (self.weight, dx_into) {
            (Linear::F32(w), None) => matmul(g, name, Operand::plain(dy), Operand::plain(w), 1.0)?,
            (Linear::F32(w), Some(dx)) => {
                matmul_into(g, &into, dx, Operand::plain(dy), Operand::plain(w), 1.0)?;
                dx
            }
            (Linear::Nf4(w), None) => nf4_matmul::backward(g, name, dy, &w)?,
            (Linear::Nf4(w), Some(dx)) => {
                nf4_matmul::backward_into(g, &into, dx, dy, &w)?;
                dx
            }
            (Linear::Ggml(w), None) => ggml_matmul::backward(g, name, dy, &w)?,
            (Linear::Ggml(w), Some(dx)) => {
                ggml_matmul::backward_into(g, &into, dx, dy, &w)?;
                dx
            }
        })
    }
}

/// RMSNorm over each head's vector (Qwen3's q_norm and k_norm): x [tokens, heads, head_dim]
/// with one weight [head_dim] (the RMSNorm kernels take any leading dimensions as rows).
#[derive(Clone, Copy, Debug)]
pub struct HeadNorm {
    /// The heads before the norm.
    pub x: TensorId,
    pub rstd: TensorId,
}

impl HeadNorm {
    pub fn forward(
        g: &mut Graph,
        name: &str,
        x: TensorId,
        weight: TensorId,
        eps: f32,
    ) -> Result<(TensorId, HeadNorm), GraphError> {
        let (y, rstd) = rmsnorm::forward(g, name, x, weight, eps)?;
        Ok((y, HeadNorm { x, rstd }))
    }

    /// The gradient of the heads before the norm from `dy`; the weight is frozen.
    pub fn backward(
        &self,
        g: &mut Graph,
        name: &str,
        dy: TensorId,
        weight: TensorId,
    ) -> Result<TensorId, GraphError> {
        rmsnorm::backward(g, name, dy, self.x, weight, self.rstd)
    }
}

pub struct Layer {
    pub input_norm: TensorId,
    /// The MLP input's norm (Llama's post_attention_layernorm, Gemma's
    /// pre_feedforward_layernorm).
    pub post_norm: TensorId,
    /// Qwen3's and Gemma's q_norm and k_norm weights [head_dim] (`HeadNorm`).
    pub qk_norm: Option<(TensorId, TensorId)>,
    /// Gemma's norms of the attention and MLP outputs (post_attention_layernorm,
    /// post_feedforward_layernorm).
    pub out_norms: Option<(TensorId, TensorId)>,
    /// How the layer scores keys (scale, sliding window).
    pub scores: Scores,
    /// Whether RoPE comes from the sliding layers' own table (`Transformer::cos_sin_local`).
    pub local_rope: bool,
    /// Whether q and k are rotated at all (not on SmolLM3's no-RoPE layers).
    pub rope: bool,
    pub q: Module,
    pub k: Module,
    pub v: Module,
    pub o: Module,
    pub gate: Module,
    pub up: Module,
    pub down: Module,
}

/// The value type of a [vocab, hidden] table (embedding, lm-head) in `g`: f16 where f32 would
/// exceed `Graph::f16_tables_over` (WebGPU's default binding; Gemma 3's 262,144 × 640 is
/// 671 MB in f32, 335 MB in f16), as QLoRA keeps them in its 16-bit compute type; f32
/// otherwise (and for odd widths).
pub fn table_dtype(g: &Graph, vocab: usize, hidden: usize) -> DType {
    let f32_bytes = DType::F32.bytes_for(vocab * hidden);
    if f32_bytes > g.f16_tables_over && hidden.is_multiple_of(2) {
        DType::F16
    } else {
        DType::F32
    }
}

/// The param holding rows `first .. first + rows` of the table `name` split across bindings.
pub fn part_name(name: &str, first: usize, rows: usize) -> String {
    format!("{name}@rows[{first}..{}]", first + rows)
}

/// (table name, first row, rows) of a `part_name`.
pub fn parse_part_name(name: &str) -> Option<(&str, usize, usize)> {
    let (table, range) = name.split_once("@rows[")?;
    let (a, b) = range.strip_suffix(']')?.split_once("..")?;
    let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
    Some((table, a, b.checked_sub(a)?))
}

/// The names of RoPE's tables among a graph's params (`load` writes them).
pub const ROPE_TABLE: &str = "rope.cos_sin";
pub const ROPE_TABLE_LOCAL: &str = "rope.cos_sin_local";

/// A model's params as they are declared, each with its kind (what loading reads).
struct Declaring<'a> {
    config: &'a ModelConfig,
    base: BaseFormat,
    lora: Option<&'a LoraConfig>,
    kinds: RefCell<Vec<(TensorId, ParamKind)>>,
}

/// A weight the files hold whole under `file`.
fn weight_kind(file: &str) -> ParamKind {
    ParamKind::Weight {
        file: file.to_string(),
        rows: None,
        plus_one: false,
    }
}

impl Declaring<'_> {
    /// Record `t` as a param of `kind`.
    fn kind(&self, t: TensorId, kind: ParamKind) -> TensorId {
        self.kinds.borrow_mut().push((t, kind));
        t
    }

    /// The linear `part` (`self_attn.q_proj`) of the layer at `p`, [out, inp]: its weight in
    /// the base format, a bias where the family or config has one, and the adapter of the
    /// module, or of the fused module holding it (Phi-3's qkv_proj: then the parts share its
    /// A, and each holds its rows of B).
    fn linear(&self, g: &mut Graph, p: &str, part: &str, inp: usize) -> Result<Module, GraphError> {
        let (c, base, lora) = (self.config, self.base, self.lora);
        let family = c.family();
        let kind = |t, k| self.kind(t, k);
        let path = format!("{p}.{part}");
        let out = c.linear_rows(part);
        let name = format!("{path}.weight");
        let weight = match (base, c.gguf_types.get(&name)) {
            (BaseFormat::Nf4 { blocksize }, _) => {
                let w = Nf4Weight::declare(g, &name, [out, inp], blocksize);
                let (file, absmax) = (name.clone(), w.absmax);
                kind(w.codes, ParamKind::Nf4 { file, absmax });
                Linear::Nf4(w)
            }
            (BaseFormat::Gguf, Some(&ty)) => {
                let w = GgmlWeight::declare(g, &name, [out, inp], ty)?;
                kind(
                    w.codes,
                    ParamKind::Blocks {
                        file: name.clone(),
                        ty,
                    },
                );
                Linear::Ggml(w)
            }
            (BaseFormat::F32 | BaseFormat::Gguf, _) => {
                let w = g.param(&name, &[out, inp], DType::F32);
                Linear::F32(kind(w, weight_kind(&name)))
            }
        };
        let short = path.rsplit('.').next().unwrap_or("");
        // qwen2: biases on q, k and v (the family's); attention_bias: on o too.
        let has_bias = c.qkv_bias
            && (matches!(short, "q_proj" | "k_proj" | "v_proj")
                || (short == "o_proj" && !family.qkv_bias));
        let bias = has_bias.then(|| {
            let bias = format!("{path}.bias");
            kind(g.param(&bias, &[out], DType::F32), weight_kind(&bias))
        });
        // The adapter of the module, or of the fused module holding it (Phi-3's qkv_proj):
        // then the parts share its A, and each holds its rows of B.
        let fused = family.fused_holding(part);
        let target = fused.map_or(short, |f| f.short());
        let Some(l) = lora.filter(|l| l.target_modules.iter().any(|m| m == target)) else {
            return Ok(Module {
                weight,
                bias,
                lora: None,
            });
        };
        let (a_name, (b_name, b_rows)) = match fused {
            Some(f) => {
                if l.use_dora {
                    return Err(GraphError::Unsupported {
                        op: "LoRA".into(),
                        detail: format!(
                            "DoRA on the fused module '{}' is not supported",
                            f.short()
                        ),
                    });
                }
                let fused_path = format!("{p}.{}", f.module);
                let (first, _) = c.fused_rows(f, part);
                let b = peft_name(&fused_path, 'B');
                (peft_name(&fused_path, 'A'), (b, Some((first, out))))
            }
            None => (peft_name(&path, 'A'), (peft_name(&path, 'B'), None)),
        };
        // The base's norms first: loading computes a fresh magnitude from them.
        let base_norms2 = l.use_dora.then(|| {
            let t = g.param(&base_norms2_name(&name), &[out], DType::F32);
            let (weight, shape) = (name.clone(), [out, inp]);
            kind(t, ParamKind::BaseNorms2 { weight, shape })
        });
        let a = match g.find(&a_name) {
            Some(shared) => shared,
            None => {
                let a = g.param(&a_name, &[l.r, inp], DType::F32);
                let peft = a_name.clone();
                kind(a, ParamKind::Adapter { peft, rows: None })
            }
        };
        let b_param = match b_rows {
            Some((first, rows)) => part_name(&b_name, first, rows),
            None => b_name.clone(),
        };
        let b = g.param(&b_param, &[out, l.r], DType::F32);
        kind(
            b,
            ParamKind::Adapter {
                peft: b_name,
                rows: b_rows,
            },
        );
        let dora = base_norms2.map(|base_norms2| {
            let peft = peft_magnitude_name(&path);
            let magnitude = g.param(&peft, &[out], DType::F32);
            let weight = name.clone();
            DoraTensors {
                magnitude: kind(magnitude, ParamKind::Magnitude { peft, weight }),
                base_norms2,
            }
        });
        let lora = Some(LoraFactors {
            a,
            b,
            scale: l.scale() as f32,
            dropout: None,
            dora,
        });
        Ok(Module { weight, bias, lora })
    }
}

/// Every parameter of the model in a graph.
pub struct Transformer {
    pub config: ModelConfig,
    /// Every param `declare` declared, with its kind, in declaration order (what loading
    /// reads; an NF4 weight's absmax is named in its kind).
    pub params: Vec<(TensorId, ParamKind)>,
    /// The embedding [vocab, hidden], in row parts where it is larger than one binding
    /// (`Graph::row_parts`; one part otherwise).
    pub embed: Vec<TensorId>,
    pub layers: Vec<Layer>,
    pub norm: TensorId,
    /// The lm-head [vocab, hidden] in row parts (the embedding's when tied).
    pub lm_head: Vec<TensorId>,
    /// RoPE's (cos, sin) table, [positions, rotary_dim / 2, 2].
    pub cos_sin: TensorId,
    /// The sliding layers' own table, when their RoPE base differs (Gemma 3).
    pub cos_sin_local: Option<TensorId>,
}

impl Transformer {
    /// Declare the parameters of `config` in `g`: base linears in `base` format, LoRA on the
    /// `lora` config's target modules, a RoPE table for `positions` positions.
    pub fn declare(
        g: &mut Graph,
        config: &ModelConfig,
        base: BaseFormat,
        lora: Option<&LoraConfig>,
        positions: usize,
    ) -> Result<Transformer, GraphError> {
        let c = config;
        let hidden = c.hidden_size;
        let q_dim = c.num_heads * c.head_dim;
        let family = c.family();
        let d = Declaring {
            config,
            base,
            lora,
            kinds: RefCell::new(Vec::new()),
        };
        let kind = |t: TensorId, k: ParamKind| d.kind(t, k);
        let module = |g: &mut Graph, p: &str, part: &str, inp: usize| d.linear(g, p, part, inp);
        // A [vocab, hidden] table, in row parts where one binding cannot hold it.
        let dtype = table_dtype(g, c.vocab_size, hidden);
        let table = |g: &mut Graph, name: &str| -> Vec<TensorId> {
            let parts = g.row_parts(c.vocab_size, hidden, dtype);
            if let [rows] = parts[..] {
                return vec![kind(
                    g.param(name, &[rows, hidden], dtype),
                    weight_kind(name),
                )];
            }
            let mut first = 0;
            parts
                .iter()
                .map(|&rows| {
                    let t = g.param(&part_name(name, first, rows), &[rows, hidden], dtype);
                    let file = name.to_string();
                    let rows_of = Some((first, rows));
                    first += rows;
                    kind(
                        t,
                        ParamKind::Weight {
                            file,
                            rows: rows_of,
                            plus_one: false,
                        },
                    )
                })
                .collect()
        };
        // Norm weights, held as 1 + w where the family computes x·(1 + w).
        let norm_kind = |file: &str| ParamKind::Weight {
            file: file.to_string(),
            rows: None,
            plus_one: family.norm_plus_one,
        };
        let embed = table(g, "model.embed_tokens.weight");
        let layers = (0..c.num_layers)
            .map(|i| -> Result<Layer, GraphError> {
                let p = format!("model.layers.{i}");
                let norm = |g: &mut Graph, which: &str| {
                    let name = format!("{p}.{which}.weight");
                    kind(g.param(&name, &[hidden], DType::F32), norm_kind(&name))
                };
                Ok(Layer {
                    input_norm: norm(g, "input_layernorm"),
                    post_norm: if family.sandwich_norms {
                        norm(g, "pre_feedforward_layernorm")
                    } else {
                        norm(g, "post_attention_layernorm")
                    },
                    out_norms: family.sandwich_norms.then(|| {
                        (
                            norm(g, "post_attention_layernorm"),
                            norm(g, "post_feedforward_layernorm"),
                        )
                    }),
                    scores: c.layer_scores(i),
                    local_rope: c.layer_local_rope(i),
                    rope: c.layer_rope(i),
                    qk_norm: c.qk_norm.then(|| {
                        let norm = |g: &mut Graph, which: &str| {
                            let name = format!("{p}.self_attn.{which}.weight");
                            kind(g.param(&name, &[c.head_dim], DType::F32), norm_kind(&name))
                        };
                        (norm(g, "q_norm"), norm(g, "k_norm"))
                    }),
                    q: module(g, &p, "self_attn.q_proj", hidden)?,
                    k: module(g, &p, "self_attn.k_proj", hidden)?,
                    v: module(g, &p, "self_attn.v_proj", hidden)?,
                    o: module(g, &p, "self_attn.o_proj", q_dim)?,
                    gate: module(g, &p, "mlp.gate_proj", hidden)?,
                    up: module(g, &p, "mlp.up_proj", hidden)?,
                    down: module(g, &p, "mlp.down_proj", c.intermediate_size)?,
                })
            })
            .collect::<Result<_, _>>()?;
        let norm_name = "model.norm.weight";
        let norm = kind(
            g.param(norm_name, &[hidden], DType::F32),
            norm_kind(norm_name),
        );
        let lm_head = if c.tie_word_embeddings {
            embed.clone()
        } else {
            table(g, "lm_head.weight")
        };
        let table = [positions, c.rotary_dim / 2, 2];
        let rope = |g: &mut Graph, name: &str, local: bool| {
            kind(
                g.param(name, &table, DType::F32),
                ParamKind::RopeTable { local },
            )
        };
        let cos_sin = rope(g, ROPE_TABLE, false);
        let cos_sin_local = c.rope_local_theta.map(|_| rope(g, ROPE_TABLE_LOCAL, true));
        Ok(Transformer {
            params: d.kinds.into_inner(),
            config: c.clone(),
            embed,
            layers,
            norm,
            lm_head,
            cos_sin,
            cos_sin_local,
        })
    }

    /// The base tensors of a model by Hugging Face name, with their shapes, in file order:
    /// what `declare` declares, whole tables by their own names, fused weights as the files
    /// hold them (`model::fused`), no RoPE tables.
    pub fn base_tensors(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>, ModelError> {
        let mut g = Graph::new();
        let model =
            Transformer::declare(&mut g, config, BaseFormat::F32, None, 1).map_err(|e| {
                ModelError::Invalid {
                    path: "model".into(),
                    msg: e.to_string(),
                }
            })?;
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for (t, kind) in &model.params {
            let ParamKind::Weight { file, rows, .. } = kind else {
                continue;
            };
            let mut shape = g.tensor(*t).shape.clone();
            // A table in row parts, whole; the parts of a fused weight (Phi-3's q_proj, …) as
            // the one weight files hold.
            let name = match (rows, config.fused_part(file)) {
                (Some(_), _) => {
                    shape[0] = config.vocab_size;
                    file.clone()
                }
                (None, Some((whole, _, fused))) => {
                    shape[0] = config.linear_rows(fused.module);
                    whole
                }
                (None, None) => file.clone(),
            };
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, shape));
            }
        }
        Ok(out)
    }

    /// The RoPE table layer `l` reads.
    pub(super) fn rope_table(&self, l: &Layer) -> TensorId {
        match (l.local_rope, self.cos_sin_local) {
            (true, Some(local)) => local,
            _ => self.cos_sin,
        }
    }

    /// The embeddings of `ids` (scaled as the family says), as `h0`.
    pub(super) fn embed_tokens(
        &self,
        g: &mut Graph,
        ids: TensorId,
    ) -> Result<TensorId, GraphError> {
        embedding::gather_parts(g, "h0", ids, &self.embed, self.config.embed_scale())
    }

    /// Run the NF4 products of the modules whose input carries no gradient as bitsandbytes'
    /// eval-mode CPU kernel does (`Nf4Compute::BnbCpuBf16`, see `quant::bnb_cpu`): the modules
    /// before the first adapter in the dataflow, so every module without an adapter and layer
    /// 0's q, k and v under an adapter on all seven. For reproducing references made with
    /// bitsandbytes on CPUs with AVX512-BF16.
    pub fn emulate_bnb_cpu_bf16(&mut self) {
        let mut input_has_grad = false;
        for l in &mut self.layers {
            let groups: [&mut [&mut Module]; 4] = [
                &mut [&mut l.q, &mut l.k, &mut l.v],
                &mut [&mut l.o],
                &mut [&mut l.gate, &mut l.up],
                &mut [&mut l.down],
            ];
            // The modules of a group share their input; the next group's input depends on
            // their outputs.
            for group in groups {
                if input_has_grad {
                    return;
                }
                for m in group.iter_mut() {
                    if let Linear::Nf4(w) = &mut m.weight {
                        w.compute = Nf4Compute::BnbCpuBf16;
                    }
                }
                input_has_grad = group.iter().any(|m| m.lora.is_some());
            }
        }
    }

    /// Dropout with probability `p` on every adapter's input (PEFT's lora_dropout), for a
    /// training graph: returns the seed input (u32 [1]) to write before each run; each module
    /// draws its own mask from it.
    pub fn enable_lora_dropout(&mut self, g: &mut Graph, p: f32) -> TensorId {
        let seed = g.input("lora_dropout.seed", &[1], DType::U32);
        let mut salt = 0;
        let mut drawn: Vec<(TensorId, u32)> = Vec::new();
        for l in &mut self.layers {
            for m in [
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ] {
                if let Some(lora) = &mut m.lora {
                    // The parts of a fused module draw one mask, as its one adapter does.
                    let own = match drawn.iter().find(|(a, _)| *a == lora.a) {
                        Some(&(_, s)) => s,
                        None => {
                            salt += 1;
                            drawn.push((lora.a, salt));
                            salt
                        }
                    };
                    lora.dropout = Some(DropoutSite { p, seed, salt: own });
                }
            }
        }
        seed
    }

    /// The final hidden state [tokens, hidden] (after the last norm) for `input_ids`
    /// [tokens] = `batch` sequences of `seq_len`.
    pub fn forward_hidden(
        &self,
        g: &mut Graph,
        input_ids: TensorId,
        seq_len: usize,
    ) -> Result<TensorId, GraphError> {
        let h = self.embed_tokens(g, input_ids)?;
        let attend = Attend::Sequences(seq_len);
        let (_, (h_final, _)) = self.layers_forward(g, h, |_, _| Ok(attend), |_, _, _| {})?;
        Ok(h_final)
    }

    /// The final hidden state of packed rows: `input_ids` [tokens], each token attending as
    /// `mask` [tokens, 4] says (`attention::TokenMask`) at RoPE position `positions[t]`
    /// (u32 [tokens], below the positions this model was declared for). Forward only.
    pub fn forward_hidden_packed(
        &self,
        g: &mut Graph,
        input_ids: TensorId,
        mask: TensorId,
        positions: TensorId,
    ) -> Result<TensorId, GraphError> {
        let attend = self.packed_attend(g, mask, positions)?;
        let h = self.embed_tokens(g, input_ids)?;
        let (_, (h_final, _)) = self.layers_forward(g, h, |_, _| Ok(attend), |_, _, _| {})?;
        Ok(h_final)
    }

    /// How packed rows attend: `mask` [tokens, 4] (`attention::TokenMask`), and RoPE's table
    /// rows gathered at `positions` (u32 [tokens], each token's position in its example,
    /// below the positions this model was declared for).
    pub fn packed_attend(
        &self,
        g: &mut Graph,
        mask: TensorId,
        positions: TensorId,
    ) -> Result<Attend, GraphError> {
        let tokens = g.tensor(positions).numel();
        let table = g.tensor(self.cos_sin).shape.clone();
        let per_token = |g: &mut Graph, t: TensorId, name: &str| {
            let rows = g.view(t, &format!("{name}.rows"), &[table[0], table[1] * 2])?;
            let picked = embedding::gather(g, &format!("{name}.packed"), positions, rows)?;
            g.view(
                picked,
                &format!("{name}.packed_table"),
                &[tokens, table[1], 2],
            )
        };
        let cos_sin = per_token(g, self.cos_sin, "rope")?;
        let cos_sin_local = match self.cos_sin_local {
            Some(t) => Some(per_token(g, t, "rope_local")?),
            None => None,
        };
        Ok(Attend::Packed {
            mask,
            cos_sin,
            cos_sin_local,
        })
    }

    /// Full logits [tokens, vocab] (for small vocabularies and evaluation; training uses the
    /// fused lm-head loss instead).
    pub fn forward_logits(
        &self,
        g: &mut Graph,
        input_ids: TensorId,
        seq_len: usize,
    ) -> Result<TensorId, GraphError> {
        let h = self.forward_hidden(g, input_ids, seq_len)?;
        crate::ops::matmul::logits_parts(g, "logits", h, &self.lm_head)
    }
}

#[cfg(test)]
mod base_choice_tests {
    use super::{BaseFormat, ModelKind};
    use crate::kernels::{Family, Kernels, Path};

    #[test]
    fn the_default_base_is_the_file_as_downloaded_on_the_fast_path() {
        let portable = Kernels::all_portable(Some((32, 32)));
        let software = Kernels::all_software(Some(16384), true);
        let mut base_portable = software.clone();
        base_portable.set(Family::Nf4, Path::Portable);
        let nf4 = BaseFormat::Nf4 { blocksize: 64 };
        let table = [
            (ModelKind::Gguf, &portable, BaseFormat::Gguf),
            (ModelKind::Gguf, &software, BaseFormat::F32),
            // The base products decide: `WEBQLORA_KERNELS=nf4=portable` on lavapipe reads codes.
            (ModelKind::Gguf, &base_portable, BaseFormat::Gguf),
            (ModelKind::Folder, &portable, nf4),
            (ModelKind::Folder, &software, nf4),
            (ModelKind::BnbFolder, &portable, nf4),
            (ModelKind::BnbFolder, &software, nf4),
        ];
        for (kind, kernels, want) in table {
            let choice = BaseFormat::default_for(kind, kernels);
            assert_eq!(choice.format, want, "{kind:?} on {kernels}");
            assert!(!choice.asked && !choice.why.is_empty());
        }
        assert!(BaseFormat::default_for(ModelKind::Gguf, &software)
            .describe()
            .starts_with("f32 (the GGUF file's weights dequantized exactly"));
    }
}
