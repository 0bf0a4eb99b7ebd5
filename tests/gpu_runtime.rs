//! The GPU runtime: device limits, readback, the pipeline cache, the kernel timer, and the
//! `webqlora devices` listing.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{for_each_seed, gpu, random_f32};
use rand::Rng;
use webqlora::gpu::device::{enumerate, OPTIONAL_FEATURES};
use webqlora::gpu::pipelines::PipelineKey;
use webqlora::gpu::timer::GpuTimer;
use webqlora::gpu::AdapterRequest;
use webqlora::graph::{CompiledGraph, DType, Graph};
use webqlora::ops::{residual, rmsnorm};
use webqlora::shaders;

#[test]
fn device_gets_the_adapters_limits_not_the_webgpu_defaults() {
    let gpu = gpu();
    let (adapters, chosen) = pollster::block_on(enumerate(&AdapterRequest::default()));
    let adapter = adapters
        .iter()
        .find(|a| a.get_info() == gpu.info)
        .or_else(|| chosen.map(|i| &adapters[i]))
        .expect("the device's adapter is listed");
    let offered = adapter.limits();
    assert_eq!(
        gpu.limits.max_storage_buffer_binding_size,
        offered.max_storage_buffer_binding_size
    );
    assert_eq!(gpu.limits.max_buffer_size, offered.max_buffer_size);
    assert_eq!(
        gpu.limits.max_compute_workgroup_storage_size,
        offered.max_compute_workgroup_storage_size
    );
    assert_eq!(
        gpu.limits.max_storage_buffers_per_shader_stage,
        offered.max_storage_buffers_per_shader_stage
    );
    assert_eq!(gpu.features, adapter.features() & OPTIONAL_FEATURES);
}

#[test]
fn bytes_round_trip_through_a_buffer() {
    let gpu = gpu();
    for_each_seed("roundtrip", &[], |mut rng| {
        for len in [1usize, 3, 4, 257, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let buffer = gpu.storage_buffer("roundtrip", len as u64);
            gpu.upload(&buffer, &data);
            let back = pollster::block_on(gpu.read_bytes(&buffer, len as u64)).unwrap();
            assert_eq!(back, data, "length {len}");
        }
        let values = random_f32(&mut rng, 100, 1.0);
        let buffer = gpu.storage_buffer("f32", 400);
        gpu.upload(&buffer, bytemuck::cast_slice(&values));
        assert_eq!(
            pollster::block_on(gpu.read_f32(&buffer, 100)).unwrap(),
            values
        );
    });
}

#[test]
fn pipelines_are_compiled_once_per_key() {
    // A device of its own: the shared one's cache grows while other tests of this file run.
    let gpu = webqlora::gpu::Gpu::new_blocking(&AdapterRequest::default()).unwrap();
    let key = PipelineKey::new("residual", "residual_add", &[]);
    let first = gpu.pipeline(&shaders::RESIDUAL, &key).unwrap();
    let count = gpu.pipeline_count();
    let again = gpu.pipeline(&shaders::RESIDUAL, &key).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(gpu.pipeline_count(), count);
    let other = gpu
        .pipeline(
            &shaders::SWIGLU,
            &PipelineKey::new("swiglu", "swiglu_forward", &[]),
        )
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(gpu.pipeline_count(), count + 1);

    // Constants are part of the key, whatever order they are given in.
    let ab = PipelineKey::new("s", "e", &[("a", 1.0), ("b", 2.0)]);
    let ba = PipelineKey::new("s", "e", &[("b", 2.0), ("a", 1.0)]);
    assert_eq!(ab, ba);
    assert_ne!(ab, PipelineKey::new("s", "e", &[("a", 1.0), ("b", 3.0)]));
}

#[test]
fn profiled_run_times_every_node_and_computes_the_same() {
    let gpu = gpu();
    for_each_seed("profiled", &[], |mut rng| {
        let (rows, cols) = (256, 576);
        let x = random_f32(&mut rng, rows * cols, 1.0);
        let w = random_f32(&mut rng, cols, 1.0);
        let mut g = Graph::new();
        let xt = g.input("x", &[rows, cols], DType::F32);
        let wt = g.param("weight", &[cols], DType::F32);
        let (y, _) = rmsnorm::forward(&mut g, "y", xt, wt, 1e-6).unwrap();
        let out = residual::add(&mut g, "out", y, xt).unwrap();
        g.mark_output(out);
        let compiled = CompiledGraph::new(gpu, g).unwrap();
        compiled.poison(gpu, common::POISON);
        compiled.write(gpu, xt, bytemuck::cast_slice(&x)).unwrap();
        compiled.write(gpu, wt, bytemuck::cast_slice(&w)).unwrap();

        let times = pollster::block_on(compiled.run_profiled(gpu)).unwrap();
        let got = pollster::block_on(compiled.read_f32(gpu, out)).unwrap();
        let (ny, _) = rmsnorm::cpu_forward(&x, &w, cols, 1e-6);
        let want = residual::cpu_add(&ny, &x);
        common::Tol::F32.check("norm and residual", &got, &want);

        match (times, GpuTimer::new(gpu, 1)) {
            (Some(times), Some(_)) => {
                let labels: Vec<_> = times.iter().map(|t| (t.0.as_str(), t.1)).collect();
                assert_eq!(
                    labels,
                    [("y", "rmsnorm_forward_vec4"), ("out", "residual_add_vec4")]
                );
                for (label, _, ms) in &times {
                    assert!(
                        ms.is_finite() && *ms > 0.0 && *ms < 10_000.0,
                        "{label}: {ms} ms"
                    );
                }
            }
            (None, None) => eprintln!("adapter has no timestamp queries; timing not checked"),
            _ => panic!("run_profiled and GpuTimer disagree on timestamp support"),
        }
    });
}

#[test]
fn devices_lists_adapters_limits_and_the_one_used() {
    let out = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .arg("devices")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("<- used").count(), 1, "{text}");
    for needle in [
        "[0] ",
        "backend: ",
        "driver: ",
        "max storage binding: ",
        "max buffer size: ",
        "workgroup storage: ",
        "invocations per workgroup: ",
        "shader-f16: ",
        "subgroups: ",
        "timestamp queries: ",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    let gpu = gpu();
    assert!(
        text.contains(&gpu.info.name),
        "the test device is listed:\n{text}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_webqlora"))
        .args(["devices", "--backend", "cuda"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown backend 'cuda'"));
}

/// The kernel choice from this device's own capabilities, claimed to be a software device:
/// the texture kernels need four storage textures a shader stage (WebGPU's default), their
/// NF4 subgroup versions five; a device allowing fewer gets the buffer kernels (or the plain
/// texture kernels). The same device as hardware gets the portable kernels.
#[test]
fn graphs_fall_back_when_too_few_storage_textures_are_allowed() {
    use webqlora::kernels::{Capabilities, Family, Kernels};
    for var in ["WEBQLORA_TEXTURES", "WEBQLORA_SUBGROUPS"] {
        assert!(std::env::var_os(var).is_none(), "run without {var}");
    }
    let gpu = common::gpu();
    let mut caps = Capabilities::of(&gpu.info, &gpu.limits, gpu.features);
    caps.software = true;
    let subgroups = gpu.has_eight_lane_subgroups();
    let max_side = gpu.limits.max_texture_dimension_2d;
    for (allowed, textures, eight_lanes) in [
        (8, Some(max_side), subgroups),
        (5, Some(max_side), subgroups),
        (4, Some(max_side), false),
        (3, None, false),
    ] {
        caps.storage_textures = allowed;
        let k = Kernels::decide(&caps);
        assert!(Family::ALL.iter().all(|&f| !k.portable(f)));
        assert_eq!(k.textures, textures, "{allowed} storage textures");
        assert_eq!(
            k.eight_lane_subgroups, eight_lanes,
            "{allowed} storage textures"
        );
    }
    caps.software = false;
    caps.storage_textures = 8;
    let k = Kernels::decide(&caps);
    assert!(Family::ALL.iter().all(|&f| k.portable(f)));
    assert_eq!((k.textures, k.eight_lane_subgroups), (None, false));
}
