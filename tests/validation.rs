//! Each validation error is provoked once and its message checked.

mod common;

use webqlora::gpu::{AdapterRequest, Gpu};
use webqlora::graph::{
    CompiledGraph, DType, DeviceLimits, Dispatch, Graph, GraphError, Params, Plan,
};
use webqlora::ops::{residual, rmsnorm, swiglu};

fn plan_err(g: &Graph, limits: &DeviceLimits) -> String {
    Plan::new(g, limits).unwrap_err().to_string()
}

#[test]
fn reading_a_tensor_before_anything_writes_it() {
    let mut g = Graph::new();
    let x = g.input("x", &[8], DType::F32);
    let never = g.temp("never_written", &[8], DType::F32);
    let out = residual::add(&mut g, "sum", x, never).unwrap();
    g.mark_output(out);
    let msg = plan_err(&g, &DeviceLimits::webgpu_default());
    assert_eq!(
        msg,
        "node 'sum' reads tensor 'never_written' before anything writes it"
    );
}

#[test]
fn shape_mismatch_names_both_tensors() {
    let mut g = Graph::new();
    let a = g.input("a", &[4, 8], DType::F32);
    let b = g.input("b", &[8, 4], DType::F32);
    let err = residual::add(&mut g, "h1", a, b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "h1: shape mismatch: 'a' is [4, 8] but 'b' is [8, 4]"
    );

    let w = g.param("norm_weight", &[4], DType::F32);
    let err = rmsnorm::forward(&mut g, "h_norm", a, w, 1e-5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "h_norm: shape mismatch: weight 'norm_weight' is [4] but the rows of 'a' [4, 8] have 8 columns"
    );
    assert!(g.nodes.is_empty(), "a rejected op adds no node");
}

#[test]
fn dtype_mismatch_names_binding_and_tensor() {
    let mut g = Graph::new();
    let ids = g.input("input_ids", &[8], DType::U32);
    let up = g.input("up", &[8], DType::F32);
    let err = swiglu::forward(&mut g, "act", ids, up, swiglu::Activation::Silu).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'act': binding 'gate' of kernel 'swiglu_forward_vec4' wants f32, tensor 'input_ids' is u32"
    );
}

#[test]
fn wrong_number_of_tensors() {
    let mut g = Graph::new();
    let a = g.input("a", &[8], DType::F32);
    let err = g
        .push(
            "lonely",
            &residual::ADD,
            &[a],
            Params::new(),
            Dispatch::Linear(1),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 'lonely': kernel 'residual_add' takes 3 tensors, got 1"
    );
}

#[test]
fn binding_over_the_device_limit() {
    let mut g = Graph::new();
    let rows = 1024;
    let vocab = 49152;
    let a = g.input("logits_a", &[rows, vocab], DType::F32); // 192 MiB
    let out = residual::add(&mut g, "logits", a, a).unwrap();
    g.mark_output(out);
    let msg = plan_err(&g, &DeviceLimits::webgpu_default());
    assert_eq!(
        msg,
        "tensor 'logits_a' needs 201326592 bytes in one binding, over the device's \
         max_storage_buffer_binding_size of 134217728 bytes"
    );
}

#[test]
fn a_writable_binding_cannot_alias_another() {
    let mut g = Graph::new();
    let a = g.input("a", &[8], DType::F32);
    let t = residual::add(&mut g, "t", a, a).unwrap();
    g.push(
        "in_place",
        &residual::ADD,
        &[t, a, t],
        Params::new().u32(8),
        Dispatch::Linear(1),
    )
    .unwrap();
    g.mark_output(t);
    let msg = plan_err(&g, &DeviceLimits::webgpu_default());
    assert_eq!(
        msg,
        "node 'in_place' binds tensor 't' twice and writes it; a dispatch cannot alias a writable binding"
    );
}

#[test]
fn dispatch_that_cannot_be_folded() {
    let mut g = Graph::new();
    let a = g.input("a", &[8], DType::F32);
    let out = g.temp("out", &[8], DType::F32);
    g.push(
        "huge",
        &residual::ADD,
        &[a, a, out],
        Params::new().u32(8),
        Dispatch::Grid([70_000, 1, 1]),
    )
    .unwrap();
    g.mark_output(out);
    let msg = plan_err(&g, &DeviceLimits::webgpu_default());
    assert_eq!(
        msg,
        "node 'huge': dispatch Grid([70000, 1, 1]) exceeds 65535 workgroups per dimension"
    );

    let small = DeviceLimits {
        max_compute_workgroups_per_dimension: 16,
        ..DeviceLimits::webgpu_default()
    };
    let err = Plan::new(
        &{
            let mut g = Graph::new();
            // 300 workgroups of 64 vec4s: more than 16 x 16.
            let a = g.input("a", &[4 * 64 * 300], DType::F32);
            let out = residual::add(&mut g, "out", a, a).unwrap();
            g.mark_output(out);
            g
        },
        &small,
    )
    .unwrap_err();
    assert!(matches!(err, GraphError::DispatchTooLarge { .. }), "{err}");
}

#[test]
fn output_never_written() {
    let mut g = Graph::new();
    let out = g.temp("logits", &[8], DType::F32);
    g.mark_output(out);
    let msg = plan_err(&g, &DeviceLimits::webgpu_default());
    assert_eq!(msg, "output tensor 'logits' is never written by any node");
}

#[test]
fn host_writes_and_reads_are_checked() {
    let gpu = common::gpu();
    let mut g = Graph::new();
    let a = g.input("a", &[4], DType::F32);
    let out = residual::add(&mut g, "out", a, a).unwrap();
    g.mark_output(out);
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    let err = compiled.write(gpu, a, &[0u8; 12]).unwrap_err();
    assert_eq!(err.to_string(), "tensor 'a' holds 16 bytes, got 12");
    let err = compiled.write(gpu, out, &[0u8; 16]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor 'out' (output) is written by the graph; only inputs and params are written by the host"
    );
}

#[test]
fn adapter_index_out_of_range() {
    let request = AdapterRequest {
        index: Some(99),
        backend: None,
    };
    let err = Gpu::new_blocking(&request).unwrap_err().to_string();
    assert!(
        err.starts_with("adapter index 99 does not exist:") && err.contains("webqlora devices"),
        "{err}"
    );
}
