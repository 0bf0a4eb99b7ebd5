//! LoRA adapters: configuration, PEFT-format files, llama.cpp GGUF LoRA files, merging.

pub mod gguf_lora;
pub mod gguf_merge;
pub mod init;
#[cfg(not(target_arch = "wasm32"))]
pub mod merge;
pub mod ollama;
pub mod peft;

/// The seven linear modules of a Llama layer, the QLoRA paper's default targets.
pub const ALL_LINEAR: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Every name `target_modules` may hold for some family: the seven, and the fused modules
/// (Phi-3's qkv_proj, gate_up_proj). Which a model has is `LoraConfig::for_family`'s check.
pub fn module_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALL_LINEAR.to_vec();
    for f in crate::model::family::FAMILIES {
        for m in f.lora_modules() {
            if !names.contains(&m) {
                names.push(m);
            }
        }
    }
    names
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names (the last component of the module path), e.g. "q_proj".
    pub target_modules: Vec<String>,
    /// Scale by alpha / sqrt(r) instead of alpha / r.
    pub use_rslora: bool,
    /// DoRA (PEFT's use_dora): a trained magnitude per output over the adapted weight's row
    /// norm (`ops::dora`).
    pub use_dora: bool,
    pub base_model_name_or_path: String,
}

impl LoraConfig {
    /// These settings for a model of `family`: all seven linears (the default) become the
    /// family's modules (Phi-3's qkv_proj, o_proj, gate_up_proj, down_proj); a target the
    /// family lacks is refused, naming the module that holds it.
    pub fn for_family(&self, family: &crate::model::family::Family) -> Result<LoraConfig, String> {
        let modules = family.lora_modules();
        let mut out = self.clone();
        let all_seven = ALL_LINEAR
            .iter()
            .all(|m| self.target_modules.iter().any(|t| t == m));
        if all_seven && !family.fused.is_empty() {
            out.target_modules = modules.iter().map(|m| m.to_string()).collect();
            out.target_modules.sort();
        }
        for t in &out.target_modules {
            if modules.contains(&t.as_str()) {
                continue;
            }
            let model_type = family.model_types[0];
            let holder = family
                .fused
                .iter()
                .find(|f| f.parts.iter().any(|p| p.ends_with(&format!(".{t}"))));
            return Err(match holder {
                Some(f) => format!(
                    "target module '{t}': {model_type} holds it inside '{}' (its files and \
                     adapters fuse {}); adapt '{}'",
                    f.short(),
                    f.parts.join(", "),
                    f.short()
                ),
                None => format!(
                    "target module '{t}' is no module of {model_type} ({})",
                    modules.join(", ")
                ),
            });
        }
        if out.use_dora {
            if let Some(f) = family
                .fused
                .iter()
                .find(|f| out.target_modules.iter().any(|t| t == f.short()))
            {
                return Err(format!(
                    "DoRA on {}'s fused module '{}' is not supported (adapt it with LoRA, or \
                     leave it out of the targets)",
                    family.model_types[0],
                    f.short()
                ));
            }
        }
        Ok(out)
    }

    /// The factor on B·A·x: alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// PEFT's name of a LoRA tensor: `base_model.model.<module path>.lora_A.weight`.
pub fn peft_name(module_path: &str, which: char) -> String {
    format!("base_model.model.{module_path}.lora_{which}.weight")
}

/// PEFT's name of a DoRA magnitude: `base_model.model.<module path>.lora_magnitude_vector`.
pub fn peft_magnitude_name(module_path: &str) -> String {
    format!("base_model.model.{module_path}.lora_magnitude_vector")
}

/// The suffix of a DoRA magnitude's PEFT name.
pub const MAGNITUDE_SUFFIX: &str = ".lora_magnitude_vector";

/// The name of the frozen ‖W_j‖² of the base weight `weight_name` that DoRA's norm reads
/// (computed at load from the weight as the GPU holds it).
pub fn base_norms2_name(weight_name: &str) -> String {
    format!("{weight_name}.dora_row_norms2")
}

/// W += scale · B·A with W [out, in], B [out, r], A [r, in].
pub fn add_lora(w: &mut [f32], a: &[f32], b: &[f32], out: usize, inp: usize, r: usize, scale: f32) {
    for o in 0..out {
        let row = &mut w[o * inp..(o + 1) * inp];
        for k in 0..r {
            let s = scale * b[o * r + k];
            for (wi, ai) in row.iter_mut().zip(&a[k * inp..(k + 1) * inp]) {
                *wi += s * ai;
            }
        }
    }
}
