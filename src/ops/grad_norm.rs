//! Global gradient norm and the clip factor, computed on the GPU (no readback).

use crate::graph::{Binding, DType, Dispatch, Graph, GraphError, Kernel, Params, TensorId};
use crate::shaders;

pub static SUMSQ: Kernel = Kernel {
    name: "grad_sumsq",
    shader: &shaders::GRAD_NORM,
    entry: "grad_sumsq",
    textures: &[],
    bindings: &[
        Binding::read("grad", DType::F32),
        Binding::read_write("partials", DType::F32),
    ],
};

pub static CLIP: Kernel = Kernel {
    name: "grad_clip",
    shader: &shaders::GRAD_CLIP,
    entry: "grad_clip",
    textures: &[],
    bindings: &[
        Binding::read("partials", DType::F32),
        Binding::write("grad_scale", DType::F32),
    ],
};

/// Gradient elements a workgroup of `grad_sumsq` sums (shaders/grad_norm.wgsl's CHUNK).
const CHUNK: usize = 4096;

/// The most partial sums one norm takes (268M gradient elements): far past any adapter, and
/// with `grad_clip`'s 256 invocations each looping at most 256 times, well inside llvmpipe's
/// 65,535 loop iterations an invocation.
pub const MAX_PARTIALS: usize = 65_535;

/// The norm of all `grads` together and the factor that clips it to `max_norm` (no clipping
/// when `max_norm` <= 0): a new [2] tensor `name` = (scale, norm) for AdamW's `grad_scale`.
/// The partial sums live in a persistent scratch param `<name>_partials`, fully rewritten by
/// every run before it is read.
pub fn clip(
    g: &mut Graph,
    name: &str,
    grads: &[TensorId],
    max_norm: f32,
) -> Result<TensorId, GraphError> {
    let chunks: Vec<usize> = grads
        .iter()
        .map(|&t| g.tensor(t).numel().div_ceil(CHUNK))
        .collect();
    let count: usize = chunks.iter().sum();
    if count > MAX_PARTIALS {
        return Err(GraphError::Unsupported {
            op: name.into(),
            detail: format!(
                "{} gradient elements need {count} partial sums; at most {MAX_PARTIALS} \
                 ({} elements) are supported",
                grads.iter().map(|&t| g.tensor(t).numel()).sum::<usize>(),
                MAX_PARTIALS * CHUNK
            ),
        });
    }
    let partials = g.param(&format!("{name}_partials"), &[count.max(1)], DType::F32);
    let mut offset = 0;
    for (&grad, &n_chunks) in grads.iter().zip(&chunks) {
        let n = g.tensor(grad).numel();
        let params = Params::new().u32(n as u32).u32(offset as u32);
        let label = format!("{name}: |{}|²", g.tensor(grad).name);
        g.push(
            label,
            &SUMSQ,
            &[grad, partials],
            params,
            Dispatch::Linear(n_chunks.max(1) as u32),
        )?;
        offset += n_chunks;
    }
    let scale = g.temp(name, &[2], DType::F32);
    let params = Params::new().u32(count as u32).f32(max_norm);
    g.push(
        name,
        &CLIP,
        &[partials, scale],
        params,
        Dispatch::Grid([1, 1, 1]),
    )?;
    Ok(scale)
}

/// CPU reference: (scale, norm), as torch.nn.utils.clip_grad_norm_.
pub fn cpu_clip(grads: &[&[f32]], max_norm: f32) -> (f32, f32) {
    let sum: f64 = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    let norm = sum.sqrt();
    let scale = if max_norm > 0.0 {
        (max_norm as f64 / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    (scale as f32, norm as f32)
}
