//! Compute pipelines cached by (shader, entry point, override constants). Shader modules are
//! cached by shader name. Every pipeline uses an automatic layout: bind group 0 holds the
//! kernel's bindings in the order the shader declares them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::shaders::Shader;

/// What makes two pipelines the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    /// Override constants by name, as f64 bit patterns so the key hashes.
    pub constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    pub fn new(
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Self {
        let mut constants: Vec<_> = constants.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        constants.sort();
        PipelineKey {
            shader,
            entry,
            constants,
        }
    }
}

/// The WGSL a shader module is made from. Browsers require `enable subgroups;` before subgroup
/// builtins, which naga (native) does not parse yet: the shader files leave it out and it is
/// added here for the browser.
fn module_source(shader: &Shader) -> String {
    let needs_enable =
        cfg!(target_arch = "wasm32") && shader.features.contains(wgpu::Features::SUBGROUP);
    if needs_enable {
        format!("enable subgroups;\n{}", shader.source)
    } else {
        shader.source.to_string()
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

/// A shader the device's compiler rejected: the kernel (`shader::entry`) and its words.
pub(crate) struct Rejected {
    pub kernel: String,
    pub message: String,
}

impl PipelineCache {
    /// The pipeline for `key` on `device`, compiled on first use. A shader the device's
    /// compiler rejects is an error naming the kernel (on native through an error scope; in
    /// the browser, where scopes resolve later, through `Gpu::check` when results are read).
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        shader: &Shader,
        key: &PipelineKey,
    ) -> Result<Arc<wgpu::ComputePipeline>, Rejected> {
        debug_assert_eq!(shader.name, key.shader);
        if let Some(p) = self.pipelines.lock().unwrap().get(key) {
            return Ok(p.clone());
        }
        let label = format!("{}::{}", key.shader, key.entry);
        // A backend's shader compiler reports through Internal errors, wgpu's checks through
        // Validation ones.
        #[cfg(not(target_arch = "wasm32"))]
        let scopes = [wgpu::ErrorFilter::Internal, wgpu::ErrorFilter::Validation]
            .map(|filter| device.push_error_scope(filter));
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(shader.name)
                .or_insert_with(|| {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(module_source(shader).into()),
                    })
                })
                .clone()
        };
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|&(n, bits)| (n, f64::from_bits(bits)))
            .collect();
        let pipeline = Arc::new(
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            }),
        );
        #[cfg(not(target_arch = "wasm32"))]
        let error = {
            // Popped innermost first.
            let [internal, validation] = scopes;
            let v = pollster::block_on(validation.pop());
            let i = pollster::block_on(internal.pop());
            v.or(i)
        };
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = error {
            // The module may be the broken part: compile it afresh next time.
            self.modules.lock().unwrap().remove(shader.name);
            return Err(Rejected {
                kernel: label,
                message: e.to_string(),
            });
        }
        self.pipelines
            .lock()
            .unwrap()
            .insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }

    /// How many distinct pipelines have been compiled.
    pub(crate) fn len(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }
}
