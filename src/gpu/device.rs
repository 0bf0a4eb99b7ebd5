//! Adapter enumeration and choice, and device creation with the limits and features the
//! project relies on.
//!
//! The device is created with the adapter's own limits (never the WebGPU defaults by accident:
//! the lm-head and large weights need the adapter's full storage binding size), and with the
//! optional features we use when present: `shader-f16`, `subgroups`, `timestamp-query`.

use std::fmt;
use std::str::FromStr;

use super::pipelines::{PipelineCache, PipelineKey};
use crate::shaders::Shader;

/// Optional features requested when the adapter has them. None is ever required.
pub const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// A backend the user can ask for by name (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl BackendChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(BackendChoice::Vulkan),
            "metal" | "mtl" => Ok(BackendChoice::Metal),
            "dx12" | "d3d12" => Ok(BackendChoice::Dx12),
            "gl" | "gles" | "opengl" => Ok(BackendChoice::Gl),
            other => Err(format!(
                "unknown backend '{other}': expected one of vulkan, metal, dx12, gl"
            )),
        }
    }
}

/// Which adapter to use. The default picks the best device class (discrete, integrated,
/// virtual, software) among the backends that `WGPU_BACKEND` (or `backend`) allows.
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    /// Index into the list that `webqlora devices` prints.
    pub index: Option<usize>,
    pub backend: Option<BackendChoice>,
}

/// How kernels should be shaped for this device (see DESIGN: software devices favour wide
/// register tiles without barriers, discrete GPUs favour shared-memory tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceClass {
    Software,
    Discrete,
    Integrated,
    Other,
}

impl DeviceClass {
    pub fn of(info: &wgpu::AdapterInfo) -> Self {
        let name = info.name.to_ascii_lowercase();
        let software_name = ["llvmpipe", "lavapipe", "swiftshader", "warp", "softpipe"]
            .iter()
            .any(|s| name.contains(s));
        match info.device_type {
            wgpu::DeviceType::Cpu => DeviceClass::Software,
            _ if software_name => DeviceClass::Software,
            wgpu::DeviceType::DiscreteGpu => DeviceClass::Discrete,
            wgpu::DeviceType::IntegratedGpu => DeviceClass::Integrated,
            _ => DeviceClass::Other,
        }
    }

    /// Preference when no adapter is named: higher is better.
    pub fn rank(self) -> u8 {
        match self {
            DeviceClass::Discrete => 3,
            DeviceClass::Integrated => 2,
            DeviceClass::Other => 1,
            DeviceClass::Software => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found for backends {backends:?}; {available}")]
    NoAdapter {
        backends: wgpu::Backends,
        /// What the machine does have, or how to get a software GPU when it has nothing.
        available: String,
    },
    #[error(
        "adapter index {index} does not exist: {count} adapter(s) found (see `webqlora devices`)"
    )]
    BadAdapterIndex { index: usize, count: usize },
    #[error("could not create a device on '{adapter}': {source}")]
    RequestDevice {
        adapter: String,
        source: wgpu::RequestDeviceError,
    },
    #[error("GPU buffer map failed: {0}")]
    Map(String),
    #[error("kernel '{kernel}' does not compile on '{device}': {message}")]
    Kernel {
        kernel: String,
        device: String,
        message: String,
    },
    #[error("the GPU '{device}' reported an error: {message}")]
    Device { device: String, message: String },
    #[error(transparent)]
    Kernels(#[from] crate::kernels::KernelsEnvError),
    #[error("{var}={value:?}: {expected}")]
    Environment {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// The environment variables that choose backends and kernels, checked before a device is
/// opened: a value none of them takes is named, never ignored (wgpu alone would drop an
/// unknown `WGPU_BACKEND` name with a log line and find no adapter).
pub fn check_environment() -> Result<(), GpuError> {
    if let Ok(value) = std::env::var("WGPU_BACKEND") {
        const NAMES: [&str; 11] = [
            "vulkan", "vk", "dx12", "d3d12", "metal", "mtl", "opengl", "gles", "gl", "webgpu",
            "noop",
        ];
        let known = value
            .to_lowercase()
            .split(',')
            .all(|b| NAMES.contains(&b.trim()));
        if !known {
            return Err(GpuError::Environment {
                var: "WGPU_BACKEND",
                value,
                expected: "expected a comma-separated list of vulkan, metal, dx12, gl",
            });
        }
    }
    for var in [
        "WEBQLORA_TEXTURES",
        "WEBQLORA_SUBGROUPS",
        "WEBQLORA_F16_TILES",
    ] {
        if let Ok(value) = std::env::var(var) {
            if value != "0" && value != "1" {
                return Err(GpuError::Environment {
                    var,
                    value,
                    expected: "expected 0 (off) or 1 (on, where the device allows)",
                });
            }
        }
    }
    Ok(())
}

/// Errors the device reports outside any error scope (validation, out of memory, a lost
/// device), kept for `Gpu::check` instead of wgpu's default handler, which panics.
#[derive(Clone, Default)]
pub(crate) struct ErrorSlot(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl ErrorSlot {
    fn record(&self, message: String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The first error is the cause; later ones usually follow from it.
        slot.get_or_insert(message);
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn peek(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The backends allowed by a request: `--backend` wins, then `WGPU_BACKEND`, then all.
pub fn allowed_backends(request: &AdapterRequest) -> wgpu::Backends {
    match request.backend {
        Some(b) => b.backends(),
        None => wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()),
    }
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds for the allowed backends, in a stable order, with the index of the
/// one `request` would choose.
#[cfg(not(target_arch = "wasm32"))]
pub async fn enumerate(request: &AdapterRequest) -> (Vec<wgpu::Adapter>, Option<usize>) {
    let backends = allowed_backends(request);
    let instance = new_instance(backends);
    let adapters = instance.enumerate_adapters(backends).await;
    let chosen = match request.index {
        Some(i) if i < adapters.len() => Some(i),
        Some(_) => None,
        None => best_adapter(&adapters),
    };
    (adapters, chosen)
}

#[cfg(not(target_arch = "wasm32"))]
fn best_adapter(adapters: &[wgpu::Adapter]) -> Option<usize> {
    // Rank by device class, then prefer anything over GL; max_by_key returns the last maximum,
    // so iterate reversed to let the first listed win ties.
    (0..adapters.len()).rev().max_by_key(|&i| {
        let info = adapters[i].get_info();
        (
            DeviceClass::of(&info).rank(),
            info.backend != wgpu::Backend::Gl,
        )
    })
}

#[cfg(not(target_arch = "wasm32"))]
async fn choose_adapter(request: &AdapterRequest) -> Result<wgpu::Adapter, GpuError> {
    // With nothing named, try the primary backends first: opening GL/EGL is slow and noisy and
    // only worth it where nothing better exists.
    let unrestricted = request.index.is_none()
        && request.backend.is_none()
        && wgpu::Backends::from_env().is_none();
    if unrestricted {
        let instance = new_instance(wgpu::Backends::PRIMARY);
        let adapters = instance.enumerate_adapters(wgpu::Backends::PRIMARY).await;
        if let Some(i) = best_adapter(&adapters) {
            return Ok(adapters
                .into_iter()
                .nth(i)
                .expect("index from the same list"));
        }
    }
    let (mut adapters, chosen) = enumerate(request).await;
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter {
            backends: allowed_backends(request),
            available: available_adapters().await,
        });
    }
    match chosen {
        Some(i) => Ok(adapters.swap_remove(i)),
        None => Err(GpuError::BadAdapterIndex {
            index: request.index.unwrap_or(0),
            count: adapters.len(),
        }),
    }
}

/// Every adapter on any backend, in words, for an error when the ones asked for are absent.
#[cfg(not(target_arch = "wasm32"))]
pub async fn available_adapters() -> String {
    let all = wgpu::Backends::all();
    let adapters = new_instance(all).enumerate_adapters(all).await;
    if adapters.is_empty() {
        return "this machine has no GPU adapter on any backend; without a GPU install Mesa \
                lavapipe, a software Vulkan GPU (Debian: apt-get install mesa-vulkan-drivers; \
                `cargo xtask demo` and `cargo xtask test` do this as root)"
            .into();
    }
    let names: Vec<String> = adapters
        .iter()
        .map(|a| {
            let info = a.get_info();
            format!("{} ({:?})", info.name, info.backend)
        })
        .collect();
    format!(
        "this machine has: {} (choose with --backend, see `webqlora devices`)",
        names.join(", ")
    )
}

#[cfg(target_arch = "wasm32")]
async fn choose_adapter(request: &AdapterRequest) -> Result<wgpu::Adapter, GpuError> {
    // The browser exposes one adapter per power preference; there is nothing to enumerate.
    let backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = new_instance(backends);
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    };
    let _ = request;
    instance
        .request_adapter(&options)
        .await
        .map_err(|_| GpuError::NoAdapter {
            backends,
            available: "the browser offers no WebGPU adapter (is WebGPU enabled?)".into(),
        })
}

/// A device and queue with everything the executor needs to know about them.
pub struct Gpu {
    pub info: wgpu::AdapterInfo,
    pub class: DeviceClass,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The kernels graphs for this device use, one path an op family (`crate::kernels`).
    pub kernels: crate::kernels::Kernels,
    pub(crate) pipelines: PipelineCache,
    errors: ErrorSlot,
    /// Why the device was lost, once it is (destroyed too); it stays lost.
    lost: ErrorSlot,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("class", &self.class)
            .finish()
    }
}

impl Gpu {
    /// The pipeline for `key`, compiled on first use. A shader the device's compiler rejects
    /// is an error naming the kernel and the device.
    pub fn pipeline(
        &self,
        shader: &Shader,
        key: &PipelineKey,
    ) -> Result<std::sync::Arc<wgpu::ComputePipeline>, GpuError> {
        self.pipelines
            .get(&self.device, shader, key)
            .map_err(|r| GpuError::Kernel {
                kernel: r.kernel,
                device: self.describe(),
                message: r.message,
            })
    }

    /// How many distinct pipelines have been compiled (for tests and `--verbose`).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }

    /// Choose an adapter and open a device with its full limits and our optional features.
    pub async fn new(request: &AdapterRequest) -> Result<Gpu, GpuError> {
        check_environment()?;
        let adapter = choose_adapter(request).await?;
        Self::from_adapter(adapter).await
    }

    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu, GpuError> {
        let info = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES;
        let kernels = crate::kernels::Kernels::for_device(&crate::kernels::Capabilities::of(
            &info,
            &adapter.limits(),
            features,
        ))?;
        let desc = wgpu::DeviceDescriptor {
            label: Some("webqlora"),
            required_features: features,
            required_limits: adapter.limits(),
            ..Default::default()
        };
        let (device, queue) =
            adapter
                .request_device(&desc)
                .await
                .map_err(|source| GpuError::RequestDevice {
                    adapter: info.name.clone(),
                    source,
                })?;
        let errors = ErrorSlot::default();
        let slot = errors.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            slot.record(e.to_string())
        }));
        let slot = errors.clone();
        let lost = ErrorSlot::default();
        let lost_slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = format!("the device was lost ({reason:?}): {message}");
            if reason != wgpu::DeviceLostReason::Destroyed {
                slot.record(why.clone());
            }
            lost_slot.record(why);
        });
        Ok(Gpu {
            errors,
            lost,
            class: DeviceClass::of(&info),
            kernels,
            limits: device.limits(),
            features: device.features(),
            info,
            device,
            queue,
            pipelines: PipelineCache::default(),
        })
    }

    /// Blocking constructor for native code and tests.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(request: &AdapterRequest) -> Result<Gpu, GpuError> {
        pollster::block_on(Self::new(request))
    }

    /// The first error the device reported since the last check (a failed validation, out of
    /// memory, a lost device), naming the device. Work submitted before an error cannot be
    /// trusted: results are read only after this passes (`read_bytes` calls it).
    pub fn check(&self) -> Result<(), GpuError> {
        match self.lost().or_else(|| self.errors.take()) {
            None => Ok(()),
            Some(message) => Err(GpuError::Device {
                device: self.describe(),
                message,
            }),
        }
    }

    /// Why the device was lost, once it is: the browser resets GPUs (a driver update, a hung
    /// queue, too many tabs), and `GPUDevice.destroy()` ends one. Nothing more runs on it; a
    /// caller that wants to go on opens a new `Gpu`.
    pub fn lost(&self) -> Option<String> {
        self.lost.peek()
    }

    /// The adapter's name and backend, as errors show them.
    pub fn describe(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// What this device offers that the kernel choice depends on.
    pub fn capabilities(&self) -> crate::kernels::Capabilities {
        crate::kernels::Capabilities::of(&self.info, &self.limits, self.features)
    }

    pub fn has(&self, feature: wgpu::Features) -> bool {
        self.features.contains(feature)
    }

    /// Whether the device's subgroups are always eight lanes wide (the `*_tex_sg` kernels
    /// broadcast from lanes 0..8).
    pub fn has_eight_lane_subgroups(&self) -> bool {
        self.has(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size == 8
            && self.info.subgroup_max_size == 8
    }

    /// Let the device make progress: on native this waits for submitted work and fires map
    /// callbacks; in the browser the event loop does it and this is a no-op.
    pub fn poll_wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            // A poll error here means the device was lost; the pending map callback reports it.
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!("Vulkan".parse(), Ok(BackendChoice::Vulkan));
        assert_eq!("dx12".parse(), Ok(BackendChoice::Dx12));
        assert_eq!("gles".parse(), Ok(BackendChoice::Gl));
        let err = "cuda".parse::<BackendChoice>().unwrap_err();
        assert!(err.contains("unknown backend 'cuda'"), "{err}");
    }

    #[test]
    fn llvmpipe_is_software() {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan);
        info.name = "llvmpipe (LLVM 15.0.6, 256 bits)".into();
        assert_eq!(DeviceClass::of(&info), DeviceClass::Software);
        info.device_type = wgpu::DeviceType::Other;
        assert_eq!(DeviceClass::of(&info), DeviceClass::Software);
    }
}
