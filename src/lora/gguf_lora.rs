//! llama.cpp's LoRA adapter format: a GGUF file that `llama-cli --lora`, `llama-server` and
//! Ollama's `ADAPTER` load on top of the base model's GGUF, without merging.
//!
//! What llama.cpp checks when it loads one (src/llama-adapter.cpp): `general.type` is
//! "adapter", `adapter.type` is "lora", `general.architecture` is the base model's;
//! `adapter.lora.alpha` is a float32, and the scale applied is alpha / rank with the rank
//! read from each B (ggml's ne[0]). Tensors come in pairs named after the base GGUF's tensor:
//! `blk.N.attn_q.weight.lora_a` with ggml dims [in, r] (PEFT's lora_A [r, in], the same
//! bytes) and `….lora_b` with dims [r, out] (PEFT's lora_B [out, r]).
//!
//! Two things differ from the PEFT file: names (`gguf::gguf_name_for`), and for families whose
//! GGUF files hold q and k rows permuted for llama.cpp's rotary layout (Llama, Mistral) the
//! rows of those modules' B are permuted the same way, since W·x + s·B·A·x must permute
//! like W. rsLoRA's scale alpha / √r is written as alpha' = alpha·√r, so alpha' / r is
//! the same scale.

use super::peft::Adapter;
use crate::model::family::Family;
use crate::model::gguf::{gguf_name_for, permute_rows};
use crate::model::gguf_write::{GgufValue, GgufWriter};
use crate::model::{ModelConfig, ModelError};

/// The precision of the factors in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufLoraDtype {
    F32,
    F16,
}

/// The adapter as llama.cpp's GGUF LoRA file for the base model `config` describes (its
/// architecture, head counts and module shapes; every adapted module must exist there with
/// the adapter's shapes). `adapter_name` names the adapter in errors.
pub fn gguf_lora_bytes(
    adapter: &Adapter,
    config: &ModelConfig,
    dtype: GgufLoraDtype,
    adapter_name: &str,
) -> Result<Vec<u8>, ModelError> {
    if adapter.config.use_dora {
        // llama.cpp's adapters are A and B only: a DoRA magnitude has no place there.
        return Err(ModelError::Invalid {
            path: adapter_name.to_string(),
            msg: "a DoRA adapter has no GGUF LoRA form (llama.cpp's adapters hold no \
                  magnitudes); merge it into the model instead (webqlora merge --format gguf)"
                .into(),
        });
    }
    let family = config.family();
    let base: std::collections::HashMap<String, Vec<usize>> =
        crate::model::transformer::Transformer::base_tensors(config)?
            .into_iter()
            .collect();
    let bad = |tensor: &str, expected: String, found: String| ModelError::BadTensor {
        path: adapter_name.to_string(),
        tensor: tensor.to_string(),
        expected,
        found,
    };
    let mut w = GgufWriter::new();
    w.meta("general.architecture", GgufValue::Str(family.gguf.into()));
    w.meta("general.type", GgufValue::Str("adapter".into()));
    w.meta("adapter.type", GgufValue::Str("lora".into()));
    let r = adapter.config.r;
    let alpha = adapter.config.scale() * r as f64;
    w.meta("adapter.lora.alpha", GgufValue::F32(alpha as f32));
    if !adapter.config.base_model_name_or_path.is_empty() {
        w.meta(
            "general.base_model.0.name",
            GgufValue::Str(adapter.config.base_model_name_or_path.clone()),
        );
    }
    for (name, (shape_a, a)) in &adapter.tensors {
        let Some(module) = name
            .strip_suffix(".lora_A.weight")
            .map(|m| m.strip_prefix("base_model.model.").unwrap_or(m))
        else {
            continue;
        };
        let b_name = name.replace(".lora_A.weight", ".lora_B.weight");
        let (shape_b, b) = adapter.tensors.get(&b_name).ok_or_else(|| {
            bad(
                &b_name,
                "the B factor of this A".into(),
                "no such tensor".into(),
            )
        })?;
        let weight = format!("{module}.weight");
        let Some(base_shape) = base.get(&weight) else {
            return Err(bad(
                name,
                "a factor of a linear layer of the base model".into(),
                format!("the base model has no '{weight}'"),
            ));
        };
        let (out, inp) = (base_shape[0], base_shape[1]);
        if shape_a[..] != [r, inp] || shape_b[..] != [out, r] {
            return Err(bad(
                name,
                format!("A [{r}, {inp}] and B [{out}, {r}] for '{weight}' [{out}, {inp}]"),
                format!("A {shape_a:?}, B {shape_b:?}"),
            ));
        }
        let gguf = gguf_name_for(family, &weight).ok_or_else(|| {
            bad(
                name,
                "a module llama.cpp names".into(),
                format!("'{weight}' has no GGUF name"),
            )
        })?;
        let b = match permuted_heads(family, config, module) {
            Some(heads) => permute_rows(b, heads, r),
            None => b.clone(),
        };
        let put = |w: &mut GgufWriter, n: &str, shape: &[usize], v: &[f32]| match dtype {
            GgufLoraDtype::F32 => w.tensor_f32(n, shape, v),
            GgufLoraDtype::F16 => w.tensor_f16(n, shape, v),
        };
        put(&mut w, &format!("{gguf}.lora_a"), shape_a, a);
        put(&mut w, &format!("{gguf}.lora_b"), shape_b, &b);
    }
    Ok(w.to_bytes())
}

/// The heads whose rows llama.cpp permutes in `module` (q: heads, k: kv heads), for families
/// it permutes.
fn permuted_heads(family: &Family, config: &ModelConfig, module: &str) -> Option<usize> {
    if !family.gguf_qk_permuted {
        None
    } else if module.ends_with("q_proj") {
        Some(config.num_heads)
    } else if module.ends_with("k_proj") {
        Some(config.num_kv_heads)
    } else {
        None
    }
}
