//! Which kernels run where: one decision an op family, made once per device from what the
//! device can do (`Capabilities`), never from what kind of device it says it is.
//!
//! Two paths:
//! - **portable**: the kernels written for hardware GPUs (Apple, NVIDIA, AMD, Intel, any
//!   browser adapter): workgroup-memory tiles, coalesced loads, codes decoded once per tile,
//!   subgroup reductions of any width where the device has subgroups.
//! - **software**: the kernels written for CPU rasterizers (lavapipe, SwiftShader): operands
//!   packed into storage textures, which llvmpipe gathers without branches, eight-lane
//!   subgroup broadcasts, tiles taken from a queue; register-tile buffer kernels where
//!   textures cannot be used (through OpenGL, or `WEBQLORA_TEXTURES=0`).
//!
//! A software device (its adapter type is `Cpu`, or its name is a known software renderer)
//! gets the software path, every other device the portable one. `WEBQLORA_KERNELS` forces a
//! choice on any device, for tests and comparisons: `portable` or `software` for every
//! family, or per family, `matmul=portable,attention=software` (the rest as decided).
//! Graphs carry the choice (`Graph::kernels`); op builders read it and nothing else about the
//! device.

use std::fmt;

/// The op families whose kernels differ between the paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// f32 products: the LoRA terms and their gradients, the lm-head chunks.
    Matmul,
    /// NF4 dequant-matmuls: the frozen base weights.
    Nf4,
    /// Causal attention, forward and backward.
    Attention,
    /// RMSNorm forward.
    Rmsnorm,
    /// The lm-head's cross-entropy: online softmax over vocabulary chunks.
    CrossEntropy,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Matmul,
        Family::Nf4,
        Family::Attention,
        Family::Rmsnorm,
        Family::CrossEntropy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Nf4 => "nf4",
            Family::Attention => "attention",
            Family::Rmsnorm => "rmsnorm",
            Family::CrossEntropy => "cross_entropy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The kernels an op family runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Portable,
    Software,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            Path::Software => "software",
        }
    }

    fn parse(s: &str) -> Option<Path> {
        match s {
            "portable" => Some(Path::Portable),
            "software" => Some(Path::Software),
            _ => None,
        }
    }
}

/// What a device offers that the choice depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    /// A CPU rasterizer (lavapipe, SwiftShader, WARP).
    pub software: bool,
    /// Storage textures per shader stage (the texture kernels bind up to five).
    pub storage_textures: u32,
    pub max_texture_side: u32,
    /// Whether storage textures can be function parameters: not through OpenGL, where naga
    /// writes them in a form GLSL rejects.
    pub texture_parameters: bool,
    /// (min, max) subgroup sizes, where the device has subgroup operations.
    pub subgroups: Option<(u32, u32)>,
    pub shader_f16: bool,
    pub workgroup_storage_bytes: u32,
    pub invocations_per_workgroup: u32,
}

impl Capabilities {
    pub fn of(info: &wgpu::AdapterInfo, limits: &wgpu::Limits, features: wgpu::Features) -> Self {
        Capabilities {
            software: crate::gpu::DeviceClass::of(info) == crate::gpu::DeviceClass::Software,
            storage_textures: limits.max_storage_textures_per_shader_stage,
            max_texture_side: limits.max_texture_dimension_2d,
            texture_parameters: info.backend != wgpu::Backend::Gl,
            subgroups: features
                .contains(wgpu::Features::SUBGROUP)
                .then_some((info.subgroup_min_size, info.subgroup_max_size)),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        }
    }
}

/// The workgroup memory and invocations the portable kernels need: WebGPU's guaranteed
/// minimums, so every conforming device can run them.
pub const PORTABLE_WORKGROUP_BYTES: u32 = 16384;
pub const PORTABLE_INVOCATIONS: u32 = 256;

/// One path for each family, and what the chosen kernels may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernels {
    paths: [Path; 5],
    /// Software path: the largest texture side the texture kernels may use; None: the
    /// software buffer kernels only.
    pub textures: Option<u32>,
    /// Software path: whether the texture kernels may run as their eight-lane subgroup
    /// versions (`*_tex_sg`).
    pub eight_lane_subgroups: bool,
    /// Portable path: (min, max) subgroup sizes where the device has subgroups; the portable
    /// subgroup kernels work at any size from 4 to 128.
    pub subgroups: Option<(u32, u32)>,
    /// Portable path: the NF4 forward products stage their tiles in f16 (`tile_f16.wgsl`;
    /// sums stay f32), as bitsandbytes computes in its compute dtype; the backward and the
    /// f32 products stay f32 (gradients would lose bits or underflow in f16). Opt-in
    /// (`WEBQLORA_F16_TILES=1`) on devices with `shader-f16`: activations and weights are
    /// rounded to f16 and magnitudes past 65,504 overflow.
    pub f16_tiles: bool,
    /// Portable path: the f32 products' k step (`gemm_depth`: 32 where the
    /// device's workgroup memory holds it, else 16).
    pub gemm_depth: u32,
}

impl Default for Kernels {
    /// The software buffer kernels for every family: what a graph built without a device
    /// gets (tests that choose their kernels themselves start from here).
    fn default() -> Self {
        Kernels::all_software(None, false)
    }
}

/// A `WEBQLORA_KERNELS` value that is not `portable`, `software` or `family=path,...`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("WEBQLORA_KERNELS={value:?}: {reason} (expected `portable`, `software`, or per family `matmul=portable,nf4=software`; families: matmul, nf4, attention, rmsnorm, cross_entropy)")]
pub struct KernelsEnvError {
    pub value: String,
    pub reason: String,
}

impl Kernels {
    /// Every family on the software path: texture kernels up to `textures` texels a side
    /// (None: buffer kernels), their subgroup versions if `eight_lane_subgroups`.
    pub fn all_software(textures: Option<u32>, eight_lane_subgroups: bool) -> Self {
        Kernels {
            paths: [Path::Software; 5],
            textures,
            eight_lane_subgroups: eight_lane_subgroups && textures.is_some(),
            subgroups: None,
            f16_tiles: false,
            gemm_depth: 16,
        }
    }

    /// Every family on the portable path, with subgroup kernels where `subgroups` is given.
    pub fn all_portable(subgroups: Option<(u32, u32)>) -> Self {
        Kernels {
            paths: [Path::Portable; 5],
            textures: None,
            eight_lane_subgroups: false,
            subgroups: subgroups.filter(|&(lo, hi)| lo >= 4 && hi <= 128 && lo <= hi),
            f16_tiles: false,
            gemm_depth: 16,
        }
    }

    /// The choice for a device with `caps`, before any override.
    pub fn decide(caps: &Capabilities) -> Self {
        let mut k = Kernels::all_portable(caps.subgroups);
        if caps.software || !portable_fits(caps) {
            k.paths = [Path::Software; 5];
        }
        k.allow(caps);
        k
    }

    /// The choice for a device with `caps`, with `WEBQLORA_KERNELS` (and the older
    /// `WEBQLORA_TEXTURES=0`, `WEBQLORA_SUBGROUPS=0`) applied.
    pub fn for_device(caps: &Capabilities) -> Result<Self, KernelsEnvError> {
        let mut k = Kernels::decide(caps);
        if let Ok(value) = std::env::var("WEBQLORA_KERNELS") {
            k.apply(&value)?;
            k.allow(caps);
        }
        Ok(k)
    }

    /// The choice for a device with `caps` with an override in `WEBQLORA_KERNELS`'s form
    /// applied (the page takes it from its URL, `?kernels=portable`).
    pub fn with_override(caps: &Capabilities, value: &str) -> Result<Self, KernelsEnvError> {
        let mut k = Kernels::decide(caps);
        k.apply(value)?;
        k.allow(caps);
        Ok(k)
    }

    /// The default choice with `WEBQLORA_KERNELS` applied, for graphs built without a device
    /// (a bad value is reported when the device is opened, `Gpu::new`; here it is ignored).
    pub fn from_env() -> Self {
        let mut k = Kernels::default();
        if let Ok(value) = std::env::var("WEBQLORA_KERNELS") {
            let _ = k.apply(&value);
        }
        k
    }

    /// Set paths from an override: `portable`, `software` or `family=path,...`.
    pub fn apply(&mut self, value: &str) -> Result<(), KernelsEnvError> {
        let err = |reason: String| KernelsEnvError {
            value: value.to_string(),
            reason,
        };
        let value_trim = value.trim();
        if let Some(path) = Path::parse(value_trim) {
            self.paths = [path; 5];
            return Ok(());
        }
        for part in value_trim
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (family, path) = part
                .split_once('=')
                .ok_or_else(|| err(format!("'{part}' is neither a path nor family=path")))?;
            let family = Family::ALL
                .into_iter()
                .find(|f| f.name() == family.trim())
                .ok_or_else(|| err(format!("unknown family '{}'", family.trim())))?;
            let path = Path::parse(path.trim())
                .ok_or_else(|| err(format!("unknown path '{}'", path.trim())))?;
            self.paths[family.index()] = path;
        }
        Ok(())
    }

    /// What the chosen paths may use on a device with `caps`.
    fn allow(&mut self, caps: &Capabilities) {
        let off = |var: &str| std::env::var(var).is_ok_and(|v| v == "0");
        let any_software = self.paths.contains(&Path::Software);
        // Every texture operand is a storage texture (read-only where read): the plain
        // texture kernels bind up to four, WebGPU's default limit, the NF4 subgroup products
        // five.
        self.textures = (any_software
            && caps.texture_parameters
            && caps.storage_textures >= 4
            && !off("WEBQLORA_TEXTURES"))
        .then_some(caps.max_texture_side);
        self.eight_lane_subgroups = self.textures.is_some()
            && caps.subgroups == Some((8, 8))
            && caps.storage_textures >= 5
            && !off("WEBQLORA_SUBGROUPS");
        self.subgroups = caps
            .subgroups
            .filter(|&(lo, hi)| lo >= 4 && hi <= 128 && lo <= hi && !off("WEBQLORA_SUBGROUPS"));
        self.f16_tiles =
            caps.shader_f16 && std::env::var("WEBQLORA_F16_TILES").is_ok_and(|v| v == "1");
        self.gemm_depth = gemm_depth(caps.workgroup_storage_bytes);
    }

    pub fn path(&self, family: Family) -> Path {
        self.paths[family.index()]
    }

    pub fn set(&mut self, family: Family, path: Path) {
        self.paths[family.index()] = path;
    }

    pub fn portable(&self, family: Family) -> bool {
        self.path(family) == Path::Portable
    }

    /// The largest texture side `family` may use on textures (None: no texture kernels).
    pub fn textures_for(&self, family: Family) -> Option<u32> {
        self.textures
            .filter(|_| self.path(family) == Path::Software)
    }

    /// Whether `family`'s texture kernels may run as their eight-lane subgroup versions.
    pub fn eight_lanes_for(&self, family: Family) -> bool {
        self.eight_lane_subgroups && self.textures_for(family).is_some()
    }

    /// Whether `family`'s portable kernels may use subgroup operations.
    pub fn portable_subgroups(&self, family: Family) -> bool {
        self.portable(family) && self.subgroups.is_some()
    }

    /// One line a family: its path and the kernels that path takes here.
    pub fn describe(&self) -> Vec<String> {
        Family::ALL
            .into_iter()
            .map(|f| {
                let detail = match self.path(f) {
                    Path::Portable if f == Family::Rmsnorm && self.subgroups.is_some() => {
                        "subgroup reduction; after a residual add and backward a row a workgroup"
                            .to_string()
                    }
                    Path::Portable if f == Family::Rmsnorm => {
                        "a row an invocation; after a residual add and backward a row a workgroup"
                            .to_string()
                    }
                    Path::Portable if f == Family::Attention => {
                        "FlashAttention-2 tiles (keys or queries in workgroup memory)".to_string()
                    }
                    Path::Portable if f == Family::CrossEntropy => {
                        "a row a workgroup (reductions)".to_string()
                    }
                    Path::Portable if self.f16_tiles && f == Family::Nf4 => {
                        "workgroup-memory tiles, the forward's in f16 (WEBQLORA_F16_TILES)"
                            .to_string()
                    }
                    Path::Portable if f == Family::Matmul => format!(
                        "workgroup-memory tiles (64 or 32 outputs a side, k steps of {})",
                        self.gemm_depth
                    ),
                    Path::Portable => "workgroup-memory tiles".to_string(),
                    Path::Software => match (self.textures, self.eight_lane_subgroups) {
                        _ if f == Family::Rmsnorm || f == Family::CrossEntropy => {
                            "a row an invocation".to_string()
                        }
                        (Some(side), true) => {
                            format!("textures (sides <= {side}), eight-lane subgroups")
                        }
                        (Some(side), false) => format!("textures (sides <= {side})"),
                        (None, _) => "register-tile buffers".to_string(),
                    },
                };
                format!("{:<10} {:<9} {detail}", f.name(), self.path(f).name())
            })
            .collect()
    }
}

impl fmt::Display for Kernels {
    /// `matmul=portable,nf4=portable,...`: the form `WEBQLORA_KERNELS` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Family::ALL
            .into_iter()
            .map(|fam| format!("{}={}", fam.name(), self.path(fam).name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Whether the device meets the portable kernels' needs (every conforming WebGPU device
/// does; a device reporting less gets the software kernels, which need no workgroup memory).
fn portable_fits(caps: &Capabilities) -> bool {
    caps.workgroup_storage_bytes >= PORTABLE_WORKGROUP_BYTES
        && caps.invocations_per_workgroup >= PORTABLE_INVOCATIONS
}

/// The workgroup memory of the portable f32 products' deepest tile: two staged 64 x 32 tiles,
/// 32 rows of 16 + 1 vec4s each (`ops::matmul::GemmTiles { side: 16, depth: 32 }`'s
/// `workgroup_bytes`, which tests/kernels_matmul.rs checks against this).
pub const DEEP_GEMM_WORKGROUP_BYTES: u32 = 2 * 32 * (16 + 1) * 16;

/// The k step of the portable f32 products on a device with `workgroup_bytes` of workgroup
/// memory: 32 where the deepest tile fits (17 KiB: devices past WebGPU's guaranteed 16 KiB,
/// which most hardware GPUs report as 32 KiB or more), halving the barriers and staging
/// rounds a product takes; 16 elsewhere. Decided here, with the other choices a device's
/// capabilities make, so that choosing kernels needs no op's code.
pub fn gemm_depth(workgroup_bytes: u32) -> u32 {
    if DEEP_GEMM_WORKGROUP_BYTES <= workgroup_bytes {
        32
    } else {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(software: bool, subgroups: Option<(u32, u32)>) -> Capabilities {
        Capabilities {
            software,
            storage_textures: 8,
            max_texture_side: 16384,
            texture_parameters: true,
            subgroups,
            shader_f16: false,
            workgroup_storage_bytes: 32768,
            invocations_per_workgroup: 1024,
        }
    }

    #[test]
    fn hardware_gets_portable_software_gets_textures() {
        // An Apple M-series GPU (integrated, subgroups 32), a browser adapter (type Other, no
        // subgroups) and a discrete GPU all take the portable path: the type does not matter.
        let apple = Kernels::decide(&caps(false, Some((32, 32))));
        assert!(Family::ALL.iter().all(|&f| apple.portable(f)));
        assert_eq!(apple.subgroups, Some((32, 32)));
        assert_eq!(apple.textures, None);
        let browser = Kernels::decide(&caps(false, None));
        assert!(Family::ALL.iter().all(|&f| browser.portable(f)));
        assert!(!browser.portable_subgroups(Family::Rmsnorm));
        let lavapipe = Kernels::decide(&caps(true, Some((8, 8))));
        assert!(Family::ALL.iter().all(|&f| !lavapipe.portable(f)));
        assert_eq!(lavapipe.textures_for(Family::Nf4), Some(16384));
        assert!(lavapipe.eight_lanes_for(Family::Matmul));
        // lavapipe at 512-bit vectors: sixteen lanes, textures without the subgroup kernels.
        let wide = Kernels::decide(&caps(true, Some((16, 16))));
        assert!(wide.textures.is_some() && !wide.eight_lane_subgroups);
        // Through OpenGL: software buffer kernels.
        let mut gl = caps(true, None);
        gl.texture_parameters = false;
        assert_eq!(Kernels::decide(&gl).textures, None);
        // A device under WebGPU's minimums cannot run the portable tiles.
        let mut small = caps(false, None);
        small.workgroup_storage_bytes = 8192;
        assert_eq!(Kernels::decide(&small).path(Family::Nf4), Path::Software);
        // Subgroup sizes outside 4..=128 are not used.
        assert_eq!(Kernels::all_portable(Some((2, 256))).subgroups, None);
    }

    #[test]
    fn overrides_force_paths() {
        let c = caps(true, Some((8, 8)));
        let mut k = Kernels::decide(&c);
        k.apply("portable").unwrap();
        k.allow(&c);
        assert!(Family::ALL.iter().all(|&f| k.portable(f)));
        assert_eq!(k.textures, None, "no family left on textures");
        assert_eq!(
            k.to_string(),
            "matmul=portable,nf4=portable,attention=portable,rmsnorm=portable,cross_entropy=portable"
        );
        let mut k = Kernels::decide(&c);
        k.apply(" nf4=portable , attention=software").unwrap();
        k.allow(&c);
        assert!(k.portable(Family::Nf4) && !k.portable(Family::Matmul));
        assert_eq!(k.textures_for(Family::Nf4), None);
        assert!(k.textures_for(Family::Matmul).is_some());
        let mut hw = Kernels::decide(&caps(false, Some((32, 64))));
        hw.apply("software").unwrap();
        hw.allow(&caps(false, Some((32, 64))));
        assert!(hw.textures.is_some() && !hw.eight_lane_subgroups);
        for bad in ["fast", "matmul=fast", "conv=portable", "matmul"] {
            let err = Kernels::default().apply(bad).unwrap_err().to_string();
            assert!(
                err.contains("WEBQLORA_KERNELS") && err.contains(bad),
                "{err}"
            );
        }
    }
}
