//! Whole-graph checks that run before anything is allocated.

use super::{Graph, GraphError, Role};

/// The device limits a graph must respect (a subset of `wgpu::Limits`, so that plans can be
/// checked without a device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_texture_dimension_2d: u32,
    /// Storage bindings start at multiples of this (the tile queues' spacing).
    pub min_storage_buffer_offset_alignment: u32,
}

impl DeviceLimits {
    /// What WebGPU guarantees everywhere.
    pub fn webgpu_default() -> Self {
        Self::from(&wgpu::Limits::default())
    }
}

impl From<&wgpu::Limits> for DeviceLimits {
    fn from(l: &wgpu::Limits) -> Self {
        DeviceLimits {
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_texture_dimension_2d: l.max_texture_dimension_2d,
            min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
        }
    }
}

/// Check limits, aliasing, dispatch sizes and that every read follows a write.
pub fn validate(graph: &Graph, limits: &DeviceLimits) -> Result<(), GraphError> {
    for t in graph.tensors.iter().filter(|t| t.view_of.is_none()) {
        let bytes = t.bytes();
        let checks = [
            (
                "max_storage_buffer_binding_size",
                limits.max_storage_buffer_binding_size,
            ),
            ("max_buffer_size", limits.max_buffer_size),
        ];
        for (limit_name, limit) in checks {
            if bytes > limit {
                return Err(GraphError::OverLimit {
                    tensor: t.name.clone(),
                    bytes,
                    limit_name,
                    limit,
                });
            }
        }
    }

    for t in &graph.textures {
        let limit = limits.max_texture_dimension_2d;
        if t.width > limit || t.height > limit {
            return Err(GraphError::TextureTooLarge {
                texture: t.name(),
                width: t.width,
                height: t.height,
                limit,
            });
        }
    }
    for node in &graph.nodes {
        if node.textures.len() != node.kernel.textures.len() {
            return Err(GraphError::TextureMismatch {
                node: node.label.clone(),
                kernel: node.kernel.name.into(),
                expected: node.kernel.textures.len(),
                found: node.textures.len(),
            });
        }
    }

    let mut written: Vec<bool> = graph
        .tensors
        .iter()
        .map(|t| t.role.defined_at_start())
        .collect();
    // Views share their root's buffer: writes, reads and aliasing are about roots.
    for node in &graph.nodes {
        for (i, (t, access)) in node.uses().enumerate() {
            let t = graph.root(t);
            let twice = node.tensors[i + 1..].iter().any(|&u| graph.root(u) == t);
            let writes_it = node.uses().any(|(u, a)| graph.root(u) == t && a.writes());
            if twice && writes_it {
                return Err(GraphError::Aliased {
                    node: node.label.clone(),
                    tensor: graph.tensor(t).name.clone(),
                });
            }
            if access.reads() && !written[t.0] {
                return Err(GraphError::ReadBeforeWrite {
                    node: node.label.clone(),
                    tensor: graph.tensor(t).name.clone(),
                });
            }
        }
        for (t, access) in node.uses() {
            if access.writes() {
                written[graph.root(t).0] = true;
            }
        }
        let max = limits.max_compute_workgroups_per_dimension;
        if node.dispatch.workgroups(max).is_none() {
            return Err(GraphError::DispatchTooLarge {
                node: node.label.clone(),
                dispatch: node.dispatch,
                max,
            });
        }
    }
    for (t, desc) in graph.tensors.iter().enumerate() {
        if desc.role == Role::Output && desc.view_of.is_none() && !written[t] {
            return Err(GraphError::OutputNeverWritten {
                tensor: desc.name.clone(),
            });
        }
    }
    Ok(())
}
