//! Embedding gather: out[t] = table[ids[t]]. (The embedding is frozen in QLoRA: no backward.)

use crate::graph::{
    shape_str, Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId,
};
use crate::shaders;

pub static GATHER: Kernel = Kernel {
    name: "embedding",
    shader: &shaders::EMBEDDING,
    entry: "embedding",
    textures: &[],
    bindings: &[
        Binding::read("ids", DType::U32),
        Binding::read("table", DType::F32),
        Binding::write("out", DType::F32),
    ],
};

/// `GATHER` for a table's later row parts: writes only the rows its part holds.
pub static GATHER_PART: Kernel = Kernel {
    name: "embedding_part",
    shader: &shaders::EMBEDDING,
    entry: "embedding",
    textures: &[],
    bindings: &[
        GATHER.bindings[0],
        GATHER.bindings[1],
        Binding::read_write("out", DType::F32),
    ],
};

/// `GATHER` from an f16 table (read as words of two values; no shader-f16 needed).
pub static GATHER_F16: Kernel = Kernel {
    name: "embedding_f16",
    shader: &shaders::EMBEDDING_F16,
    entry: "embedding_f16",
    textures: &[],
    bindings: &[
        GATHER.bindings[0],
        Binding::read("table", DType::F16),
        GATHER.bindings[2],
    ],
};

/// `GATHER_PART` from an f16 table.
pub static GATHER_F16_PART: Kernel = Kernel {
    name: "embedding_f16_part",
    shader: &shaders::EMBEDDING_F16,
    entry: "embedding_f16",
    textures: &[],
    bindings: &[
        GATHER.bindings[0],
        GATHER_F16.bindings[1],
        GATHER_PART.bindings[2],
    ],
};

/// Rows of an f16 table widened to f32 (`widen_rows`).
pub static WIDEN_F16: Kernel = Kernel {
    name: "widen_f16",
    shader: &shaders::WIDEN_F16,
    entry: "widen_f16",
    textures: &[],
    bindings: &[GATHER_F16.bindings[1], Binding::write("out", DType::F32)],
};

/// Rows `first .. first + rows` of an f16 table [table rows, dim] as a new f32 temporary
/// [rows, dim] named `name`, for the f32 products (the lm-head of a large vocabulary).
pub fn widen_rows(
    g: &mut Graph,
    name: &str,
    table: TensorId,
    first: usize,
    rows: usize,
) -> Result<TensorId, GraphError> {
    let ts = g.tensor(table).shape.clone();
    let ok = g.tensor(table).dtype == DType::F16
        && ts.len() == 2
        && ts[1].is_multiple_of(2)
        && first + rows <= ts[0]
        && rows > 0;
    if !ok {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "rows {first}..{} of '{}' ({} {}): not f16 rows of an even width inside it",
                first + rows,
                g.tensor(table).name,
                g.tensor(table).dtype,
                shape_str(&ts)
            ),
        });
    }
    let dim = ts[1];
    let out = g.temp(name, &[rows, dim], DType::F32);
    let params = Params::new()
        .u32(rows as u32)
        .u32(dim as u32)
        .u32(first as u32);
    let dispatch = Dispatch::linear(rows * dim / 2, 64);
    g.push(name, &WIDEN_F16, &[table, out], params, dispatch)?;
    Ok(out)
}

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
    gather_parts(g, name, ids, &[table], scale)
}

/// `gather_scaled` from a table declared as row parts [rows_i, dim] in order (one binding
/// each, `Graph::row_parts`), f32 or f16 (an even dim): one dispatch a part.
pub fn gather_parts(
    g: &mut Graph,
    name: &str,
    ids: TensorId,
    parts: &[TensorId],
    scale: f32,
) -> Result<TensorId, GraphError> {
    let tokens = g.tensor(ids).numel();
    let mut shapes = Vec::with_capacity(parts.len());
    for &part in parts {
        let ts = g.tensor(part).shape.clone();
        let [rows, dim] = ts[..] else {
            return Err(GraphError::ShapeMismatch {
                op: name.into(),
                detail: format!(
                    "table '{}' is {}, not [vocab, dim]",
                    g.tensor(part).name,
                    shape_str(&ts)
                ),
            });
        };
        shapes.push((rows, dim));
    }
    let dim = shapes.first().map_or(0, |s| s.1);
    let dtype = parts.first().map(|&p| g.tensor(p).dtype);
    let f16 = dtype == Some(DType::F16);
    if dim == 0
        || shapes.iter().any(|s| s.1 != dim)
        || parts.iter().any(|&p| Some(g.tensor(p).dtype) != dtype)
        || (f16 && !dim.is_multiple_of(2))
    {
        return Err(GraphError::ShapeMismatch {
            op: name.into(),
            detail: format!(
                "table parts {shapes:?} must share one width above 0 and one value type \
                 (f16 tables an even width)"
            ),
        });
    }
    let vocab: usize = shapes.iter().map(|s| s.0).sum();
    let out = g.temp(name, &[tokens, dim], DType::F32);
    let mut first = 0;
    for (i, (&part, &(rows, _))) in parts.iter().zip(&shapes).enumerate() {
        let params = Params::new()
            .u32(tokens as u32)
            .u32(dim as u32)
            .u32(vocab as u32)
            .f32(scale)
            .u32(first as u32)
            .u32(rows as u32)
            .u32((i == 0) as u32);
        let (kernel, label) = match (i, f16) {
            (0, false) => (&GATHER, name.to_string()),
            (0, true) => (&GATHER_F16, name.to_string()),
            (_, false) => (&GATHER_PART, format!("{name}[{first}..]")),
            (_, true) => (&GATHER_F16_PART, format!("{name}[{first}..]")),
        };
        let per_invocation = if f16 { 2 } else { 1 };
        let dispatch = Dispatch::linear(tokens * dim / per_invocation, 64);
        g.push(label, kernel, &[ids, part, out], params, dispatch)?;
        first += rows;
    }
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
