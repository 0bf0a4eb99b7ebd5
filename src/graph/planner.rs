//! Liveness planning: temporaries share buffers ("slots") when their lifetimes do not overlap.
//!
//! A temporary lives from the node that first writes it to the last node that uses it. Nodes
//! are walked in order; at each node the tensors it defines take a free slot (the smallest that
//! fits and is at most twice the size, else the largest smaller one grown, else a new one), then
//! the tensors whose last use was this node give theirs back. Outputs of a node therefore never share a buffer with that
//! node's inputs. Inputs, params and outputs get buffers of their own.

use std::fmt::Write as _;

use super::{shape_str, validate, DeviceLimits, Graph, GraphError, Role};
use crate::gpu::buffers::storage_size;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A buffer of its own (inputs, params, outputs).
    Own,
    /// Shared slot number.
    Slot(usize),
    /// A temporary nothing uses (never allocated).
    Unused,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub placement: Vec<Placement>,
    /// Size of each shared slot in bytes.
    pub slot_bytes: Vec<u64>,
    /// Bytes of the tensors with their own buffers.
    pub pinned_bytes: u64,
    /// Bytes of the operand textures (software devices).
    pub texture_bytes: u64,
}

impl Plan {
    /// Validate `graph` against `limits` and assign every tensor a buffer.
    pub fn new(graph: &Graph, limits: &DeviceLimits) -> Result<Plan, GraphError> {
        validate(graph, limits)?;
        let n = graph.tensors.len();

        // Node index of each buffer's first write and last use (a view's uses are its root's).
        let mut first: Vec<Option<usize>> = vec![None; n];
        let mut last: Vec<usize> = vec![0; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            for (t, _) in node.uses() {
                let root = graph.root(t);
                first[root.0].get_or_insert(i);
                last[root.0] = i;
            }
        }

        let mut placement = vec![Placement::Unused; n];
        let mut pinned_bytes = 0;
        for (t, desc) in graph.tensors.iter().enumerate() {
            if desc.role.pinned() && desc.view_of.is_none() {
                placement[t] = Placement::Own;
                pinned_bytes += storage_size(desc.bytes());
            }
        }

        let mut slot_bytes: Vec<u64> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        for i in 0..graph.nodes.len() {
            let starting =
                (0..n).filter(|&t| graph.tensors[t].role == Role::Temp && first[t] == Some(i));
            for t in starting {
                let need = storage_size(graph.tensors[t].bytes());
                let slot = take_slot(&mut free, &mut slot_bytes, need);
                placement[t] = Placement::Slot(slot);
            }
            for t in 0..n {
                if let (Placement::Slot(s), true) = (placement[t], last[t] == i) {
                    free.push(s);
                }
            }
        }
        for (t, desc) in graph.tensors.iter().enumerate() {
            if let Some(root) = desc.view_of {
                placement[t] = placement[root.0];
            }
        }
        Ok(Plan {
            placement,
            slot_bytes,
            pinned_bytes,
            texture_bytes: graph.textures.iter().map(|t| t.bytes()).sum(),
        })
    }

    /// Bytes of all buffers the graph needs at once.
    pub fn peak_bytes(&self) -> u64 {
        self.pinned_bytes + self.slot_bytes.iter().sum::<u64>() + self.texture_bytes
    }

    /// Tensors, where each lives, and the planned peak.
    pub fn describe(&self, graph: &Graph) -> String {
        let mut out = String::new();
        for (t, desc) in graph.tensors.iter().enumerate() {
            let at = match self.placement[t] {
                _ if desc.view_of.is_some() => {
                    format!("view of {}", graph.tensors[desc.view_of.unwrap().0].name)
                }
                Placement::Own => "own buffer".to_string(),
                Placement::Slot(s) => format!("slot {s}"),
                Placement::Unused => "unused".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<24} {:<14} {:<4} {:<7} {:>12} B  {at}",
                desc.name,
                shape_str(&desc.shape),
                desc.dtype.to_string(),
                desc.role.to_string(),
                desc.bytes(),
            );
        }
        let temp_total: u64 = graph
            .tensors
            .iter()
            .filter(|t| t.role == Role::Temp && t.view_of.is_none())
            .map(|t| storage_size(t.bytes()))
            .sum();
        let _ = writeln!(
            out,
            "planned peak: {} bytes ({:.2} MiB): {} pinned + {} in {} shared slots + {} in {} textures (temporaries unshared: {} bytes)",
            self.peak_bytes(),
            self.peak_bytes() as f64 / (1 << 20) as f64,
            self.pinned_bytes,
            self.slot_bytes.iter().sum::<u64>(),
            self.slot_bytes.len(),
            self.texture_bytes,
            graph.textures.len(),
            temp_total,
        );
        out
    }
}

/// Where a new temporary of `need` bytes goes: the smallest free slot that fits without
/// wasting more than half of it; else the largest free slot smaller than `need`, grown; else a
/// new slot. (A small tensor that lives long, such as a LoRA gradient kept for the optimizer,
/// must not pin a large activation slot.)
fn take_slot(free: &mut Vec<usize>, slot_bytes: &mut Vec<u64>, need: u64) -> usize {
    let fitting = free
        .iter()
        .enumerate()
        .filter(|&(_, &s)| slot_bytes[s] >= need && slot_bytes[s] <= 2 * need)
        .min_by_key(|&(_, &s)| slot_bytes[s]);
    let smaller = free
        .iter()
        .enumerate()
        .filter(|&(_, &s)| slot_bytes[s] < need)
        .max_by_key(|&(_, &s)| slot_bytes[s]);
    match fitting.or(smaller) {
        Some((pos, &s)) => {
            free.swap_remove(pos);
            slot_bytes[s] = slot_bytes[s].max(need);
            s
        }
        None => {
            slot_bytes.push(need);
            slot_bytes.len() - 1
        }
    }
}
