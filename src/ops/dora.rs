//! DoRA (weight-decomposed LoRA, PEFT's `use_dora`): an adapted linear's output is
//!   y = m ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) / n,   n[j] = ‖W[j, :] + s·(B·A)[j, :]‖
//! with a trained magnitude m [out] per output, and the norm n taken as a constant in the
//! backward (the DoRA paper's §4.3, and PEFT's `weight_norm.detach()`). So, for the output's
//! gradient dy, with y₀ the adapted product before the scale:
//!   dm[j] = Σ_t dy[t, j]·y₀[t, j] / n[j]
//!   dy₀ = dy ⊙ m / n   (then the LoRA backward of dy₀: dA, dB and dx as without DoRA)
//! n is computed without a dense W: ‖W_j‖² once at load, the rest from A·Wᵀ (the base
//! product of A's r rows) and B·A·Aᵀ, each step (`norm`).

use crate::graph::{Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static NORM: Kernel = Kernel {
    name: "dora_norm",
    shader: &shaders::DORA_NORM,
    entry: "dora_norm",
    textures: &[],
    bindings: &[
        Binding::read("base_norms2", DType::F32),
        Binding::read("b", DType::F32),
        Binding::read("aw", DType::F32),
        Binding::read("bg", DType::F32),
        Binding::write("norm", DType::F32),
    ],
};

pub static SCALE: Kernel = Kernel {
    name: "dora_scale",
    shader: &shaders::DORA_SCALE,
    entry: "dora_scale",
    textures: &[],
    bindings: &[
        Binding::read("y", DType::F32),
        Binding::read("magnitude", DType::F32),
        Binding::read("norm", DType::F32),
        Binding::write("out", DType::F32),
    ],
};

pub static MAGNITUDE_GRAD: Kernel = Kernel {
    name: "dora_magnitude_grad",
    shader: &shaders::DORA_MAGNITUDE_GRAD,
    entry: "dora_magnitude_grad",
    textures: &[],
    bindings: &[
        Binding::read("dy", DType::F32),
        Binding::read("y", DType::F32),
        Binding::read("norm", DType::F32),
        Binding::write("grad", DType::F32),
    ],
};

const WORKGROUP: usize = 64;

fn mismatch(op: &str, detail: String) -> GraphError {
    GraphError::ShapeMismatch {
        op: op.into(),
        detail,
    }
}

/// The row norms n [out] (a new temporary `name`) of W + scale·B·A, from ‖W_j‖²
/// (`base_norms2` [out]), B [out, r], A·Wᵀ (`aw` [r, out]) and B·A·Aᵀ (`bg` [out, r]).
pub fn norm(
    g: &mut Graph,
    name: &str,
    base_norms2: TensorId,
    b: TensorId,
    aw: TensorId,
    bg: TensorId,
    scale: f32,
) -> Result<TensorId, GraphError> {
    let [out, r] = g.tensor(b).shape[..] else {
        return Err(mismatch(
            name,
            format!("B of shape {:?}", g.tensor(b).shape),
        ));
    };
    let shapes = [
        (base_norms2, vec![out]),
        (aw, vec![r, out]),
        (bg, vec![out, r]),
    ];
    if let Some((t, want)) = shapes.iter().find(|(t, want)| g.tensor(*t).shape != *want) {
        let t = g.tensor(*t);
        return Err(mismatch(
            name,
            format!("'{}' of shape {:?}, not {want:?}", t.name, t.shape),
        ));
    }
    let n = g.temp(name, &[out], DType::F32);
    let params = Params::new().u32(out as u32).u32(r as u32).f32(scale);
    g.push(
        name,
        &NORM,
        &[base_norms2, b, aw, bg, n],
        params,
        Dispatch::linear(out, WORKGROUP),
    )?;
    Ok(n)
}

/// `y ⊙ magnitude / norm` by column, a new temporary `name` of y's shape [rows, n].
pub fn scale(
    g: &mut Graph,
    name: &str,
    y: TensorId,
    magnitude: TensorId,
    norm: TensorId,
) -> Result<TensorId, GraphError> {
    let (rows, n) = columns(g, name, y, &[magnitude, norm])?;
    let out = g.temp(name, &g.tensor(y).shape.clone(), DType::F32);
    let params = Params::new().u32(rows as u32).u32(n as u32);
    g.push(
        name,
        &SCALE,
        &[y, magnitude, norm, out],
        params,
        Dispatch::linear(rows * n, WORKGROUP),
    )?;
    Ok(out)
}

/// The magnitude's gradient [n] (a new temporary `name`): Σ_t dy[t, j]·y[t, j] / norm[j].
pub fn magnitude_grad(
    g: &mut Graph,
    name: &str,
    dy: TensorId,
    y: TensorId,
    norm: TensorId,
) -> Result<TensorId, GraphError> {
    g.expect_same_shape(name, dy, y)?;
    let (rows, n) = columns(g, name, y, &[norm])?;
    let grad = g.temp(name, &[n], DType::F32);
    let params = Params::new().u32(rows as u32).u32(n as u32);
    g.push(
        name,
        &MAGNITUDE_GRAD,
        &[dy, y, norm, grad],
        params,
        Dispatch::linear(n, WORKGROUP),
    )?;
    Ok(grad)
}

/// (rows, columns) of `y`, checking that each of `per_column` holds one value a column.
fn columns(
    g: &Graph,
    name: &str,
    y: TensorId,
    per_column: &[TensorId],
) -> Result<(usize, usize), GraphError> {
    let n = g.tensor(y).shape.last().copied().unwrap_or(0);
    if let Some(t) = per_column.iter().find(|&&t| g.tensor(t).shape != [n]) {
        let t = g.tensor(*t);
        return Err(mismatch(
            name,
            format!("'{}' of shape {:?} for rows of {n}", t.name, t.shape),
        ));
    }
    if n == 0 {
        return Err(mismatch(name, "rows of no values".into()));
    }
    Ok((g.tensor(y).numel() / n, n))
}

/// ‖W_j‖² of each row of W [out, in] (summed in f64).
pub fn row_norms2(w: &[f32], inp: usize) -> Vec<f32> {
    w.chunks_exact(inp)
        .map(|row| row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() as f32)
        .collect()
}

/// W ← W ⊙ m / ‖W_j‖ by row (W [out, in] the merged W + s·B·A): a DoRA adapter merged, as
/// PEFT's merge does.
pub fn scale_rows_to(w: &mut [f32], magnitude: &[f32], inp: usize) {
    for (row, &m) in w.chunks_exact_mut(inp).zip(magnitude) {
        let norm = row
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        let f = (m as f64 / norm) as f32;
        row.iter_mut().for_each(|v| *v *= f);
    }
}

/// CPU reference of `norm`, straight from its definition: ‖W_j + s·(B·A)_j‖ with W dense.
pub fn cpu_norm(w: &[f32], a: &[f32], b: &[f32], inp: usize, r: usize, s: f32) -> Vec<f32> {
    let mut merged = w.to_vec();
    crate::lora::add_lora(&mut merged, a, b, w.len() / inp, inp, r, s);
    row_norms2(&merged, inp).iter().map(|v| v.sqrt()).collect()
}

/// CPU reference of `scale`.
pub fn cpu_scale(y: &[f32], magnitude: &[f32], norm: &[f32]) -> Vec<f32> {
    let n = norm.len();
    y.iter()
        .enumerate()
        .map(|(i, &v)| v * (magnitude[i % n] / norm[i % n]))
        .collect()
}

/// CPU reference of `magnitude_grad`.
pub fn cpu_magnitude_grad(dy: &[f32], y: &[f32], norm: &[f32]) -> Vec<f32> {
    let n = norm.len();
    (0..n)
        .map(|j| {
            let sum: f64 = dy[j..]
                .iter()
                .step_by(n)
                .zip(y[j..].iter().step_by(n))
                .map(|(&d, &v)| d as f64 * v as f64)
                .sum();
            (sum / norm[j] as f64) as f32
        })
        .collect()
}
