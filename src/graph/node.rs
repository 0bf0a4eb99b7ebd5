//! Kernels (what a shader entry point expects) and nodes (one dispatch of a kernel over
//! concrete tensors).

use super::tensor::{DType, TensorId};
use super::TextureId;
use crate::shaders::Shader;

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<storage, read>`: must hold data before the node runs.
    Read,
    /// `var<storage, read_write>`, every element overwritten: defines the tensor.
    Write,
    /// `var<storage, read_write>`, read then updated (accumulation, optimizer state).
    ReadWrite,
}

impl Access {
    pub fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    pub fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// The texel formats of the textures kernels read operands from (see `Graph::texture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TexelFormat {
    /// Four f32 (four consecutive k of a matrix row).
    Rgba32Float,
    /// Four u32 (four NF4 code words = 32 codes).
    Rgba32Uint,
}

impl TexelFormat {
    pub fn wgpu(self) -> wgpu::TextureFormat {
        match self {
            TexelFormat::Rgba32Float => wgpu::TextureFormat::Rgba32Float,
            TexelFormat::Rgba32Uint => wgpu::TextureFormat::Rgba32Uint,
        }
    }

    pub const BYTES: u64 = 16;
}

/// How a kernel uses one texture: a read-only storage texture it reads with `textureLoad`, or
/// a write-only storage texture it writes.
#[derive(Clone, Copy, Debug)]
pub struct TextureBinding {
    pub name: &'static str,
    pub format: TexelFormat,
    pub write: bool,
}

impl TextureBinding {
    /// A read-only storage texture.
    pub const fn read(name: &'static str, format: TexelFormat) -> TextureBinding {
        TextureBinding {
            name,
            format,
            write: false,
        }
    }

    /// A write-only storage texture.
    pub const fn write(name: &'static str, format: TexelFormat) -> TextureBinding {
        TextureBinding {
            name,
            format,
            write: true,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Binding {
    /// The variable name in the shader, and the tensor name used in graphs and tests.
    pub name: &'static str,
    pub access: Access,
    pub dtype: DType,
}

impl Binding {
    /// `var<storage, read>`
    pub const fn read(name: &'static str, dtype: DType) -> Binding {
        Binding {
            name,
            access: Access::Read,
            dtype,
        }
    }

    /// `var<storage, read_write>`, every element overwritten.
    pub const fn write(name: &'static str, dtype: DType) -> Binding {
        Binding {
            name,
            access: Access::Write,
            dtype,
        }
    }

    /// `var<storage, read_write>`, read then updated.
    pub const fn read_write(name: &'static str, dtype: DType) -> Binding {
        Binding {
            name,
            access: Access::ReadWrite,
            dtype,
        }
    }
}

/// One shader entry point and the storage bindings it declares at group 0, bindings 0..n in
/// this order; a `params` uniform follows at binding n, then its textures (if any) from n + 1.
#[derive(Debug)]
pub struct Kernel {
    pub name: &'static str,
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub bindings: &'static [Binding],
    pub textures: &'static [TextureBinding],
}

/// How many workgroups a node launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// `n` workgroups numbered 0..n. When n exceeds the per-dimension limit the executor folds
    /// it into (x, y); shaders compute `wg.x + wg.y * num_workgroups.x` and skip ids >= n.
    Linear(u32),
    /// A grid the shader interprets itself; each dimension must fit the device limit.
    Grid([u32; 3]),
    /// `n` workgroups whose subgroups take the node's tiles one at a time from a counter
    /// (shaders/tile_queue.wgsl: binding 15, zeroed by the executor before each run); the
    /// shader counts its tiles from its params.
    /// lavapipe hands each of its threads a fixed, contiguous share of a dispatch's
    /// workgroups, so a thread that the host slows, or whose share costs more, holds up the
    /// whole dispatch while the other thread idles; taken from a queue, the tiles go to
    /// whichever thread is free.
    TileQueue(u32),
}

impl Dispatch {
    /// Workgroups for `items` work items at `per_group` items a workgroup.
    pub fn linear(items: usize, per_group: usize) -> Dispatch {
        Dispatch::Linear(items.div_ceil(per_group).max(1) as u32)
    }

    /// A queue of `tiles` tiles for workgroups of one subgroup: as many workgroups as
    /// tiles, up to 16 (more than lavapipe has threads where it runs; the workgroups a thread
    /// starts once the queue is empty end at once).
    pub fn tile_queue(tiles: usize) -> Dispatch {
        Dispatch::TileQueue(tiles.clamp(1, 16) as u32)
    }

    /// The (x, y, z) counts to launch under `max_per_dim`, or None if it cannot fit.
    pub fn workgroups(self, max_per_dim: u32) -> Option<[u32; 3]> {
        match self {
            Dispatch::Linear(n) if n <= max_per_dim => Some([n, 1, 1]),
            Dispatch::Linear(n) => {
                let y = n.div_ceil(max_per_dim);
                (y <= max_per_dim).then(|| [n.div_ceil(y), y, 1])
            }
            Dispatch::Grid(g) => g.iter().all(|&d| d <= max_per_dim).then_some(g),
            Dispatch::TileQueue(n) => (n <= max_per_dim).then_some([n, 1, 1]),
        }
    }
}

/// The words of a node's `params` uniform, built field by field in the shader's order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(Vec<u32>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.push(v);
        self
    }

    pub fn f32(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }

    /// The uniform's bytes, padded to 16 as WGSL uniform structs require.
    pub fn bytes(&self) -> Vec<u8> {
        let mut words = self.0.clone();
        words.resize(words.len().div_ceil(4).max(1) * 4, 0);
        bytemuck::cast_slice(&words).to_vec()
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub label: String,
    pub kernel: &'static Kernel,
    /// One tensor per kernel binding, in binding order.
    pub tensors: Vec<TensorId>,
    /// One texture per kernel texture binding, in order.
    pub textures: Vec<TextureId>,
    pub params: Params,
    pub dispatch: Dispatch,
    /// Pipeline-overridable constants (`override` in WGSL) this node's pipeline is built with.
    pub constants: Vec<(&'static str, f64)>,
    /// When set, the executor runs this node as that buffer-to-texture copy instead of its
    /// dispatch (the same texels).
    pub copy: Option<TextureCopy>,
}

/// A pack whose texels are plain rows of its source buffer: `rows` rows of `width` texels
/// from its first tensor's buffer at byte `offset`, `bytes_per_row` apart (a multiple of
/// wgpu::COPY_BYTES_PER_ROW_ALIGNMENT), into its first texture, then `tail` texels more into
/// the start of the next texture row (the partial last row of a linear layout, see
/// `ops::software::pack::Linear`). On llvmpipe a copy is a memcpy per row, where the pack kernel gathers
/// and scatters texel by texel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextureCopy {
    pub offset: u64,
    pub bytes_per_row: u32,
    pub width: u32,
    pub rows: u32,
    pub tail: u32,
}

/// The override constant by which one kernel source serves both storing its output and adding
/// into it: a node built with it set reads what its kernel's `Binding::write`s name (the
/// planner keeps their earlier contents), so no twin `Kernel` with `read_write` bindings is
/// needed.
pub const ACCUMULATE: &str = "ACCUMULATE";

/// The constants of a node that adds into its outputs when `accumulate` (none otherwise).
pub fn accumulating(accumulate: bool) -> &'static [(&'static str, f64)] {
    if accumulate {
        &[(ACCUMULATE, 1.0)]
    } else {
        &[]
    }
}

impl Node {
    /// Whether the node adds into its outputs (its `ACCUMULATE` constant is set).
    pub fn accumulates(&self) -> bool {
        self.constants
            .iter()
            .any(|&(name, value)| name == ACCUMULATE && value != 0.0)
    }

    /// The kernel's name, with `_acc` where the node adds into its outputs (`gemm_acc`): what
    /// listings, profiles and tests call the node's kernel.
    pub fn kernel_label(&self) -> String {
        match self.accumulates() {
            true => format!("{}_acc", self.kernel.name),
            false => self.kernel.name.to_string(),
        }
    }

    /// (tensor, access) for every storage binding.
    pub fn uses(&self) -> impl Iterator<Item = (TensorId, Access)> + '_ {
        let accumulates = self.accumulates();
        self.tensors
            .iter()
            .zip(self.kernel.bindings)
            .map(move |(&t, b)| match b.access {
                Access::Write if accumulates => (t, Access::ReadWrite),
                access => (t, access),
            })
    }
}
