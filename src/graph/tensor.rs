//! Typed tensors of a static graph.

use std::fmt;

/// Element types the kernels understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Half precision, two values a 32-bit word (kernels using it need `shader-f16`).
    F16,
    /// NF4 codes packed eight a u32 word (the GPU layout; see `quant::nf4` for conversion).
    Nf4,
    /// Token ids and other indices.
    U32,
}

impl DType {
    /// Bytes needed for `numel` elements, before the 4-byte padding of storage buffers.
    pub fn bytes_for(self, numel: usize) -> u64 {
        let n = numel as u64;
        match self {
            DType::F32 | DType::U32 => 4 * n,
            DType::F16 => 2 * n,
            DType::Nf4 => 4 * n.div_ceil(8),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Nf4 => "nf4",
            DType::U32 => "u32",
        })
    }
}

/// Where a tensor's storage comes from and how long it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Written by the host before a run (token ids, labels).
    Input,
    /// Persistent across runs (weights, LoRA parameters, optimizer moments).
    Param,
    /// Written by the graph and kept after the run for the host to read.
    Output,
    /// Written and read inside one run; the planner shares its buffer with others.
    Temp,
}

impl Role {
    /// Inputs and params hold data before the first node runs.
    pub fn defined_at_start(self) -> bool {
        matches!(self, Role::Input | Role::Param)
    }

    /// Everything but temporaries gets a buffer of its own.
    pub fn pinned(self) -> bool {
        !matches!(self, Role::Temp)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Input => "input",
            Role::Param => "param",
            Role::Output => "output",
            Role::Temp => "temp",
        })
    }
}

/// A handle to a tensor of one graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub(crate) usize);

impl TensorId {
    pub fn index(self) -> usize {
        self.0
    }

    /// The id of the `i`-th tensor of a graph (as listed in `Graph::tensors`).
    pub fn from_index(i: usize) -> Self {
        TensorId(i)
    }
}

#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub role: Role,
    /// For a view (another shape over the same elements), the tensor that owns the buffer.
    /// Roles, lifetimes and buffers are those of that root.
    pub view_of: Option<TensorId>,
    /// Where the tensor's elements start in its root's buffer, in bytes: 0 except for a
    /// member of a group (and views of one).
    pub offset: u64,
    /// A tensor in its own right (named, loaded and saved by that name) stored inside a
    /// group (`Graph::group`): `view_of` names the group.
    pub member: bool,
    /// A group: one buffer holding its members one after another, for kernels that go over
    /// all of them in one dispatch (the optimizer). Not a tensor of any file.
    pub group: bool,
}

impl TensorDesc {
    /// Whether this is a tensor in its own right, which weights are loaded into, adapters and
    /// checkpoints saved from and graphs share by name: not a view, not a group.
    pub fn named(&self) -> bool {
        (self.view_of.is_none() || self.member) && !self.group
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        self.dtype.bytes_for(self.numel())
    }
}

/// `[2, 3]` rather than `[2, 3]` with Debug noise; used in error messages.
pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}
