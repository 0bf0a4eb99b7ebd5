//! The Llama forward pass against transformers' logits for the golden tiny Llama (f32 base,
//! with and without the PEFT adapter; tolerance from golden/README.md: 1e-4 relative), the
//! NF4 path against the f32 path on the same dequantized weights, and the bitsandbytes NF4
//! logits, which bitsandbytes computed through its bf16 CPU kernel (`quant::bnb_cpu`).

mod common;

use common::{golden, rel_err, Golden, Tol};
use webqlora::lora::peft::Adapter;
use webqlora::model::transformer::BaseFormat;

/// Logits of the tiny Llama in golden `folder` for the golden input ids.
fn logits(folder: &str, base: BaseFormat, with_adapter: bool) -> Vec<f32> {
    let adapter = with_adapter.then(|| Adapter::load(&golden("tiny-llama/adapter")).unwrap());
    common::tiny_llama_logits(&golden(folder), base, adapter.as_ref())
}

fn check(got: &[f32], key: &str) {
    let want = Golden::open("tiny-llama/expected.safetensors").f32(key);
    Tol::GOLDEN.check(key, got, &want);
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
    Tol::F32.check(
        "NF4 kernels vs f32 on dequantized weights",
        &nf4,
        &dequantized,
    );
    // And it is a quantized model: far from the f32 logits.
    let base = Golden::open("tiny-llama/expected.safetensors").f32("logits_base");
    assert!(rel_err(&nf4, &base) > 0.01);
}

/// `logits_base_nf4` came from bitsandbytes' eval-mode CPU kernel (bf16 activations, NF4
/// values, absmax and outputs; `quant::bnb_cpu`), so the f32 path is 3.0e-3 away. With that
/// kernel reproduced on every module (bit for bit, see kernels_matmul) they come within 3.3e-4:
/// not the 1e-4 that float32 allows, because rounding every activation to bf16 turns last-bit
/// differences in the f32 operations between the products (attention, SiLU; ours and PyTorch's
/// differ there) into whole bf16 steps wherever a value lies near a rounding boundary. Run on
/// the golden tiny Llama module by module, our products agree with bitsandbytes' own kernel to
/// 3e-7 and the first such step appears where attention feeds layer 0's o_proj.
#[test]
fn nf4_base_logits_match_bitsandbytes_cpu_up_to_bf16_steps() {
    let folder = golden("tiny-llama/base-bnb-nf4");
    let bf16 = common::tiny_llama_logits_with(&folder, NF4, None, |m| m.emulate_bnb_cpu_bf16());
    let want = Golden::open("tiny-llama/expected.safetensors").f32("logits_base_nf4");
    let (e_bf16, e_f32) = (
        rel_err(&bf16, &want),
        rel_err(&logits("tiny-llama/base-bnb-nf4", NF4, false), &want),
    );
    assert!(e_bf16 < 1e-3, "bf16 path: relative error {e_bf16}");
    assert!(
        e_f32 > 5.0 * e_bf16,
        "f32 path {e_f32} vs bf16 path {e_bf16}"
    );
}

#[test]
fn lora_logits_match_peft() {
    check(
        &logits("tiny-llama/base-f32", BaseFormat::F32, true),
        "logits_lora",
    );
}

/// bitsandbytes takes its bf16 kernel where a module's input carries no gradient: every module
/// up to and including the first group (q/k/v, o, gate/up, down) with an adapter.
#[test]
fn the_bf16_kernel_goes_to_modules_before_the_first_adapter() {
    use webqlora::graph::Graph;
    use webqlora::lora::LoraConfig;
    use webqlora::model::transformer::{Linear, Transformer};
    use webqlora::ops::nf4_matmul::Nf4Compute;
    let config = webqlora::model::ModelConfig::load(&golden("tiny-llama/base-f32")).unwrap();
    let bf16_modules = |targets: &[&str]| {
        let lora = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: targets.iter().map(|t| t.to_string()).collect(),
            use_rslora: false,
            use_dora: false,
            base_model_name_or_path: String::new(),
        };
        let mut model =
            Transformer::declare(&mut Graph::new(), &config, NF4, Some(&lora), 16).unwrap();
        model.emulate_bnb_cpu_bf16();
        let mut names = Vec::new();
        for (i, l) in model.layers.iter().enumerate() {
            let modules = [
                ("q", &l.q),
                ("k", &l.k),
                ("v", &l.v),
                ("o", &l.o),
                ("gate", &l.gate),
                ("up", &l.up),
                ("down", &l.down),
            ];
            for (name, m) in modules {
                if let Linear::Nf4(w) = m.weight {
                    if w.compute == Nf4Compute::BnbCpuBf16 {
                        names.push(format!("{i}.{name}"));
                    }
                }
            }
        }
        names.join(" ")
    };
    assert_eq!(bf16_modules(&["q_proj", "v_proj"]), "0.q 0.k 0.v");
    assert_eq!(bf16_modules(&["o_proj"]), "0.q 0.k 0.v 0.o");
    assert_eq!(
        bf16_modules(&["down_proj"]),
        "0.q 0.k 0.v 0.o 0.gate 0.up 0.down"
    );
}
