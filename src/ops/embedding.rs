//! Embedding gather: out[t] = table[ids[t]]. (The embedding is frozen in QLoRA: no backward.)

use crate::graph::{
    shape_str, Access, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

pub static GATHER: Kernel = Kernel {
    name: "embedding",
    shader: &shaders::EMBEDDING,
    entry: "embedding",
    variants: &[],
    textures: &[],
    bindings: &[
        Binding {
            name: "ids",
            access: Access::Read,
            dtype: DType::U32,
        },
        Binding {
            name: "table",
            access: Access::Read,
            dtype: DType::F32,
        },
        Binding {
            name: "out",
            access: Access::Write,
            dtype: DType::F32,
        },
    ],
};

/// An id that gathers a row of zeros.
pub const ZERO_ROW: u32 = u32::MAX;

/// Rows of `table` [vocab, dim] picked by `ids` [tokens], as a new [tokens, dim] temporary
/// (`ZERO_ROW` picks zeros). Any [rows, dim] tensor serves as a table.
pub fn gather(
    g: &mut Graph,
    name: &str,
    ids: TensorId,
    table: TensorId,
) -> Result<TensorId, GraphError> {
    gather_scaled(g, name, ids, table, 1.0)
}

/// `gather` with every value multiplied by `scale` (Gemma scales its embeddings by √hidden).
pub fn gather_scaled(
    g: &mut Graph,
    name: &str,
    ids: TensorId,
    table: TensorId,
    scale: f32,
) -> Result<TensorId, GraphError> {
    let tokens = g.tensor(ids).numel();
    let ts = g.tensor(table).shape.clone();
    let [vocab, dim] = ts[..] else {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "table '{}' is {}, not [vocab, dim]",
                g.tensor(table).name,
                shape_str(&ts)
            ),
        });
    };
    let out = g.temp(name, &[tokens, dim], DType::F32);
    let params = Params::new()
        .u32(tokens as u32)
        .u32(dim as u32)
        .u32(vocab as u32)
        .f32(scale);
    g.push(
        name,
        &GATHER,
        &[ids, table, out],
        params,
        Dispatch::linear(tokens * dim, 64),
    )?;
    Ok(out)
}

/// Check ids against the vocabulary before upload; the error names the first bad position.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<(), String> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(format!(
            "token id {} at position {i} is outside the vocabulary of {vocab}",
            ids[i]
        )),
        None => Ok(()),
    }
}
