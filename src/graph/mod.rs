//! The static compute graph: tensors, nodes, validation, the buffer planner and the executor.
//!
//! A graph is built once per shape (op builders in `crate::ops` add nodes), validated against
//! the device limits, planned (temporaries share buffers by liveness) and then run any number of
//! times with one command encoder per run.

mod executor;
mod node;
mod planner;
mod tensor;
mod validate;

pub use executor::{CompiledGraph, RunError};
pub use node::{
    accumulating, Access, Binding, Dispatch, Kernel, Node, Params, TexelFormat, TextureBinding,
    TextureCopy, ACCUMULATE,
};
pub use planner::{Placement, Plan};
pub use tensor::{shape_str, DType, Role, TensorDesc, TensorId};
pub use validate::{validate, DeviceLimits};

/// Everything that can be wrong with a graph, each naming the tensor and node involved.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    /// The device refused something while the graph was compiled: a kernel that does not
    /// compile there, or memory it does not have.
    #[error("node '{node}': {message}")]
    Device { node: String, message: String },
    #[error("allocating the graph's buffers ({bytes} bytes planned): {message}")]
    Allocation { bytes: u64, message: String },
    #[error("node '{node}' reads tensor '{tensor}' before anything writes it")]
    ReadBeforeWrite { node: String, tensor: String },
    #[error("{op}: shape mismatch: {detail}")]
    ShapeMismatch { op: String, detail: String },
    #[error("node '{node}': binding '{binding}' of kernel '{kernel}' wants {expected}, tensor '{tensor}' is {found}")]
    DTypeMismatch {
        node: String,
        kernel: String,
        binding: String,
        tensor: String,
        expected: DType,
        found: DType,
    },
    #[error("node '{node}': kernel '{kernel}' takes {expected} tensors, got {found}")]
    BindingCount {
        node: String,
        kernel: String,
        expected: usize,
        found: usize,
    },
    #[error("tensor '{tensor}' needs {bytes} bytes in one binding, over the device's {limit_name} of {limit} bytes")]
    OverLimit {
        tensor: String,
        bytes: u64,
        limit_name: &'static str,
        limit: u64,
    },
    #[error("node '{node}' binds tensor '{tensor}' twice and writes it; a dispatch cannot alias a writable binding")]
    Aliased { node: String, tensor: String },
    #[error("node '{node}': dispatch {dispatch:?} exceeds {max} workgroups per dimension")]
    DispatchTooLarge {
        node: String,
        dispatch: Dispatch,
        max: u32,
    },
    #[error(
        "node '{node}': kernel '{kernel}' needs device feature {feature}, which this adapter lacks"
    )]
    MissingFeature {
        node: String,
        kernel: String,
        feature: String,
    },
    #[error("texture '{texture}' is {width}x{height} texels, over the device's max_texture_dimension_2d of {limit}")]
    TextureTooLarge {
        texture: String,
        width: u32,
        height: u32,
        limit: u32,
    },
    #[error("node '{node}': kernel '{kernel}' takes {expected} textures, got {found} (or a texture of the wrong format)")]
    TextureMismatch {
        node: String,
        kernel: String,
        expected: usize,
        found: usize,
    },
    #[error("{op}: {detail}")]
    Unsupported { op: String, detail: String },
    #[error("output tensor '{tensor}' is never written by any node")]
    OutputNeverWritten { tensor: String },
    #[error("tensor '{tensor}' ({role}) is written by the graph; only inputs and params are written by the host")]
    NotHostWritable { tensor: String, role: Role },
    #[error(
        "tensor '{tensor}' is a temporary whose buffer is shared; mark it as an output to read it"
    )]
    NotReadable { tensor: String },
    #[error("tensor '{tensor}' holds {expected} bytes, got {found}")]
    WrongSize {
        tensor: String,
        expected: u64,
        found: u64,
    },
}

/// A texture kernels read operands from, written by a pack node right before the node that
/// reads it (so one texture serves every node that needs that shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TextureId(pub usize);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextureDesc {
    pub format: TexelFormat,
    pub width: u32,
    pub height: u32,
    /// Distinguishes textures of the same size that one node reads at once.
    pub slot: u8,
}

impl TextureDesc {
    pub fn bytes(&self) -> u64 {
        self.width as u64 * self.height as u64 * TexelFormat::BYTES
    }

    pub fn name(&self) -> String {
        format!(
            "{:?} {}x{} #{}",
            self.format, self.width, self.height, self.slot
        )
    }
}

/// Tensors and nodes in execution order.
#[derive(Clone, Debug)]
pub struct Graph {
    pub tensors: Vec<TensorDesc>,
    pub nodes: Vec<Node>,
    pub textures: Vec<TextureDesc>,
    /// The kernels each op family runs (`crate::kernels`): the device's choice for graphs
    /// made by `for_device`.
    pub kernels: crate::kernels::Kernels,
    /// The most bytes one binding may hold: tables larger than this (a large vocabulary's
    /// embedding) are declared as row parts (`Graph::row_parts`). WebGPU's default limit
    /// (128 MiB) unless the device's is known.
    pub max_binding_bytes: u64,
    /// Tables (embedding, lm-head) whose f32 bytes exceed this are kept in f16
    /// (`model::transformer::table_dtype`): WebGPU's default binding limit, the same for every
    /// graph of a model whatever its device, so that they share weights.
    pub f16_tables_over: u64,
    /// What each texture holds at this point of the node list: the tensor (root) and pack
    /// parameters it was last packed from, until a node writes that tensor.
    packed: Vec<Option<(TensorId, Params)>>,
}

/// Where members of a group start (bytes): WebGPU's largest allowed
/// `minStorageBufferOffsetAlignment`, so that every member can be bound on its own.
pub const GROUP_ALIGN: u64 = 256;

/// WebGPU's default `maxStorageBufferBindingSize`, which lavapipe and many browsers keep.
pub const DEFAULT_MAX_BINDING: u64 = 128 << 20;

impl Default for Graph {
    fn default() -> Self {
        Graph {
            tensors: Vec::new(),
            nodes: Vec::new(),
            textures: Vec::new(),
            kernels: crate::kernels::Kernels::from_env(),
            max_binding_bytes: DEFAULT_MAX_BINDING,
            f16_tables_over: DEFAULT_MAX_BINDING,
            packed: Vec::new(),
        }
    }
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Row counts of the parts a [rows, cols] table of `dtype` values is declared in so that
    /// each fits one binding: one part when it fits, else equal parts (a multiple of 64 rows)
    /// as few as fit.
    pub fn row_parts(&self, rows: usize, cols: usize, dtype: DType) -> Vec<usize> {
        let row_bytes = dtype.bytes_for(cols.max(1));
        let fit = ((self.max_binding_bytes / row_bytes) as usize / 64 * 64).max(64);
        if rows <= fit {
            return vec![rows];
        }
        let per = rows
            .div_ceil(rows.div_ceil(fit))
            .next_multiple_of(64)
            .min(fit);
        (0..rows).step_by(per).map(|r| per.min(rows - r)).collect()
    }

    /// Compute dispatches one run of the graph makes (nodes run as texture copies are not
    /// dispatches).
    pub fn dispatches(&self) -> usize {
        self.nodes.iter().filter(|n| n.copy.is_none()).count()
    }

    /// A graph for `gpu`, with the kernels chosen for it (`Gpu::kernels`).
    pub fn for_device(gpu: &crate::gpu::Gpu) -> Self {
        Graph {
            max_binding_bytes: gpu.limits.max_storage_buffer_binding_size,
            kernels: gpu.kernels.clone(),
            ..Self::default()
        }
    }

    /// The texture of this format and size for operand `slot` (shared by every node asking for
    /// the same).
    pub fn texture(
        &mut self,
        format: TexelFormat,
        width: usize,
        height: usize,
        slot: u8,
    ) -> TextureId {
        let desc = TextureDesc {
            format,
            width: width as u32,
            height: height as u32,
            slot,
        };
        if let Some(i) = self.textures.iter().position(|t| *t == desc) {
            return TextureId(i);
        }
        self.textures.push(desc);
        self.packed.push(None);
        TextureId(self.textures.len() - 1)
    }

    /// Whether `texture` already holds what a pack of `source` with `params` would write
    /// (packed earlier, and nothing wrote `source` since): the pack can be skipped.
    pub fn holds(&self, texture: TextureId, source: TensorId, params: &Params) -> bool {
        self.packed[texture.0]
            .as_ref()
            .is_some_and(|(t, p)| *t == self.root(source) && p == params)
    }

    /// Record that the last node packed `source` with `params` into `texture`.
    pub fn record_pack(&mut self, texture: TextureId, source: TensorId, params: Params) {
        self.packed[texture.0] = Some((self.root(source), params));
    }

    fn add_tensor(&mut self, name: &str, shape: &[usize], dtype: DType, role: Role) -> TensorId {
        self.tensors.push(TensorDesc {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            role,
            view_of: None,
            offset: 0,
            member: false,
            group: false,
        });
        TensorId(self.tensors.len() - 1)
    }

    /// The tensor that owns `t`'s buffer: `t` itself unless it is a view.
    pub fn root(&self, t: TensorId) -> TensorId {
        self.tensors[t.0].view_of.unwrap_or(t)
    }

    /// The same elements as `t` under another shape (no copy): e.g. a [tokens, heads·dim]
    /// projection seen as [tokens, heads, dim].
    pub fn view(
        &mut self,
        t: TensorId,
        name: &str,
        shape: &[usize],
    ) -> Result<TensorId, GraphError> {
        let desc = self.tensor(t).clone();
        if shape.iter().product::<usize>() != desc.numel() {
            return Err(GraphError::ShapeMismatch {
                op: name.into(),
                detail: format!(
                    "'{}' {} cannot be viewed as {}",
                    desc.name,
                    shape_str(&desc.shape),
                    shape_str(shape)
                ),
            });
        }
        let root = self.root(t);
        let role = self.tensors[root.0].role;
        let id = self.add_tensor(name, shape, desc.dtype, role);
        self.tensors[id.0].view_of = Some(root);
        self.tensors[id.0].offset = desc.offset;
        Ok(id)
    }

    /// Store `members` one after another in one new tensor `name` of role `role` (each at a
    /// multiple of GROUP_ALIGN bytes, the gaps zero), which a node can bind to go over all of
    /// them at once: the optimizer's one dispatch for every adapter tensor. The members stay
    /// tensors of their own (names, shapes, bindings), now of `role`; the group reads as
    /// [total] values of their dtype. Groups with members of the same sizes in the same order
    /// have the same layout. Members must be distinct tensors of one dtype, not views, not in
    /// another group.
    pub fn group(
        &mut self,
        name: &str,
        members: &[TensorId],
        role: Role,
    ) -> Result<TensorId, GraphError> {
        let err = |detail: String| GraphError::Unsupported {
            op: name.into(),
            detail,
        };
        let Some(&first) = members.first() else {
            return Err(err("a group needs members".into()));
        };
        let dtype = self.tensor(first).dtype;
        if dtype != DType::F32 {
            return Err(err(format!(
                "groups hold f32 tensors, '{}' is {dtype}",
                self.tensor(first).name
            )));
        }
        let mut offsets = Vec::with_capacity(members.len());
        let mut end = 0u64;
        for (i, &m) in members.iter().enumerate() {
            let d = self.tensor(m);
            if d.view_of.is_some() || d.group {
                return Err(err(format!("'{}' is a view or a group", d.name)));
            }
            if d.dtype != dtype {
                return Err(err(format!("'{}' is {}, not {dtype}", d.name, d.dtype)));
            }
            if members[..i].contains(&m) {
                return Err(err(format!("'{}' is listed twice", d.name)));
            }
            offsets.push(end);
            end = (end + d.bytes()).next_multiple_of(GROUP_ALIGN);
        }
        let values = (end / dtype.bytes_for(1)) as usize;
        let group = self.add_tensor(name, &[values], dtype, role);
        self.tensors[group.0].group = true;
        for (&m, offset) in members.iter().zip(offsets) {
            let d = &mut self.tensors[m.0];
            d.view_of = Some(group);
            d.offset = offset;
            d.member = true;
            d.role = role;
        }
        // Views of the members now point into the group too.
        for i in 0..self.tensors.len() {
            if let Some(root) = self.tensors[i].view_of {
                if !self.tensors[i].member && members.contains(&root) {
                    let offset = self.tensors[root.0].offset;
                    self.tensors[i].view_of = Some(group);
                    self.tensors[i].offset = offset;
                    self.tensors[i].role = role;
                }
            }
        }
        Ok(group)
    }

    /// A tensor the host writes before each run.
    pub fn input(&mut self, name: &str, shape: &[usize], dtype: DType) -> TensorId {
        self.add_tensor(name, shape, dtype, Role::Input)
    }

    /// A persistent tensor (weights, adapter, optimizer state).
    pub fn param(&mut self, name: &str, shape: &[usize], dtype: DType) -> TensorId {
        self.add_tensor(name, shape, dtype, Role::Param)
    }

    /// A tensor written and read within a run; make it an output to keep it.
    pub fn temp(&mut self, name: &str, shape: &[usize], dtype: DType) -> TensorId {
        self.add_tensor(name, shape, dtype, Role::Temp)
    }

    /// Keep `t` (and every view of its buffer) after the run so the host can read it.
    pub fn mark_output(&mut self, t: TensorId) {
        let root = self.root(t);
        for (i, desc) in self.tensors.iter_mut().enumerate() {
            if i == root.0 || desc.view_of == Some(root) {
                desc.role = Role::Output;
            }
        }
    }

    pub fn tensor(&self, t: TensorId) -> &TensorDesc {
        &self.tensors[t.0]
    }

    pub fn find(&self, name: &str) -> Option<TensorId> {
        self.tensors
            .iter()
            .position(|t| t.name == name)
            .map(TensorId)
    }

    /// Append a dispatch of `kernel` over `tensors` (one per binding, in order). Binding
    /// counts and dtypes are checked here; the rest by `validate`.
    pub fn push(
        &mut self,
        label: impl Into<String>,
        kernel: &'static Kernel,
        tensors: &[TensorId],
        params: Params,
        dispatch: Dispatch,
    ) -> Result<(), GraphError> {
        self.push_specialized(label, kernel, tensors, params, dispatch, &[])
    }

    /// `push` for a kernel with texture bindings.
    pub fn push_with_textures(
        &mut self,
        label: impl Into<String>,
        kernel: &'static Kernel,
        tensors: &[TensorId],
        textures: &[TextureId],
        params: Params,
        dispatch: Dispatch,
    ) -> Result<(), GraphError> {
        self.push_with_textures_specialized(label, kernel, tensors, textures, params, dispatch, &[])
    }

    /// `push_with_textures` with values for the shader's `override` constants.
    #[allow(clippy::too_many_arguments)]
    pub fn push_with_textures_specialized(
        &mut self,
        label: impl Into<String>,
        kernel: &'static Kernel,
        tensors: &[TensorId],
        textures: &[TextureId],
        params: Params,
        dispatch: Dispatch,
        constants: &[(&'static str, f64)],
    ) -> Result<(), GraphError> {
        let label = label.into();
        let formats_match = textures.len() == kernel.textures.len()
            && textures
                .iter()
                .zip(kernel.textures)
                .all(|(t, b)| self.textures[t.0].format == b.format);
        if !formats_match {
            return Err(GraphError::TextureMismatch {
                node: label,
                kernel: kernel.name.into(),
                expected: kernel.textures.len(),
                found: textures.len(),
            });
        }
        self.push_specialized(label, kernel, tensors, params, dispatch, constants)?;
        self.nodes.last_mut().expect("just pushed").textures = textures.to_vec();
        Ok(())
    }

    /// `push` with values for the shader's `override` constants.
    pub fn push_specialized(
        &mut self,
        label: impl Into<String>,
        kernel: &'static Kernel,
        tensors: &[TensorId],
        params: Params,
        dispatch: Dispatch,
        constants: &[(&'static str, f64)],
    ) -> Result<(), GraphError> {
        let label = label.into();
        if tensors.len() != kernel.bindings.len() {
            return Err(GraphError::BindingCount {
                node: label,
                kernel: kernel.name.into(),
                expected: kernel.bindings.len(),
                found: tensors.len(),
            });
        }
        for (&t, binding) in tensors.iter().zip(kernel.bindings) {
            let desc = self.tensor(t);
            if desc.dtype != binding.dtype {
                return Err(GraphError::DTypeMismatch {
                    node: label,
                    kernel: kernel.name.into(),
                    binding: binding.name.into(),
                    tensor: desc.name.clone(),
                    expected: binding.dtype,
                    found: desc.dtype,
                });
            }
        }
        // A texture packed from a tensor this node writes no longer holds it.
        for (&t, binding) in tensors.iter().zip(kernel.bindings) {
            if binding.access.writes() {
                let root = self.root(t);
                for packed in &mut self.packed {
                    if packed.as_ref().is_some_and(|(src, _)| *src == root) {
                        *packed = None;
                    }
                }
            }
        }
        self.nodes.push(Node {
            label,
            kernel,
            tensors: tensors.to_vec(),
            textures: Vec::new(),
            params,
            dispatch,
            constants: constants.to_vec(),
            copy: None,
        });
        Ok(())
    }

    /// Check that `a` and `b` have the same shape, for an op named `op`.
    pub fn expect_same_shape(&self, op: &str, a: TensorId, b: TensorId) -> Result<(), GraphError> {
        let (da, db) = (self.tensor(a), self.tensor(b));
        if da.shape == db.shape {
            return Ok(());
        }
        Err(GraphError::ShapeMismatch {
            op: op.into(),
            detail: format!(
                "'{}' is {} but '{}' is {}",
                da.name,
                shape_str(&da.shape),
                db.name,
                shape_str(&db.shape)
            ),
        })
    }

    /// A readable listing of tensors and nodes (what `webqlora graph` prints).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let args: Vec<String> = n
                .uses()
                .map(|(t, a)| {
                    let mode = match a {
                        Access::Read => "",
                        Access::Write => "out ",
                        Access::ReadWrite => "inout ",
                    };
                    format!("{mode}{}", self.tensor(t).name)
                })
                .collect();
            out += &format!(
                "  #{i:<3} {:<28} {}({})\n",
                n.label,
                n.kernel_label(),
                args.join(", ")
            );
        }
        out
    }
}
