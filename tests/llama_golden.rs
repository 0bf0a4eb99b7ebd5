//! The Llama forward pass against transformers' logits for the golden tiny Llama (f32 base,
//! with and without the PEFT adapter; tolerance from golden/README.md: 1e-4 relative), and the
//! NF4 path against the f32 path on the same dequantized weights.
//!
//! Open: on the bitsandbytes NF4 base our logits differ from `logits_base_nf4` by 3.0e-3
//! relative, uniformly over tokens, although they equal the f32 path on the dequantized
//! checkpoint (below). Not explained by plain absmax (3.2e-3) or bf16/f16 dequantization
//! (3.3e-3 / 3.1e-3); see the issue notes.

mod common;

use common::{golden, rel_err, Golden};
use webqlora::lora::peft::Adapter;
use webqlora::model::llama::BaseFormat;

/// Logits of the tiny Llama in golden `folder` for the golden input ids.
fn logits(folder: &str, base: BaseFormat, with_adapter: bool) -> Vec<f32> {
    let adapter = with_adapter.then(|| Adapter::load(&golden("tiny-llama/adapter")).unwrap());
    common::tiny_llama_logits(&golden(folder), base, adapter.as_ref())
}

fn check(got: &[f32], key: &str) {
    let want = Golden::open("tiny-llama/expected.safetensors").f32(key);
    let e = rel_err(got, &want);
    assert!(e < 1e-4, "{key}: relative error {e}");
}

const NF4: BaseFormat = BaseFormat::Nf4 { blocksize: 64 };

#[test]
fn f32_base_logits_match_transformers() {
    check(
        &logits("tiny-llama/base-f32", BaseFormat::F32, false),
        "logits_base",
    );
}

/// The NF4 kernels in the whole model give the logits of the f32 path on the weights
/// bitsandbytes' checkpoint dequantizes to (bit-identical to bitsandbytes, see nf4_golden).
#[test]
fn nf4_base_equals_the_f32_path_on_dequantized_weights() {
    let folder = "tiny-llama/base-bnb-nf4";
    let nf4 = logits(folder, NF4, false);
    // An f32 base over the bitsandbytes folder loads the dequantized weights.
    let dequantized = logits(folder, BaseFormat::F32, false);
    let e = rel_err(&nf4, &dequantized);
    assert!(e < 1e-5, "NF4 kernels vs f32 on dequantized weights: {e}");
    // And it is a quantized model: far from the f32 logits.
    let base = Golden::open("tiny-llama/expected.safetensors").f32("logits_base");
    assert!(rel_err(&nf4, &base) > 0.01);
}

#[test]
fn lora_logits_match_peft() {
    check(
        &logits("tiny-llama/base-f32", BaseFormat::F32, true),
        "logits_lora",
    );
}
