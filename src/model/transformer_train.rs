//! One training step of the transformer graph: the forward keeping what the backward needs, the
//! fused lm-head loss, and the backward in reverse (llm.c style), ending in the gradient of
//! every LoRA tensor. The base model is frozen: no gradient for its weights, norms or
//! embedding. With gradient checkpointing (the default) only each layer's input is kept and
//! the layer's forward is emitted again just before its backward.

use super::transformer::{Attend, HeadNorm, Layer, LoraGrads, Module, ModuleSaved, Transformer};
use crate::graph::{DType, Graph, GraphError, TensorId};
use crate::ops::attention::{self, Qkv, Saved};
use crate::ops::cross_entropy::{lm_head_loss_parts, IGNORE};
use crate::ops::decode;
use crate::ops::rope::{rope_qk, Positions};
use crate::ops::select;
use crate::ops::{embedding, residual, rmsnorm, swiglu};

/// The rows of a batch that carry a loss, gathered from the final hidden state before the
/// lm-head, so that its products and the cross-entropy run on those rows only; their hidden
/// gradient is spread back to [tokens, hidden] with zeros elsewhere. With prompt-masked data
/// (MCQ: about 3 targets in a row of 48) this removes most of the lm-head, the largest
/// product of a step. The loss and every gradient are those of the whole batch.
#[derive(Clone, Copy, Debug)]
pub struct ScoredRows {
    /// [capacity] u32: each scored row's token position (spare slots: any, target IGNORE).
    pub positions: TensorId,
    /// [tokens] u32: each token's slot among the scored rows, or `embedding::ZERO_ROW`.
    pub slots: TensorId,
}

impl ScoredRows {
    /// Inputs for up to `capacity` scored rows of `tokens`; the step's targets are then
    /// [capacity] (`compact_targets` fills all three).
    pub fn declare(g: &mut Graph, tokens: usize, capacity: usize) -> ScoredRows {
        ScoredRows {
            positions: g.input("scored.positions", &[capacity], DType::U32),
            slots: g.input("scored.slots", &[tokens], DType::U32),
        }
    }
}

/// The values of `ScoredRows`' inputs and the step's targets for one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactTargets {
    pub positions: Vec<u32>,
    pub slots: Vec<u32>,
    /// [capacity]: the scored rows' targets, IGNORE in spare slots.
    pub targets: Vec<u32>,
}

/// `CompactTargets` for `ScoredRows` of `capacity` from a batch's targets [tokens] (IGNORE
/// where no loss); an error when more than `capacity` targets count.
pub fn compact_targets(targets: &[u32], capacity: usize) -> Result<CompactTargets, String> {
    let mut positions = Vec::with_capacity(capacity);
    let mut compact = Vec::with_capacity(capacity);
    let mut slots = vec![embedding::ZERO_ROW; targets.len()];
    for (t, &target) in targets.iter().enumerate() {
        if target == IGNORE {
            continue;
        }
        if positions.len() == capacity {
            return Err(format!(
                "{} targets carry a loss, more than the {capacity} scored rows the step was built for",
                targets.iter().filter(|&&t| t != IGNORE).count()
            ));
        }
        slots[t] = positions.len() as u32;
        positions.push(t as u32);
        compact.push(target);
    }
    positions.resize(capacity, 0);
    compact.resize(capacity, IGNORE);
    Ok(CompactTargets {
        positions,
        slots,
        targets: compact,
    })
}

/// What a training step adds to a graph.
pub struct TrainStep {
    /// [2]: mean loss over counted targets, and their count.
    pub loss: TensorId,
    /// The final hidden state [tokens, hidden] (after the last norm), for logits if wanted.
    pub hidden: TensorId,
    /// (PEFT tensor name, its gradient) for every adapter tensor.
    pub grads: Vec<(String, TensorId)>,
}

/// What one pass over a layer computes and takes.
#[derive(Clone, Copy, Default)]
struct Pass<'a> {
    /// The output (down_proj and the last residual add); a recomputation needs neither.
    output: bool,
    /// The adapters' x·Aᵀ from an earlier pass (a recomputation reuses the forward's).
    kept: Option<AdapterProducts>,
    /// The input's norm and rstd, computed by the layer before (fused with its residual add).
    normed_input: Option<(TensorId, TensorId)>,
    /// The norm after this layer (the next layer's input norm, or the final one): its weight
    /// and output name, computed with the last residual add in one dispatch.
    next_norm: Option<(TensorId, &'a str)>,
}

/// A layer's adapter products x·Aᵀ, by module (None where a module has no adapter).
#[derive(Clone, Copy, Default)]
pub(super) struct AdapterProducts {
    q: Option<TensorId>,
    k: Option<TensorId>,
    v: Option<TensorId>,
    o: Option<TensorId>,
    gate: Option<TensorId>,
    up: Option<TensorId>,
    down: Option<TensorId>,
}

/// What the attention sub-layer's forward gives: its output (o_proj's, normed where the
/// family norms it) and what its backward needs.
#[derive(Clone, Copy)]
pub(super) struct AttentionSaved {
    out: TensorId,
    q: ModuleSaved,
    k: ModuleSaved,
    v: ModuleSaved,
    /// What Qwen3's q_norm and k_norm backward needs.
    qk_norm: Option<(HeadNorm, HeadNorm)>,
    qkv: Qkv,
    attn: Saved,
    o: ModuleSaved,
    /// Gemma's norm after o_proj: (o_proj's output, rstd).
    o_norm: Option<(TensorId, TensorId)>,
}

#[derive(Clone, Copy)]
pub(super) struct LayerSaved {
    h_in: TensorId,
    rstd: TensorId,
    attention: AttentionSaved,
    /// Gemma's norm after down_proj: (down_proj's output, rstd).
    down_norm: Option<(TensorId, TensorId)>,
    h_attn: TensorId,
    rstd2: TensorId,
    gate: ModuleSaved,
    up: ModuleSaved,
    gate_out: TensorId,
    up_out: TensorId,
    down: ModuleSaved,
}

impl LayerSaved {
    /// The adapters' x·Aᵀ of this pass, for a recomputation to reuse.
    pub(super) fn adapter_products(&self) -> AdapterProducts {
        AdapterProducts {
            q: self.attention.q.x_a,
            k: self.attention.k.x_a,
            v: self.attention.v.x_a,
            o: self.attention.o.x_a,
            gate: self.gate.x_a,
            up: self.up.x_a,
            down: self.down.x_a,
        }
    }
}

impl Transformer {
    /// One layer's forward inside the stack (`layers_forward`), keeping what its backward
    /// needs: the input's norm `normed` (h_norm, rstd)
    /// already computed by the layer before, and the layer's last residual add fused with
    /// `next`'s norm (its weight and output name): (h_out, (its norm, rstd), saved).
    #[allow(clippy::type_complexity)]
    fn layer_forward_chained(
        &self,
        g: &mut Graph,
        l: &Layer,
        p: &str,
        (h, normed): (TensorId, Option<(TensorId, TensorId)>),
        attend: Attend,
        next: (TensorId, &str),
    ) -> Result<(TensorId, (TensorId, TensorId), LayerSaved), GraphError> {
        let pass = Pass {
            output: true,
            normed_input: normed,
            next_norm: Some(next),
            kept: None,
        };
        let (out, next, saved) = self.layer_pass(g, l, p, h, attend, pass)?;
        let out = out.expect("the output was asked for");
        Ok((out, next.expect("the next norm was asked for"), saved))
    }

    /// The one loop over the layers, for training, scoring and decoding: from the embeddings
    /// `h`, each layer attending as `attend(g, i)` says, each layer's last residual add fused
    /// with the next layer's norm (the final norm after the last layer). `each(i, input,
    /// saved)` sees every layer's input and what its backward needs. Returns the last layer's
    /// output and the final norm's (h_final, rstd).
    pub(super) fn layers_forward(
        &self,
        g: &mut Graph,
        mut h: TensorId,
        mut attend: impl FnMut(&mut Graph, usize) -> Result<Attend, GraphError>,
        mut each: impl FnMut(usize, TensorId, LayerSaved),
    ) -> Result<(TensorId, (TensorId, TensorId)), GraphError> {
        let mut normed = None;
        for (i, l) in self.layers.iter().enumerate() {
            let next_name = match self.layers.get(i + 1) {
                Some(_) => format!("layers.{}.h_norm", i + 1),
                None => "h_final".to_string(),
            };
            let next_weight = self.layers.get(i + 1).map_or(self.norm, |n| n.input_norm);
            let layer_attend = attend(g, i)?;
            let (h_out, next, saved) = self.layer_forward_chained(
                g,
                l,
                &format!("layers.{i}"),
                (h, normed),
                layer_attend,
                (next_weight, &next_name),
            )?;
            each(i, h, saved);
            normed = Some(next);
            h = h_out;
        }
        let last = match normed {
            Some(normed) => normed,
            None => rmsnorm::forward(g, "h_final", h, self.norm, self.config.rms_norm_eps as f32)?,
        };
        Ok((h, last))
    }

    /// A layer's forward again before its backward (gradient checkpointing): only what the
    /// backward reads. The layer's output is not, so neither is down_proj's product, a
    /// quarter of the layer's multiply-adds (its adapter's x·Aᵀ is), unless a norm follows it
    /// (Gemma), whose backward reads it. The adapters' x·Aᵀ come from the forward where
    /// `kept` (`LayerSaved::adapter_products`), else are computed again.
    pub(super) fn layer_recompute(
        &self,
        g: &mut Graph,
        l: &Layer,
        p: &str,
        h: TensorId,
        attend: Attend,
        kept: Option<AdapterProducts>,
    ) -> Result<LayerSaved, GraphError> {
        let pass = Pass {
            kept,
            ..Pass::default()
        };
        Ok(self.layer_pass(g, l, p, h, attend, pass)?.2)
    }

    /// RoPE's table and positions for layer `l`: the model's table by position in each
    /// sequence, one row per packed token, or the decoded token's row.
    fn rope_for(&self, l: &Layer, attend: Attend, tokens: usize) -> (TensorId, Positions) {
        let (table, seq_len) = match attend {
            Attend::Sequences(seq_len) => (self.rope_table(l), seq_len),
            Attend::Packed {
                cos_sin,
                cos_sin_local,
                ..
            } => match (l.local_rope, cos_sin_local) {
                (true, Some(local)) => (local, tokens),
                _ => (cos_sin, tokens),
            },
            Attend::Cached { .. } => (self.rope_table(l), 1),
        };
        let at = Positions {
            seq_len,
            pos_offset: 0,
        };
        (table, at)
    }

    /// A layer's pass as `pass` says: (its output, the next norm's output and rstd, saved).
    #[allow(clippy::type_complexity)]
    fn layer_pass(
        &self,
        g: &mut Graph,
        l: &Layer,
        p: &str,
        h: TensorId,
        attend: Attend,
        pass: Pass,
    ) -> Result<(Option<TensorId>, Option<(TensorId, TensorId)>, LayerSaved), GraphError> {
        let Pass {
            output,
            kept,
            normed_input,
            next_norm,
        } = pass;
        let kept = kept.unwrap_or_default();
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let (h_norm, rstd) = match normed_input {
            Some(normed) => normed,
            None => rmsnorm::forward(g, &format!("{p}.h_norm"), h, l.input_norm, eps)?,
        };
        let sub = self.attention_forward(g, l, p, h_norm, attend, kept)?;
        let o = sub.out;
        let names = (&format!("{p}.h_attn")[..], &format!("{p}.h_norm2")[..]);
        let (h_attn, h_norm2, rstd2) =
            rmsnorm::forward_residual(g, names, (h, o), l.post_norm, eps)?;
        let (gate_out, gate_saved) =
            l.gate
                .forward_reusing(g, &format!("{p}.gate"), h_norm2, kept.gate)?;
        let kept_up = kept.up.or(l.up.shared_product(&l.gate, &gate_saved));
        let (up_out, up_saved) =
            l.up.forward_reusing(g, &format!("{p}.up"), h_norm2, kept_up)?;
        let act_fn = c.family().activation;
        let act = swiglu::forward(g, &format!("{p}.act"), gate_out, up_out, act_fn)?;
        let mut next = None;
        let (h_out, down_saved, down_norm) = if output || l.out_norms.is_some() {
            let (down, down_saved) =
                l.down
                    .forward_reusing(g, &format!("{p}.down"), act, kept.down)?;
            let (down, down_norm) = match l.out_norms {
                Some((_, w)) => {
                    let (y, rstd) = rmsnorm::forward(g, &format!("{p}.down_norm"), down, w, eps)?;
                    (y, Some((down, rstd)))
                }
                None => (down, None),
            };
            let h_out = match output {
                true => match next_norm {
                    Some((w, name)) => {
                        let names = (&format!("{p}.h_out")[..], name);
                        let (sum, y, rstd) =
                            rmsnorm::forward_residual(g, names, (h_attn, down), w, eps)?;
                        next = Some((y, rstd));
                        Some(sum)
                    }
                    None => Some(residual::add(g, &format!("{p}.h_out"), h_attn, down)?),
                },
                false => None,
            };
            (h_out, down_saved, down_norm)
        } else {
            let saved = l
                .down
                .saved_reusing(g, &format!("{p}.down"), act, kept.down)?;
            (None, saved, None)
        };
        let saved = LayerSaved {
            h_in: h,
            rstd,
            attention: sub,
            down_norm,
            h_attn,
            rstd2,
            gate: gate_saved,
            up: up_saved,
            gate_out,
            up_out,
            down: down_saved,
        };
        Ok((h_out, next, saved))
    }

    /// The attention sub-layer's forward from the normed input `h_norm`: q, k and v (the
    /// parts of a fused module sharing its adapter's x·Aᵀ), their heads, the q/k norms, RoPE,
    /// attention as `attend` says, and o_proj with its norm (Gemma).
    fn attention_forward(
        &self,
        g: &mut Graph,
        l: &Layer,
        p: &str,
        h_norm: TensorId,
        attend: Attend,
        kept: AdapterProducts,
    ) -> Result<AttentionSaved, GraphError> {
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let tokens = g.tensor(h_norm).shape[0];
        let (table, at) = self.rope_for(l, attend, tokens);
        // The parts of a fused module (Phi-3's q|k|v) share its adapter's x·Aᵀ.
        let (q, q_saved) = l.q.forward_reusing(g, &format!("{p}.q"), h_norm, kept.q)?;
        let kept_k = kept.k.or(l.k.shared_product(&l.q, &q_saved));
        let (k, k_saved) = l.k.forward_reusing(g, &format!("{p}.k"), h_norm, kept_k)?;
        let kept_v = kept.v.or(l.v.shared_product(&l.q, &q_saved));
        let (v, v_saved) = l.v.forward_reusing(g, &format!("{p}.v"), h_norm, kept_v)?;
        let q = g.view(
            q,
            &format!("{p}.q_heads"),
            &[tokens, c.num_heads, c.head_dim],
        )?;
        let k = g.view(
            k,
            &format!("{p}.k_heads"),
            &[tokens, c.num_kv_heads, c.head_dim],
        )?;
        let v = g.view(
            v,
            &format!("{p}.v_heads"),
            &[tokens, c.num_kv_heads, c.head_dim],
        )?;
        let (q, k, qk_norm) = match l.qk_norm {
            Some((qw, kw)) => {
                let (q, qn) = HeadNorm::forward(g, &format!("{p}.q_norm"), q, qw, eps)?;
                let (k, kn) = HeadNorm::forward(g, &format!("{p}.k_norm"), k, kw, eps)?;
                (q, k, Some((qn, kn)))
            }
            None => (q, k, None),
        };
        let [q, k] = match l.rope {
            true => {
                let names = [format!("{p}.q_rot"), format!("{p}.k_rot")];
                rope_qk(g, [&names[0], &names[1]], [q, k], table, at, false)?
            }
            false => [q, k],
        };
        let qkv = Qkv { q, k, v };
        let name = format!("{p}.attn");
        let attn = match attend {
            Attend::Sequences(seq_len) => attention::forward(g, &name, qkv, seq_len, l.scores)?,
            Attend::Packed { mask, .. } => {
                attention::forward_masked(g, &name, qkv, mask, l.scores)?
            }
            Attend::Cached {
                step,
                k_cache,
                v_cache,
            } => {
                decode::kv_store(g, &format!("{p}.k_store"), k, step, k_cache)?;
                decode::kv_store(g, &format!("{p}.v_store"), v, step, v_cache)?;
                let q_dim = [c.num_heads, c.head_dim];
                let q = g.view(q, &format!("{p}.q_flat"), &q_dim)?;
                let out = decode::attention(g, &name, q, k_cache, v_cache, step, l.scores)?;
                let out = g.view(out, &format!("{p}.attn_heads"), &[1, q_dim[0], q_dim[1]])?;
                // Decoding runs no backward: no log-sum-exp is kept, nothing reads `lse`.
                Saved { out, lse: out }
            }
        };
        let attn_flat = g.view(
            attn.out,
            &format!("{p}.attn_flat"),
            &[tokens, c.num_heads * c.head_dim],
        )?;
        let (o, o_saved) =
            l.o.forward_reusing(g, &format!("{p}.o"), attn_flat, kept.o)?;
        let (o, o_norm) = match l.out_norms {
            Some((w, _)) => {
                let (y, rstd) = rmsnorm::forward(g, &format!("{p}.o_norm"), o, w, eps)?;
                (y, Some((o, rstd)))
            }
            None => (o, None),
        };
        Ok(AttentionSaved {
            out: o,
            q: q_saved,
            k: k_saved,
            v: v_saved,
            qk_norm,
            qkv,
            attn,
            o: o_saved,
            o_norm,
        })
    }

    /// The attention sub-layer's backward from the gradient `dh` of its output: o_proj (after
    /// Gemma's norm), attention, RoPE's inverse rotation, the q/k norms, then q, k and v, whose
    /// input gradients sum into the returned gradient of the normed input.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        g: &mut Graph,
        l: &Layer,
        p: &str,
        dh: TensorId,
        a: &AttentionSaved,
        attend: Attend,
        grads: &mut Vec<(String, TensorId)>,
    ) -> Result<TensorId, GraphError> {
        let c = &self.config;
        let tokens = g.tensor(dh).shape[0];
        let d_o = match (a.o_norm, l.out_norms) {
            (Some((x, rstd)), Some((w, _))) => {
                rmsnorm::backward(g, &format!("{p}.d_o_norm"), dh, x, w, rstd)?
            }
            _ => dh,
        };
        let d_attn_flat = backward(g, &l.o, &format!("{p}.o.d_in"), d_o, a.o, None, grads)?;
        let d_attn = g.view(
            d_attn_flat,
            &format!("{p}.d_attn_heads"),
            &[tokens, c.num_heads, c.head_dim],
        )?;
        let name = format!("{p}.d_qkv");
        let d = match attend {
            Attend::Packed { mask, .. } => {
                attention::backward_masked(g, &name, a.qkv, a.attn, d_attn, mask, l.scores)?
            }
            _ => {
                let seq_len = match attend {
                    Attend::Sequences(n) => n,
                    _ => tokens,
                };
                attention::backward(g, &name, a.qkv, a.attn, d_attn, seq_len, l.scores)?
            }
        };
        let [d_q, d_k] = match l.rope {
            true => {
                let (table, at) = self.rope_for(l, attend, tokens);
                let names = [format!("{p}.d_q_heads"), format!("{p}.d_k_heads")];
                rope_qk(g, [&names[0], &names[1]], [d.q, d.k], table, at, true)?
            }
            false => [d.q, d.k],
        };
        let (d_q, d_k) = match (a.qk_norm, l.qk_norm) {
            (Some((qn, kn)), Some((qw, kw))) => (
                qn.backward(g, &format!("{p}.d_q_norm"), d_q, qw)?,
                kn.backward(g, &format!("{p}.d_k_norm"), d_k, kw)?,
            ),
            _ => (d_q, d_k),
        };
        let d_q = g.view(
            d_q,
            &format!("{p}.d_q"),
            &[tokens, c.num_heads * c.head_dim],
        )?;
        let d_k = g.view(
            d_k,
            &format!("{p}.d_k"),
            &[tokens, c.num_kv_heads * c.head_dim],
        )?;
        let d_v = g.view(
            d.v,
            &format!("{p}.d_v"),
            &[tokens, c.num_kv_heads * c.head_dim],
        )?;
        let d_norm = backward(g, &l.q, &format!("{p}.q.d_in"), d_q, a.q, None, grads)?;
        backward(
            g,
            &l.k,
            &format!("{p}.k.d_in"),
            d_k,
            a.k,
            Some(d_norm),
            grads,
        )?;
        backward(
            g,
            &l.v,
            &format!("{p}.v.d_in"),
            d_v,
            a.v,
            Some(d_norm),
            grads,
        )?;
        Ok(d_norm)
    }

    /// One layer's backward, the reverse of `layer_pass` from what it saved (`s`): `dh` holds
    /// the gradient of the layer's output on entry and that of its input on return (added in
    /// place); each adapter's gradients go to `grads` under its parameters' names.
    ///
    /// The rule, per sub-layer, for h_out = h + f(norm(h)) (f the MLP, then the attention):
    /// d norm(h) = f'ᵀ·dh, then dh += norm'ᵀ·d norm(h) (the residual passes dh through). A
    /// linear module y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ gives dx = dy·W + s·(dy·B)·A,
    /// dB = s·dyᵀ·(x·Aᵀ), dA = s·(dy·B)ᵀ·x (`Module::backward`); SwiGLU, RoPE (the inverse
    /// rotation), the q/k norms and attention (recomputing its probabilities from the saved
    /// log-sum-exp, `ops::attention`) have their own kernels. Gemma's norms after f run
    /// their backward first.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        g: &mut Graph,
        l: &Layer,
        p: &str,
        dh: TensorId,
        s: LayerSaved,
        attend: Attend,
        grads: &mut Vec<(String, TensorId)>,
    ) -> Result<(), GraphError> {
        let c = &self.config;
        // MLP: h_out = h_attn + [norm](down(act(gate(h_norm2)) * up(h_norm2))).
        let d_down = match (s.down_norm, l.out_norms) {
            (Some((x, rstd)), Some((_, w))) => {
                rmsnorm::backward(g, &format!("{p}.d_down_norm"), dh, x, w, rstd)?
            }
            _ => dh,
        };
        let d_act = backward(
            g,
            &l.down,
            &format!("{p}.down.d_in"),
            d_down,
            s.down,
            None,
            grads,
        )?;
        let act = c.family().activation;
        let (d_gate, d_up) =
            swiglu::backward(g, &format!("{p}.d_mlp"), d_act, s.gate_out, s.up_out, act)?;
        let d_norm2 = backward(
            g,
            &l.gate,
            &format!("{p}.gate.d_in"),
            d_gate,
            s.gate,
            None,
            grads,
        )?;
        backward(
            g,
            &l.up,
            &format!("{p}.up.d_in"),
            d_up,
            s.up,
            Some(d_norm2),
            grads,
        )?;
        // dh += the post-attention norm's input gradient (dh now that of h_attn).
        let name = format!("{p}.d_h_attn");
        rmsnorm::backward_into(g, &name, dh, d_norm2, s.h_attn, l.post_norm, s.rstd2)?;

        // Attention: h_attn = h_in + [norm](o(attention(rope(q), rope(k), v))).
        let d_norm = self.attention_backward(g, l, p, dh, &s.attention, attend, grads)?;
        // dh += the input norm's gradient (dh now that of the layer's input).
        let name = format!("{p}.d_h_in");
        rmsnorm::backward_into(g, &name, dh, d_norm, s.h_in, l.input_norm, s.rstd)?;
        Ok(())
    }

    /// Loss of `input_ids` [tokens] (sequences of `seq_len`) against `targets` [tokens] (the
    /// next token, or IGNORE) and the gradients of the adapter, the lm-head `chunk` vocabulary
    /// rows at a time. With `checkpointing`, only each layer's input is kept from the forward
    /// and the layer's forward runs again just before its backward: one more forward pass, for
    /// the activations of one layer at a time instead of all of them. With `scored`, `targets`
    /// are [capacity], for the gathered rows only.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        g: &mut Graph,
        input_ids: TensorId,
        targets: TensorId,
        scored: Option<ScoredRows>,
        seq_len: usize,
        chunk: usize,
        checkpointing: bool,
    ) -> Result<TrainStep, GraphError> {
        let attend = Attend::Sequences(seq_len);
        self.train_step_attending(g, input_ids, targets, scored, attend, chunk, checkpointing)
    }

    /// `train_step` with its tokens attending as `attend` says: sequences, or packed rows
    /// (`Transformer::packed_attend`: several examples a row, each seeing only itself, RoPE
    /// positions from 0 in each), whose backward runs the masked attention kernels.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_attending(
        &self,
        g: &mut Graph,
        input_ids: TensorId,
        targets: TensorId,
        scored: Option<ScoredRows>,
        attend: Attend,
        chunk: usize,
        checkpointing: bool,
    ) -> Result<TrainStep, GraphError> {
        if let Attend::Cached { .. } = attend {
            return Err(GraphError::ShapeMismatch {
                op: "train_step".into(),
                detail: "a training step attends sequences or packed rows, not a KV cache".into(),
            });
        }
        // Forward. With checkpointing nothing reads a layer's activations again, so the planner
        // reuses their buffers for the next layer; each layer's input stays alive, and on the
        // portable path its adapters' x·Aᵀ too (r columns a token each, 13 MB for SmolLM2 at
        // 4 × 256, r 16): seven products a layer that the recomputation need not dispatch again.
        // A GPU pays for dispatches more than for those megabytes; software devices, whose
        // texture kernels make the products cheap, keep the step under its 400 MB plan.
        let keep_products = checkpointing && select::keep_adapter_products(&g.kernels);
        let h0 = self.embed_tokens(g, input_ids)?;
        let mut saved: Vec<Option<LayerSaved>> = Vec::with_capacity(self.layers.len());
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut products = Vec::with_capacity(self.layers.len());
        let (h, (h_final, rstd_final)) = self.layers_forward(
            g,
            h0,
            |_, _| Ok(attend),
            |_, input, layer| {
                inputs.push(input);
                products.push(keep_products.then(|| layer.adapter_products()));
                saved.push((!checkpointing).then_some(layer));
            },
        )?;
        let h_scored = match scored {
            Some(rows) => embedding::gather(g, "h_scored", rows.positions, h_final)?,
            None => h_final,
        };
        let loss = lm_head_loss_parts(g, "loss", h_scored, &self.lm_head, targets, chunk)?;

        // Backward.
        let d_final = match scored {
            Some(rows) => embedding::gather(g, "d_h_final", rows.slots, loss.d_hidden)?,
            None => loss.d_hidden,
        };
        let mut grads = Vec::new();
        let dh = rmsnorm::backward(g, "d_h_last", d_final, h, self.norm, rstd_final)?;
        for (i, l) in self.layers.iter().enumerate().rev() {
            let p = format!("layers.{i}");
            let s = match saved[i] {
                Some(s) => s,
                None => {
                    let again = format!("{p}.again");
                    self.layer_recompute(g, l, &again, inputs[i], attend, products[i])?
                }
            };
            self.layer_backward(g, l, &p, dh, s, attend, &mut grads)?;
        }
        Ok(TrainStep {
            loss: loss.loss,
            hidden: h_final,
            grads,
        })
    }
}

/// A module's backward, recording its adapter's gradients under the parameters' names.
#[allow(clippy::too_many_arguments)]
fn backward(
    g: &mut Graph,
    module: &Module,
    name: &str,
    dy: TensorId,
    saved: ModuleSaved,
    dx_into: Option<TensorId>,
    grads: &mut Vec<(String, TensorId)>,
) -> Result<TensorId, GraphError> {
    let (dx, lora) = module.backward(g, name, dy, saved, dx_into)?;
    if let (Some(LoraGrads { a, b, magnitude }), Some(factors)) = (lora, module.lora) {
        let a_name = g.tensor(factors.a).name.clone();
        // An A shared by a fused module's parts: its gradient is the sum of theirs.
        match grads.iter().position(|(n, _)| *n == a_name) {
            Some(i) => grads[i].1 = residual::add(g, &format!("{name}.d_a_sum"), grads[i].1, a)?,
            None => grads.push((a_name, a)),
        }
        grads.push((g.tensor(factors.b).name.clone(), b));
        if let (Some(dm), Some(d)) = (magnitude, factors.dora) {
            grads.push((g.tensor(d.magnitude).name.clone(), dm));
        }
    }
    Ok(dx)
}
