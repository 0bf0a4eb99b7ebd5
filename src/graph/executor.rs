//! Runs a planned graph: buffers allocated once, bind groups made once, one command encoder
//! per run, its dispatches in one compute pass (split only around buffer-to-texture copies).

use std::num::NonZeroU64;
use std::sync::Arc;

use super::{DeviceLimits, Dispatch, Graph, GraphError, Node, Placement, Plan, Role, TensorId};
use crate::gpu::buffers::storage_size;
use crate::gpu::pipelines::PipelineKey;
use crate::gpu::timer::GpuTimer;
use crate::gpu::{Gpu, GpuError};

/// Errors of running a graph: a bad graph or a failing device.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Where `Dispatch::TileQueue` kernels find their queue (shaders/tile_queue.wgsl).
const QUEUE_BINDING: u32 = 15;

pub struct CompiledGraph {
    pub graph: Graph,
    pub plan: Plan,
    /// Own buffers first, then one per shared slot.
    buffers: Vec<wgpu::Buffer>,
    /// Index into `buffers` for each tensor (None for unused temporaries).
    buffer_of: Vec<Option<usize>>,
    /// Where each tensor starts in its buffer (bytes): a group member's place, or a shared
    /// param's in the other graph's buffer.
    offset_of: Vec<u64>,
    /// Per node: what its dispatch binds and launches (None for a copy node, which has no
    /// dispatch).
    dispatches: Vec<Option<NodeDispatch>>,
    /// The operand textures (the bind groups hold views of them).
    textures: Vec<wgpu::Texture>,
    /// The tile counters of the `Dispatch::TileQueue` nodes, one at each aligned offset
    /// (None when the graph has none); zeroed at the start of every run.
    queues: Option<wgpu::Buffer>,
    /// Per tensor: its buffer belongs to another graph (`new_sharing`).
    shared: Vec<bool>,
    // Keeps the node parameters alive for the bind groups.
    _params: wgpu::Buffer,
}

/// A compute node ready to encode.
struct NodeDispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl CompiledGraph {
    /// Validate and plan `graph` for this device, allocate its buffers, compile its pipelines
    /// and make its bind groups.
    pub fn new(gpu: &Gpu, graph: Graph) -> Result<CompiledGraph, GraphError> {
        Self::compile(gpu, graph, None)
    }

    /// Like `new`, but every param that `other` also has (same name, dtype and shape) uses
    /// `other`'s buffer: a second graph over the same weights and adapter (evaluation,
    /// generation) costs no second copy and sees every update. Returns the names of the params
    /// it did not find in `other`, for the caller to fill.
    pub fn new_sharing(
        gpu: &Gpu,
        graph: Graph,
        other: &CompiledGraph,
    ) -> Result<(CompiledGraph, Vec<String>), GraphError> {
        let compiled = Self::compile(gpu, graph, Some(other))?;
        let unshared = compiled
            .graph
            .tensors
            .iter()
            .enumerate()
            .filter(|(t, d)| d.role == Role::Param && d.named() && !compiled.shared[*t])
            .map(|(_, d)| d.name.clone())
            .collect();
        Ok((compiled, unshared))
    }

    fn compile(
        gpu: &Gpu,
        graph: Graph,
        other: Option<&CompiledGraph>,
    ) -> Result<CompiledGraph, GraphError> {
        let limits = DeviceLimits::from(&gpu.limits);
        let plan = Plan::new(&graph, &limits)?;
        for node in &graph.nodes {
            let missing = node.kernel.shader.features - gpu.features;
            if !missing.is_empty() {
                return Err(GraphError::MissingFeature {
                    node: node.label.clone(),
                    kernel: node.kernel.name.into(),
                    feature: format!("{missing:?}"),
                });
            }
        }
        let placed = Placed::new(gpu, &graph, &plan, other);
        let (params, param_offsets) = node_params(gpu, &graph);
        let textures = create_textures(gpu, &graph);
        let views: Vec<wgpu::TextureView> = textures
            .iter()
            .map(|t| t.create_view(&Default::default()))
            .collect();
        let queues =
            (plan.queue_bytes > 0).then(|| gpu.storage_buffer("tile queues", plan.queue_bytes));
        let bound = Bound {
            placed: &placed,
            params: &params,
            views: &views,
            queues: queues.as_ref(),
            queue_stride: plan.queue_stride,
        };
        let mut next_queue = 0;
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        let mut dispatches = Vec::with_capacity(graph.nodes.len());
        for (i, node) in graph.nodes.iter().enumerate() {
            if node.copy.is_some() {
                dispatches.push(None);
                continue;
            }
            let kernel = node.kernel;
            let (shader, entry) = (kernel.shader, kernel.entry);
            let key = PipelineKey::new(shader.name, entry, &node.constants);
            let pipeline = gpu.pipeline(shader, &key).map_err(|e| GraphError::Device {
                node: node.label.clone(),
                message: e.to_string(),
            })?;
            let bind_group = bound.bind_group(
                gpu,
                &graph,
                node,
                &pipeline,
                param_offsets[i] as u64,
                &mut next_queue,
            );
            dispatches.push(Some(NodeDispatch {
                pipeline,
                bind_group,
                workgroups: node.dispatch.workgroups(max).expect("validated"),
            }));
        }

        // Buffers the device could not allocate are reported here, not at the first run.
        gpu.check().map_err(|e| GraphError::Allocation {
            bytes: plan.peak_bytes(),
            message: e.to_string(),
        })?;
        let Placed {
            buffers,
            buffer_of,
            offset_of,
            shared,
        } = placed;
        Ok(CompiledGraph {
            graph,
            plan,
            buffers,
            buffer_of,
            offset_of,
            dispatches,
            shared,
            textures,
            queues,
            _params: params,
        })
    }

    pub fn peak_bytes(&self) -> u64 {
        self.plan.peak_bytes()
    }

    /// The buffer holding tensor `t` (shared with other temporaries if `t` is one; from
    /// `offset(t)` on).
    pub fn buffer(&self, t: TensorId) -> Option<&wgpu::Buffer> {
        self.buffer_of[t.0].map(|b| &self.buffers[b])
    }

    /// Where tensor `t` starts in `buffer(t)`, in bytes.
    pub fn offset(&self, t: TensorId) -> u64 {
        self.offset_of[t.0]
    }

    /// Write an input or param. `data` must be exactly the tensor's size.
    pub fn write(&self, gpu: &Gpu, t: TensorId, data: &[u8]) -> Result<(), GraphError> {
        let desc = self.graph.tensor(t);
        if !desc.role.defined_at_start() {
            return Err(GraphError::NotHostWritable {
                tensor: desc.name.clone(),
                role: desc.role,
            });
        }
        if data.len() as u64 != desc.bytes() {
            return Err(GraphError::WrongSize {
                tensor: desc.name.clone(),
                expected: desc.bytes(),
                found: data.len() as u64,
            });
        }
        if let Some(buffer) = self.buffer(t) {
            gpu.upload_at(buffer, self.offset(t), data);
        }
        Ok(())
    }

    /// Fill every buffer the graph writes (outputs and shared slots) with `word`, e.g. a NaN
    /// pattern, so that a test sees any element a kernel failed to write.
    pub fn poison(&self, gpu: &Gpu, word: u32) {
        let mut poisoned = vec![false; self.buffers.len()];
        for (t, desc) in self.graph.tensors.iter().enumerate() {
            if let (Some(b), false) = (self.buffer_of[t], desc.role.defined_at_start()) {
                poisoned[b] = true;
            }
        }
        for (buffer, _) in self.buffers.iter().zip(poisoned).filter(|(_, p)| *p) {
            let words = vec![word; (buffer.size() / 4) as usize];
            gpu.upload(buffer, bytemuck::cast_slice(&words));
        }
    }

    /// Encode every node into one compute pass and submit.
    pub fn run(&self, gpu: &Gpu) {
        self.run_nodes(gpu, 0..self.graph.nodes.len());
    }

    /// Run only the nodes in `range` (in order), e.g. a training step's forward and backward
    /// without its optimizer update when gradients are being accumulated. Temporaries are
    /// planned over the whole graph, so any prefix is safe to run.
    pub fn run_nodes(&self, gpu: &Gpu, range: std::ops::Range<usize>) {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        self.reset_queues(&mut encoder);
        let mut nodes = range.peekable();
        while let Some(&first) = nodes.peek() {
            if self.graph.nodes[first].copy.is_some() {
                self.encode_copy(&mut encoder, first);
                nodes.next();
                continue;
            }
            // Dispatches up to the next copy share one compute pass.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("graph"),
                timestamp_writes: None,
            });
            while let Some(i) = nodes.next_if(|&i| self.graph.nodes[i].copy.is_none()) {
                self.encode_node(&mut pass, i);
            }
        }
        gpu.queue.submit([encoder.finish()]);
    }

    /// Zero every tile queue: each queue node's counter starts the run at its first tile.
    fn reset_queues(&self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(queues) = &self.queues {
            encoder.clear_buffer(queues, 0, None);
        }
    }

    /// Node `i`'s copy (see `TextureCopy`): its first tensor's rows into its first texture.
    fn encode_copy(&self, encoder: &mut wgpu::CommandEncoder, i: usize) {
        let node = &self.graph.nodes[i];
        let copy = node.copy.expect("a copy node");
        let buffer = &self.buffers[self.buffer_of[node.tensors[0].0].expect("placed")];
        let base = self.offset(node.tensors[0]);
        let texture = &self.textures[node.textures[0].0];
        // `rows` whole rows from `offset`, then the tail into texture row `rows`.
        let regions = [
            (base + copy.offset, copy.width, copy.rows, 0),
            (
                base + copy.offset + copy.rows as u64 * copy.bytes_per_row as u64,
                copy.tail,
                1,
                copy.rows,
            ),
        ];
        for (offset, width, rows, y) in regions {
            if width == 0 || rows == 0 {
                continue;
            }
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset,
                        bytes_per_row: Some(copy.bytes_per_row),
                        rows_per_image: Some(rows),
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width,
                    height: rows,
                    depth_or_array_layers: 1,
                },
            );
        }
    }

    /// Run with one timed pass per node; returns (node label, kernel, ms) for each node, or
    /// None when the device has no timestamp queries. Nodes are submitted in batches of as
    /// many as one query set can time, in order, so the results are those of `run`.
    pub async fn run_profiled(
        &self,
        gpu: &Gpu,
    ) -> Result<Option<Vec<(String, &'static str, f64)>>, GpuError> {
        let n = self.graph.nodes.len();
        let mut all_ms = Vec::with_capacity(n);
        for start in (0..n).step_by(crate::gpu::timer::MAX_SPANS as usize) {
            let end = (start + crate::gpu::timer::MAX_SPANS as usize).min(n);
            let Some(timer) = GpuTimer::new(gpu, (end - start) as u32) else {
                return Ok(None);
            };
            let mut encoder = gpu.device.create_command_encoder(&Default::default());
            self.reset_queues(&mut encoder);
            for i in start..end {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(&self.graph.nodes[i].label),
                    timestamp_writes: timer.writes((i - start) as u32),
                });
                if self.graph.nodes[i].copy.is_none() {
                    self.encode_node(&mut pass, i);
                } else {
                    // Copies happen outside passes: the node's span times an empty pass.
                    drop(pass);
                    self.encode_copy(&mut encoder, i);
                }
            }
            timer.resolve(&mut encoder);
            gpu.queue.submit([encoder.finish()]);
            all_ms.extend(timer.read_ms(gpu, (end - start) as u32).await?);
        }
        Ok(Some(
            self.graph
                .nodes
                .iter()
                .zip(all_ms)
                .map(|(n, ms)| (n.label.clone(), n.kernel.name, ms))
                .collect(),
        ))
    }

    fn encode_node(&self, pass: &mut wgpu::ComputePass<'_>, i: usize) {
        let d = self.dispatches[i].as_ref().expect("a compute node");
        let [x, y, z] = d.workgroups;
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }

    /// Read an input, param or output back to the host.
    pub async fn read(&self, gpu: &Gpu, t: TensorId) -> Result<Vec<u8>, RunError> {
        let desc = self.graph.tensor(t);
        if desc.role == Role::Temp {
            return Err(GraphError::NotReadable {
                tensor: desc.name.clone(),
            }
            .into());
        }
        let buffer = self.buffer(t).expect("pinned tensors have buffers");
        Ok(gpu
            .read_bytes_at(buffer, self.offset(t), desc.bytes())
            .await?)
    }

    /// Read an f32 tensor.
    pub async fn read_f32(&self, gpu: &Gpu, t: TensorId) -> Result<Vec<f32>, RunError> {
        Ok(bytemuck::pod_collect_to_vec(&self.read(gpu, t).await?))
    }
}

/// Where each tensor lives: the buffers (own ones first, then the plan's shared slots), each
/// tensor's buffer and byte offset, and which own buffers are another graph's.
struct Placed {
    buffers: Vec<wgpu::Buffer>,
    buffer_of: Vec<Option<usize>>,
    offset_of: Vec<u64>,
    shared: Vec<bool>,
}

impl Placed {
    fn new(gpu: &Gpu, graph: &Graph, plan: &Plan, other: Option<&CompiledGraph>) -> Placed {
        let mut buffers = Vec::new();
        let mut buffer_of = vec![None; graph.tensors.len()];
        let mut offset_of: Vec<u64> = graph.tensors.iter().map(|d| d.offset).collect();
        let mut shared = vec![false; graph.tensors.len()];
        for (t, desc) in graph.tensors.iter().enumerate() {
            if plan.placement[t] == Placement::Own && desc.view_of.is_none() {
                // A param `other` has too (perhaps inside one of its groups): its buffer.
                let same = other.and_then(|o| {
                    let id = o.graph.find(&desc.name)?;
                    let theirs = o.graph.tensor(id);
                    let same = desc.role == Role::Param
                        && !desc.group
                        && theirs.role == Role::Param
                        && theirs.named()
                        && theirs.dtype == desc.dtype
                        && theirs.shape == desc.shape;
                    same.then(|| o.buffer(id).cloned().map(|b| (b, o.offset_of[id.0])))
                        .flatten()
                });
                buffer_of[t] = Some(buffers.len());
                shared[t] = same.is_some();
                match same {
                    Some((buffer, offset)) => {
                        offset_of[t] = offset;
                        buffers.push(buffer);
                    }
                    None => buffers.push(gpu.storage_buffer(&desc.name, desc.bytes())),
                }
            }
        }
        let first_slot = buffers.len();
        for (s, &bytes) in plan.slot_bytes.iter().enumerate() {
            buffers.push(gpu.storage_buffer(&format!("slot {s}"), bytes));
        }
        for (t, p) in plan.placement.iter().enumerate() {
            if let Placement::Slot(s) = p {
                buffer_of[t] = Some(first_slot + s);
            }
        }
        for (t, desc) in graph.tensors.iter().enumerate() {
            if let Some(root) = desc.view_of {
                buffer_of[t] = buffer_of[root.0];
                offset_of[t] = desc.offset + offset_of[root.0];
            }
        }
        Placed {
            buffers,
            buffer_of,
            offset_of,
            shared,
        }
    }
}

/// All node parameters in one uniform buffer, each at an aligned offset; and the offsets.
fn node_params(gpu: &Gpu, graph: &Graph) -> (wgpu::Buffer, Vec<usize>) {
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    let mut param_bytes = Vec::new();
    let mut param_offsets = Vec::new();
    for node in &graph.nodes {
        param_offsets.push(param_bytes.len());
        let bytes = node.params.bytes();
        param_bytes.extend_from_slice(&bytes);
        param_bytes.resize(param_bytes.len().div_ceil(align) * align, 0);
    }
    (
        gpu.uniform_buffer("node params", &param_bytes),
        param_offsets,
    )
}

/// The graph's operand textures (storage, written by copies or pack kernels).
fn create_textures(gpu: &Gpu, graph: &Graph) -> Vec<wgpu::Texture> {
    graph
        .textures
        .iter()
        .map(|t| {
            gpu.device.create_texture(&wgpu::TextureDescriptor {
                label: Some(&t.name()),
                size: wgpu::Extent3d {
                    width: t.width,
                    height: t.height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: t.format.wgpu(),
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        })
        .collect()
}

/// What a node's bind group refers to.
struct Bound<'a> {
    placed: &'a Placed,
    params: &'a wgpu::Buffer,
    views: &'a [wgpu::TextureView],
    queues: Option<&'a wgpu::Buffer>,
    queue_stride: u64,
}

impl Bound<'_> {
    /// A node's bindings: its tensors in order, then its parameters, its textures, and for a
    /// tile-queue dispatch the next queue counter (`next_queue`, advanced).
    fn bind_group(
        &self,
        gpu: &Gpu,
        graph: &Graph,
        node: &Node,
        pipeline: &wgpu::ComputePipeline,
        param_offset: u64,
        next_queue: &mut u64,
    ) -> wgpu::BindGroup {
        let placed = self.placed;
        let mut entries: Vec<wgpu::BindGroupEntry> = node
            .tensors
            .iter()
            .enumerate()
            .map(|(b, &t)| wgpu::BindGroupEntry {
                binding: b as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &placed.buffers
                        [placed.buffer_of[t.0].expect("used tensors are placed")],
                    offset: placed.offset_of[t.0],
                    size: NonZeroU64::new(storage_size(graph.tensor(t).bytes())),
                }),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: node.tensors.len() as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: self.params,
                offset: param_offset,
                size: NonZeroU64::new(node.params.bytes().len() as u64),
            }),
        });
        for (b, t) in node.textures.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: (node.tensors.len() + 1 + b) as u32,
                resource: wgpu::BindingResource::TextureView(&self.views[t.0]),
            });
        }
        if let Dispatch::TileQueue(_) = node.dispatch {
            entries.push(wgpu::BindGroupEntry {
                binding: QUEUE_BINDING,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: self.queues.expect("made for queue nodes"),
                    offset: *next_queue * self.queue_stride,
                    size: NonZeroU64::new(4),
                }),
            });
            *next_queue += 1;
        }
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&node.label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }
}
