//! Causal attention with grouped-query heads, flash style: the forward saves only each query
//! row's log-sum-exp; the backward recomputes probabilities. q [tokens, heads, head_dim],
//! k and v [tokens, kv_heads, head_dim]; tokens are `batch` sequences of `seq_len`. The
//! portable path runs FlashAttention-2 tiles (`FLASH_*`: keys and values, or queries, staged
//! in workgroup memory for a block of rows of a kv group); software devices run texture
//! kernels (`ops::software::attention`) or, where textures do not fit, a row an invocation.

use super::select::{self, AttentionKey, AttentionSelect, FLASH_ROWS};
use super::software::attention::*;
use super::software::pack::{pack_f32, Strided};
use crate::graph::{
    shape_str, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId, TextureId,
};

mod kernels;
mod reference;

pub use kernels::*;
pub use reference::*;

/// What one token of a packed row may attend: keys from `first` up to itself whose branch is
/// 0 or its own, and on sliding-window layers whose position is less than the window before
/// its own (see attention_forward_masked.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenMask {
    pub first: usize,
    pub branch: u32,
    /// The token's position in its sequence (RoPE's), for sliding windows.
    pub position: usize,
}

impl TokenMask {
    /// Whether query `t` (with this mask) attends key `j` (with `key`) under `window`.
    pub fn sees(&self, t: usize, j: usize, key: &TokenMask, window: Option<usize>) -> bool {
        self.first <= j
            && j <= t
            && (key.branch == 0 || key.branch == self.branch)
            && window.is_none_or(|w| self.position.saturating_sub(key.position) < w)
    }

    /// The mask tensor's values, [tokens, 4] f32: (first, branch, position, 0) a token.
    pub fn values(mask: &[TokenMask]) -> Vec<f32> {
        mask.iter()
            .flat_map(|m| [m.first as f32, m.branch as f32, m.position as f32, 0.0])
            .collect()
    }

    /// Plain causal sequences of `seq_len`: what `forward` computes.
    pub fn sequences(tokens: usize, seq_len: usize) -> Vec<TokenMask> {
        (0..tokens)
            .map(|t| TokenMask {
                first: t - t % seq_len,
                branch: 0,
                position: t % seq_len,
            })
            .collect()
    }
}

/// How scores are made: `scale` · q·k (1/√head_dim, or Gemma's 1/√query_pre_attn_scalar), and
/// on sliding-window layers only keys less than `window` positions back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    pub scale: f32,
    pub window: Option<usize>,
}

impl Scores {
    /// 1/√head_dim over every earlier key.
    pub fn standard(head_dim: usize) -> Scores {
        Scores {
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
        }
    }

    /// The window as the shaders take it: 0xffffffff for none (a window of 0 sees nothing and
    /// is refused where configs are read).
    pub fn window_param(&self) -> u32 {
        self.window
            .map_or(u32::MAX, |w| w.clamp(1, u32::MAX as usize) as u32)
    }
}

/// The shape of one attention: heads and sizes, checked against the tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub tokens: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scores: Scores,
}

impl AttentionShape {
    fn of(
        g: &Graph,
        name: &str,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        seq_len: usize,
        scores: Scores,
    ) -> Result<Self, GraphError> {
        let (qs, ks, vs) = (&g.tensor(q).shape, &g.tensor(k).shape, &g.tensor(v).shape);
        let bad = |why: &str| GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "q {}, k {}, v {} (sequences of {seq_len}): {why}",
                shape_str(qs),
                shape_str(ks),
                shape_str(vs)
            ),
        };
        let (&[tokens, heads, head_dim], &[kt, kv_heads, kd]) = (&qs[..], &ks[..]) else {
            return Err(bad("q, k and v must be [tokens, heads, head_dim]"));
        };
        if ks != vs || kt != tokens || kd != head_dim {
            return Err(bad("k and v must match q in tokens and head_dim"));
        }
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(bad("heads must be a multiple of kv heads"));
        }
        if head_dim % 4 != 0 || head_dim > MAX_HEAD_DIM {
            return Err(bad("head_dim must be a multiple of 4, at most 256"));
        }
        if seq_len == 0 || tokens % seq_len != 0 {
            return Err(bad("tokens must be whole sequences"));
        }
        Ok(AttentionShape {
            tokens,
            seq_len,
            heads,
            kv_heads,
            head_dim,
            scores,
        })
    }

    /// The shaders' `HEAD_DIM` override (their loops over it must unroll; see the shaders).
    fn constants(&self) -> [(&'static str, f64); 1] {
        [("HEAD_DIM", self.head_dim as f64)]
    }

    fn params(&self) -> Params {
        Params::new()
            .u32(self.tokens as u32)
            .u32(self.seq_len as u32)
            .u32(self.heads as u32)
            .u32(self.kv_heads as u32)
            .u32(self.head_dim as u32)
            .f32(self.scores.scale)
            .u32(self.scores.window_param())
    }
}

impl AttentionShape {
    /// The kernels that run this attention (`select::attention`).
    fn key(&self, g: &Graph) -> AttentionKey {
        let a = AttentionSelect {
            tokens: self.tokens,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            windowed: self.scores.window.is_some(),
        };
        select::attention(&g.kernels, a)
    }

    /// The flash forward's and dq's dispatch: kv_heads times the blocks of 64 / group tokens.
    fn flash_query_blocks(&self) -> Dispatch {
        let block_tokens = FLASH_ROWS / (self.heads / self.kv_heads);
        Dispatch::Linear((self.kv_heads * self.tokens.div_ceil(block_tokens)) as u32)
    }

    /// The flash forward's and dq's constants: head_dim and the keys a tile holds (1,920 f32
    /// of keys and of values, the two with the masked kernels' key branches and positions
    /// within WebGPU's guaranteed 16 KiB of workgroup memory), at most 64.
    fn flash_key_constants(&self) -> [(&'static str, f64); 2] {
        let keys = (1920 / self.head_dim).min(FLASH_ROWS);
        [("HEAD_DIM", self.head_dim as f64), ("KEYS", keys as f64)]
    }

    /// The queries a dkv tile holds: 1,920 f32 of queries and of output gradients (with the
    /// tile's log-sum-exps, deltas and first keys), at most 64.
    fn flash_queries(&self) -> usize {
        (1920 / self.head_dim).min(FLASH_ROWS)
    }

    /// dkv's constants: head_dim and the queries a tile holds.
    fn flash_query_constants(&self) -> [(&'static str, f64); 2] {
        [
            ("HEAD_DIM", self.head_dim as f64),
            ("QUERIES", self.flash_queries() as f64),
        ]
    }

    /// dkv's dispatch: kv_heads times the blocks of 64 keys.
    fn flash_key_blocks(&self) -> Dispatch {
        Dispatch::Linear((self.kv_heads * self.tokens.div_ceil(FLASH_ROWS)) as u32)
    }
}

/// The largest head_dim the kernels take (their private rows are 64 vec4s; Gemma 3's is 256).
pub const MAX_HEAD_DIM: usize = 256;

impl AttentionShape {
    /// Whether the texture kernels run this attention (software path, textures that fit).
    fn on_textures(&self, g: &Graph) -> bool {
        matches!(self.key(g), AttentionKey::Textures { .. })
    }

    /// The texture kernel to run, with its dispatch and constants: `sg_kernel` (same bindings
    /// and textures) on a grid of 32 rows (queries or keys) by `heads` where the subgroup
    /// kernels apply, else `kernel` on `dispatch` with head_dim as a constant.
    fn texture_kernel(
        &self,
        g: &Graph,
        (kernel, dispatch): (&'static Kernel, Dispatch),
        sg_kernel: &'static Kernel,
        heads: usize,
    ) -> (&'static Kernel, Dispatch, Vec<(&'static str, f64)>) {
        if self.key(g) == (AttentionKey::Textures { eight_lanes: true }) {
            let queue = Dispatch::tile_queue(self.tokens.div_ceil(32) * heads);
            (sg_kernel, queue, Vec::new())
        } else {
            (kernel, dispatch, self.constants().to_vec())
        }
    }
}

/// Pack a [rows, width] tensor (row-major) into the texture of `slot`.
fn pack_rows(
    g: &mut Graph,
    label: &str,
    t: TensorId,
    width: usize,
    slot: u8,
) -> Result<TextureId, GraphError> {
    let rows = g.tensor(t).numel() / width;
    let src = Strided {
        tensor: t,
        offset: 0,
        rows,
        k: width,
        row_stride: width,
        k_stride: 1,
    };
    pack_f32(g, label, src, slot)
}

/// The three inputs of an attention.
#[derive(Clone, Copy, Debug)]
pub struct Qkv {
    pub q: TensorId,
    pub k: TensorId,
    pub v: TensorId,
}

/// What the forward keeps for the backward: the output and each query row's log-sum-exp.
#[derive(Clone, Copy, Debug)]
pub struct Saved {
    pub out: TensorId,
    pub lse: TensorId,
}

/// The attention of `qkv` over sequences of `seq_len`: `out` named `name`, `lse` `<name>_lse`.
pub fn forward(
    g: &mut Graph,
    name: &str,
    qkv: Qkv,
    seq_len: usize,
    scores: Scores,
) -> Result<Saved, GraphError> {
    let s = AttentionShape::of(g, name, qkv.q, qkv.k, qkv.v, seq_len, scores)?;
    let out = g.temp(name, &[s.tokens, s.heads, s.head_dim], DType::F32);
    let lse = g.temp(&format!("{name}_lse"), &[s.tokens, s.heads], DType::F32);
    if s.key(g) == AttentionKey::Flash {
        let constants = s.flash_key_constants();
        let (tensors, dispatch) = ([qkv.q, qkv.k, qkv.v, out, lse], s.flash_query_blocks());
        g.push_specialized(
            name,
            &FLASH_FORWARD,
            &tensors,
            s.params(),
            dispatch,
            &constants,
        )?;
        return Ok(Saved { out, lse });
    }
    let dispatch = Dispatch::linear(s.tokens * s.heads, 64);
    if s.on_textures(g) {
        let (kernel, dispatch, constants) =
            s.texture_kernel(g, (&FORWARD_TEX, dispatch), &FORWARD_TEX_SG, s.heads);
        let k_tex = pack_rows(g, name, qkv.k, s.head_dim, 1)?;
        let v_tex = pack_rows(g, name, qkv.v, s.head_dim, 2)?;
        g.push_with_textures_specialized(
            name,
            kernel,
            &[qkv.q, out, lse],
            &[k_tex, v_tex],
            s.params(),
            dispatch,
            &constants,
        )?;
        return Ok(Saved { out, lse });
    }
    let tensors = [qkv.q, qkv.k, qkv.v, out, lse];
    g.push_specialized(
        name,
        &FORWARD,
        &tensors,
        s.params(),
        dispatch,
        &s.constants(),
    )?;
    Ok(Saved { out, lse })
}

/// The attention of `qkv` over packed rows with a per-token `mask` [tokens, 4] f32
/// (`TokenMask::values`): `out` named `name`, `lse` `<name>_lse`. Forward only (scoring).
pub fn forward_masked(
    g: &mut Graph,
    name: &str,
    qkv: Qkv,
    mask: TensorId,
    scores: Scores,
) -> Result<Saved, GraphError> {
    let tokens = g.tensor(qkv.q).shape.first().copied().unwrap_or(0);
    let s = AttentionShape::of(g, name, qkv.q, qkv.k, qkv.v, tokens.max(1), scores)?;
    let ms = g.tensor(mask).shape.clone();
    if ms != [s.tokens, 4] || g.tensor(mask).dtype != DType::F32 {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "mask '{}' is {} {}, not f32 [{}, 4]",
                g.tensor(mask).name,
                g.tensor(mask).dtype,
                shape_str(&ms),
                s.tokens
            ),
        });
    }
    let out = g.temp(name, &[s.tokens, s.heads, s.head_dim], DType::F32);
    let lse = g.temp(&format!("{name}_lse"), &[s.tokens, s.heads], DType::F32);
    if s.key(g) == AttentionKey::Flash {
        let tensors = [qkv.q, qkv.k, qkv.v, mask, out, lse];
        let (dispatch, constants) = (s.flash_query_blocks(), s.flash_key_constants());
        let kernel = &FLASH_FORWARD_MASKED;
        g.push_specialized(name, kernel, &tensors, s.params(), dispatch, &constants)?;
        return Ok(Saved { out, lse });
    }
    let dispatch = Dispatch::linear(s.tokens * s.heads, 64);
    if s.on_textures(g) {
        let k_tex = pack_rows(g, name, qkv.k, s.head_dim, 1)?;
        let v_tex = pack_rows(g, name, qkv.v, s.head_dim, 2)?;
        let mask_tex = pack_rows(g, name, mask, 4, 3)?;
        g.push_with_textures_specialized(
            name,
            &FORWARD_MASKED_TEX,
            &[qkv.q, out, lse],
            &[k_tex, v_tex, mask_tex],
            s.params(),
            dispatch,
            &s.constants(),
        )?;
        return Ok(Saved { out, lse });
    }
    g.push_specialized(
        name,
        &FORWARD_MASKED,
        &[qkv.q, qkv.k, qkv.v, mask, out, lse],
        s.params(),
        dispatch,
        &s.constants(),
    )?;
    Ok(Saved { out, lse })
}

/// The backward of `forward_masked`: (dq, dk, dv), named `<name>_q`, `<name>_k`, `<name>_v`,
/// for the output gradient `d_out`; `mask` as the forward took it (its `first` never decreasing
/// along the row: packed examples, question groups). The deltas, then dq, then dk and dv (one
/// kernel, twice): FlashAttention-2 tiles on the portable path, a row an invocation on
/// software devices.
#[allow(clippy::too_many_arguments)]
pub fn backward_masked(
    g: &mut Graph,
    name: &str,
    qkv: Qkv,
    saved: Saved,
    d_out: TensorId,
    mask: TensorId,
    scores: Scores,
) -> Result<Qkv, GraphError> {
    let Qkv { q, k, v } = qkv;
    let tokens = g.tensor(q).shape.first().copied().unwrap_or(0);
    let s = AttentionShape::of(g, name, q, k, v, tokens.max(1), scores)?;
    g.expect_same_shape(name, d_out, q)?;
    let rows = s.tokens * s.heads;
    let by_query_row = Dispatch::linear(rows, 64);
    let by_key_row = Dispatch::linear(s.tokens * s.kv_heads, 64);
    let constants = s.constants();
    let label = format!("{name}_delta");
    let delta = g.temp(&label, &[s.tokens, s.heads], DType::F32);
    let p = Params::new().u32(rows as u32).u32(s.head_dim as u32);
    let tensors = [d_out, saved.out, delta];
    g.push_specialized(label, &DELTA, &tensors, p, by_query_row, &constants)?;

    let flash = s.key(g) == AttentionKey::Flash;
    let label = format!("{name}_q");
    let dq = g.temp(&label, &[s.tokens, s.heads, s.head_dim], DType::F32);
    let tensors = [q, k, v, d_out, saved.lse, delta, mask, dq];
    let (kernel, dispatch, dq_constants) = match flash {
        true => (
            &FLASH_BACKWARD_DQ_MASKED,
            s.flash_query_blocks(),
            s.flash_key_constants().to_vec(),
        ),
        false => (&BACKWARD_DQ_MASKED, by_query_row, constants.to_vec()),
    };
    g.push_specialized(label, kernel, &tensors, s.params(), dispatch, &dq_constants)?;
    let kv_shape = [s.tokens, s.kv_heads, s.head_dim];
    let (kernel, dispatch, kv_constants) = match flash {
        // The flash kernel's tile holds at most 32 queries (their masks beside them).
        true => (
            &FLASH_BACKWARD_DKV_MASKED,
            s.flash_key_blocks(),
            vec![constants[0], ("QUERIES", s.flash_queries().min(32) as f64)],
        ),
        false => (&BACKWARD_DKV_MASKED, by_key_row, constants.to_vec()),
    };
    let mut by_key = |what: &str, dv: bool| -> Result<TensorId, GraphError> {
        let label = format!("{name}_{what}");
        let grad = g.temp(&label, &kv_shape, DType::F32);
        let tensors = [q, k, v, d_out, saved.lse, delta, mask, grad];
        let constants = [&kv_constants[..], &[("DV", f64::from(u8::from(dv)))]].concat();
        g.push_specialized(label, kernel, &tensors, s.params(), dispatch, &constants)?;
        Ok(grad)
    };
    let dk = by_key("k", false)?;
    let dv = by_key("v", true)?;
    Ok(Qkv {
        q: dq,
        k: dk,
        v: dv,
    })
}

/// (dq, dk, dv), named `<name>_q`, `<name>_k`, `<name>_v`, for the output gradient `d_out`.
pub fn backward(
    g: &mut Graph,
    name: &str,
    qkv: Qkv,
    saved: Saved,
    d_out: TensorId,
    seq_len: usize,
    scores: Scores,
) -> Result<Qkv, GraphError> {
    let Qkv { q, k, v } = qkv;
    let s = AttentionShape::of(g, name, q, k, v, seq_len, scores)?;
    g.expect_same_shape(name, d_out, q)?;
    let rows = s.tokens * s.heads;
    let by_query_row = Dispatch::linear(rows, 64);
    let constants = s.constants();

    let label = format!("{name}_delta");
    let delta = g.temp(&label, &[s.tokens, s.heads], DType::F32);
    if s.key(g) == AttentionKey::Flash {
        return flash_backward(g, name, qkv, saved, d_out, delta, &s);
    }
    let p = Params::new().u32(rows as u32).u32(s.head_dim as u32);
    let tensors = [d_out, saved.out, delta];
    g.push_specialized(label, &DELTA, &tensors, p, by_query_row, &constants)?;

    let label = format!("{name}_q");
    let dq = g.temp(&label, &[s.tokens, s.heads, s.head_dim], DType::F32);
    let kv_shape = [s.tokens, s.kv_heads, s.head_dim];
    let dk = g.temp(&format!("{name}_k"), &kv_shape, DType::F32);
    let dv = g.temp(&format!("{name}_v"), &kv_shape, DType::F32);
    let by_key_row = Dispatch::linear(s.tokens * s.kv_heads, 64);
    if s.on_textures(g) {
        let dq_choice = (&BACKWARD_DQ_TEX, by_query_row);
        let (dq_kernel, dq_dispatch, dq_constants) =
            s.texture_kernel(g, dq_choice, &BACKWARD_DQ_TEX_SG, s.heads);
        let dkv_choice = (&BACKWARD_DKV_TEX, by_key_row);
        let (dkv_kernel, dkv_dispatch, dkv_constants) =
            s.texture_kernel(g, dkv_choice, &BACKWARD_DKV_TEX_SG, s.kv_heads);
        let k_tex = pack_rows(g, &label, k, s.head_dim, 1)?;
        let v_tex = pack_rows(g, &label, v, s.head_dim, 2)?;
        g.push_with_textures_specialized(
            label,
            dq_kernel,
            &[q, d_out, saved.lse, delta, dq],
            &[k_tex, v_tex],
            s.params(),
            dq_dispatch,
            &dq_constants,
        )?;
        let label = format!("{name}_kv");
        let textures = [
            pack_rows(g, &label, q, s.head_dim, 0)?,
            pack_rows(g, &label, d_out, s.head_dim, 3)?,
            pack_rows(g, &label, saved.lse, 1, 4)?,
            pack_rows(g, &label, delta, 1, 5)?,
        ];
        g.push_with_textures_specialized(
            label,
            dkv_kernel,
            &[k, v, dk, dv],
            &textures,
            s.params(),
            dkv_dispatch,
            &dkv_constants,
        )?;
        return Ok(Qkv {
            q: dq,
            k: dk,
            v: dv,
        });
    }
    let tensors = [q, k, v, d_out, saved.lse, delta, dq];
    g.push_specialized(
        label,
        &BACKWARD_DQ,
        &tensors,
        s.params(),
        by_query_row,
        &constants,
    )?;

    let tensors = [q, k, v, d_out, saved.lse, delta, dk, dv];
    let label = format!("{name}_kv");
    g.push_specialized(
        label,
        &BACKWARD_DKV,
        &tensors,
        s.params(),
        by_key_row,
        &constants,
    )?;
    Ok(Qkv {
        q: dq,
        k: dk,
        v: dv,
    })
}

/// The flash backward: deltas and dq in one dispatch on the forward's tiles, then dk and dv.
fn flash_backward(
    g: &mut Graph,
    name: &str,
    Qkv { q, k, v }: Qkv,
    saved: Saved,
    d_out: TensorId,
    delta: TensorId,
    s: &AttentionShape,
) -> Result<Qkv, GraphError> {
    let constants = s.flash_key_constants();
    let label = format!("{name}_q");
    let dq = g.temp(&label, &[s.tokens, s.heads, s.head_dim], DType::F32);
    let tensors = [q, k, v, d_out, saved.out, saved.lse, delta, dq];
    let dispatch = s.flash_query_blocks();
    g.push_specialized(
        label,
        &FLASH_BACKWARD_DQ,
        &tensors,
        s.params(),
        dispatch,
        &constants,
    )?;

    let kv_shape = [s.tokens, s.kv_heads, s.head_dim];
    let dk = g.temp(&format!("{name}_k"), &kv_shape, DType::F32);
    let dv = g.temp(&format!("{name}_v"), &kv_shape, DType::F32);
    let tensors = [q, k, v, d_out, saved.lse, delta, dk, dv];
    let dispatch = s.flash_key_blocks();
    let label = format!("{name}_kv");
    let constants = s.flash_query_constants();
    g.push_specialized(
        label,
        &FLASH_BACKWARD_DKV,
        &tensors,
        s.params(),
        dispatch,
        &constants,
    )?;
    Ok(Qkv {
        q: dq,
        k: dk,
        v: dv,
    })
}
