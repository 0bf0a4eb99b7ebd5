//! Backends: every backend runs or refuses in words. Through OpenGL (what wgpu falls back to
//! without Vulkan) a training step and scoring equal Vulkan's; a backend the machine lacks is
//! named with the ones it has; a kernel that does not compile, and any error the device
//! reports outside a scope, become errors naming the kernel and the device, never a panic.

mod common;

use std::path::Path;

use common::cli::{fails, ok, path, pattern_jsonl, tiny_llama, webqlora};
use common::golden_step::check_golden_step;
use common::{gpu, temp_dir};
use webqlora::gpu::pipelines::PipelineKey;
use webqlora::gpu::GpuError;
use webqlora::shaders::Shader;

fn metrics(out: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The golden step (logits, loss, 28 gradients, the AdamW update) through OpenGL, within the
/// tolerances the Vulkan run of `cli_dump_step` meets.
#[test]
fn the_golden_step_through_gl_matches_peft() {
    check_golden_step(
        "tiny-llama/base-f32",
        "lora",
        &["--base", "f32", "--backend", "gl"],
    );
    let bnb_cpu = [
        "--base",
        "nf4",
        "--bnb-cpu-bf16",
        "--bnb-cpu-repacked",
        "--backend",
        "gl",
    ];
    check_golden_step("tiny-llama/base-bnb-nf4", "qlora", &bnb_cpu);
}

/// A whole training run (three steps: forward, backward, clipping, AdamW) and scoring with
/// its adapter, through GL and through Vulkan: the same losses and gradient norms.
#[test]
fn training_and_scoring_through_gl_equal_vulkan() {
    let dir = temp_dir("backend-gl");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(8, 20)).unwrap();
    let model = tiny_llama();
    for base in ["nf4", "f32"] {
        let run = |backend: &str| {
            let out = dir.join(format!("{backend}-{base}"));
            let text = ok(std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"))
                .args([
                    "train",
                    "--model",
                    path(&model),
                    "--base",
                    base,
                    "--data",
                    path(&data),
                    "--output",
                    path(&out),
                    "--steps",
                    "3",
                    "--lr",
                    "1e-2",
                    "--quiet",
                    "--backend",
                    backend,
                ])
                .output()
                .unwrap());
            (text, out)
        };
        let (gl_text, gl) = run("gl");
        assert!(gl_text.contains("(Gl)"), "not on GL: {gl_text}");
        let (vk_text, vk) = run("vulkan");
        assert!(vk_text.contains("(Vulkan)"), "{vk_text}");
        for ((gl_loss, gl_norm), (vk_loss, vk_norm)) in metrics(&gl).iter().zip(metrics(&vk)) {
            assert!(
                (gl_loss - vk_loss).abs() < 1e-5 * vk_loss.abs(),
                "{base}: loss {gl_loss} vs {vk_loss}"
            );
            assert!(
                (gl_norm - vk_norm).abs() < 1e-4 * vk_norm,
                "{base}: grad norm {gl_norm} vs {vk_norm}"
            );
        }
        // Scoring (the evaluation graph) with the trained adapter.
        let eval = |backend: &str| -> f64 {
            let text = ok(webqlora(&[
                "eval",
                "--model",
                path(&model),
                "--base",
                base,
                "--adapter",
                path(&gl),
                "--data",
                path(&data),
                "--json",
                "--backend",
                backend,
            ]));
            let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
            v["loss"].as_f64().unwrap()
        };
        let (g, v) = (eval("gl"), eval("vulkan"));
        assert!(
            (g - v).abs() < 1e-5 * v.abs(),
            "{base}: eval loss {g} vs {v}"
        );
    }
}

#[cfg(not(target_os = "macos"))]
#[test]
fn a_backend_the_machine_lacks_is_named_with_the_ones_it_has() {
    let dir = temp_dir("backend-metal");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(2, 8)).unwrap();
    for args in [
        &["devices", "--backend", "metal"][..],
        &["train", "--data", path(&data), "--backend", "metal"][..],
    ] {
        let mut all = args.to_vec();
        let model = tiny_llama();
        if args[0] == "train" {
            all.extend(["--model", path(&model)]);
        }
        let err = fails(webqlora(&all));
        assert!(err.contains("METAL"), "{err}");
        assert!(
            err.contains("this machine has: ") && err.contains("(Vulkan)"),
            "{err}"
        );
    }
    let err = fails(webqlora(&["devices", "--backend", "cuda"]));
    assert!(err.contains("unknown backend 'cuda'"), "{err}");
}

static BROKEN: Shader = Shader {
    name: "broken_for_test",
    file: "broken_for_test",
    source: "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_name; }",
    features: wgpu::Features::empty(),
};

static GOOD: Shader = Shader {
    name: "good_for_test",
    file: "good_for_test",
    source: "@group(0) @binding(0) var<storage, read_write> y: array<f32>;\n\
             @compute @workgroup_size(1) fn main() { y[0] = 1.0; }",
    features: wgpu::Features::empty(),
};

#[test]
fn a_kernel_that_does_not_compile_is_an_error_naming_kernel_and_device() {
    let gpu = gpu();
    let key = PipelineKey::new(BROKEN.name, "main", &[]);
    let err = gpu.pipeline(&BROKEN, &key).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GpuError::Kernel { .. }), "{text}");
    assert!(text.contains("broken_for_test::main"), "{text}");
    assert!(text.contains(&gpu.info.name), "{text}");
    assert!(text.contains("undefined_name"), "{text}");
    // The device goes on working.
    gpu.check().unwrap();
    gpu.pipeline(&GOOD, &PipelineKey::new(GOOD.name, "main", &[]))
        .unwrap();
    gpu.check().unwrap();
}

#[test]
fn an_error_outside_any_scope_is_reported_by_check_not_a_panic() {
    // Its own device: the error must not reach the tests sharing `gpu()`.
    let gpu = webqlora::gpu::Gpu::new_blocking(&Default::default()).unwrap();
    // MAP_READ with STORAGE is not a valid buffer usage.
    let _bad = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid usage"),
        size: 64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let err = gpu.check().unwrap_err().to_string();
    assert!(
        err.contains(&gpu.info.name) && err.contains("invalid usage"),
        "{err}"
    );
    gpu.check().unwrap();
}

#[test]
fn a_lost_device_is_reported_in_words_and_a_new_one_works() {
    // Its own device, destroyed as the browser's GPUDevice.destroy() or a GPU reset ends one.
    let gpu = webqlora::gpu::Gpu::new_blocking(&Default::default()).unwrap();
    let buffer = gpu.storage_buffer("before the loss", 64);
    pollster::block_on(gpu.read_bytes(&buffer, 64)).unwrap();
    assert_eq!(gpu.lost(), None);
    gpu.device.destroy();
    let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
    let lost = gpu.lost().expect("the loss is recorded");
    assert!(
        lost.contains("lost") && lost.contains("Destroyed"),
        "{lost}"
    );
    let err = pollster::block_on(gpu.read_bytes(&buffer, 64))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&gpu.info.name) && err.contains("lost"),
        "{err}"
    );
    // It stays lost; a new device runs.
    assert!(gpu.check().is_err());
    let fresh = webqlora::gpu::Gpu::new_blocking(&Default::default()).unwrap();
    let buffer = fresh.storage_buffer("after the loss", 64);
    pollster::block_on(fresh.read_bytes(&buffer, 64)).unwrap();
    fresh.check().unwrap();
}

/// `webqlora args` with `env` set (and `unset` removed).
fn with_env(args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_webqlora"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

/// A value of a backend or kernel switch that no setting takes is named with the variable,
/// by `devices` and by every command that opens a device, never ignored.
#[test]
fn environment_values_no_setting_takes_are_named() {
    let dir = temp_dir("env-values");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(2, 8)).unwrap();
    let model = tiny_llama();
    let out = dir.join("out");
    let train = [
        "train",
        "--model",
        path(&model),
        "--base",
        "f32",
        "--data",
        path(&data),
        "--output",
        path(&out),
        "--steps",
        "1",
    ];
    for (var, value) in [
        ("WGPU_BACKEND", "nonsense"),
        ("WGPU_BACKEND", "vulkan,cuda"),
        ("WEBQLORA_TEXTURES", "maybe"),
        ("WEBQLORA_SUBGROUPS", "yes"),
        ("WEBQLORA_KERNELS", "bogus"),
    ] {
        for args in [&["devices"][..], &train[..]] {
            let err = fails(with_env(args, &[(var, value)], &[]));
            assert!(
                err.contains(var) && err.contains(value),
                "{var}={value} {}: {err}",
                args[0]
            );
        }
        assert!(!dir.join("out").exists());
    }
    // The values that are taken still work.
    ok(with_env(
        &["devices"],
        &[("WEBQLORA_TEXTURES", "0"), ("WGPU_BACKEND", "Vulkan")],
        &[],
    ));
}

/// The default model's cache honours XDG_CACHE_HOME as xtask does, and without HOME is never
/// a `.cache` relative to the working folder.
#[test]
fn the_model_cache_follows_xdg_and_never_becomes_relative() {
    let dir = temp_dir("env-cache");
    let data = dir.join("d.jsonl");
    std::fs::write(&data, pattern_jsonl(2, 8)).unwrap();
    let args = ["eval", "--data", path(&data)];
    let xdg = dir.join("xdg");
    let err = fails(with_env(
        &args,
        &[("XDG_CACHE_HOME", path(&xdg))],
        &["WEBQLORA_CACHE"],
    ));
    assert!(
        err.contains(&format!("{}/webqlora/", xdg.display())),
        "{err}"
    );
    let err = fails(with_env(
        &args,
        &[],
        &["WEBQLORA_CACHE", "XDG_CACHE_HOME", "HOME"],
    ));
    let temp = std::env::temp_dir().join("webqlora");
    assert!(err.contains(&temp.display().to_string()), "{err}");
    let err = fails(with_env(
        &args,
        &[("XDG_CACHE_HOME", "relative")],
        &["WEBQLORA_CACHE", "HOME"],
    ));
    assert!(!err.contains("relative/webqlora"), "{err}");
}
