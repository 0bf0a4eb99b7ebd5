//! Every WGSL file under shaders/ is parsed and validated by naga with the capabilities wgpu
//! grants for the features the shader declares, and every kernel's binding table agrees with
//! its shader (names, order, access, the params uniform last).

use std::collections::BTreeSet;

use naga::valid::ValidationFlags;
use webqlora::graph::{Access, TexelFormat};
use webqlora::ops::all_kernels;
use webqlora::shaders::{Shader, ALL};

fn parse_and_validate(shader: &Shader) -> naga::Module {
    let module = naga::front::wgsl::parse_str(shader.source).unwrap_or_else(|e| {
        panic!(
            "shaders/{}.wgsl ({}) does not parse:\n{}",
            shader.file,
            shader.name,
            e.emit_to_string(shader.source)
        )
    });
    let mut validator = wgpu_naga_bridge::create_validator(
        shader.features,
        wgpu::DownlevelFlags::empty(),
        ValidationFlags::all(),
    );
    if let Err(e) = validator.validate(&module) {
        panic!(
            "shaders/{}.wgsl ({}) fails validation:\n{}",
            shader.file,
            shader.name,
            e.emit_to_string(shader.source)
        );
    }
    module
}

#[test]
fn every_shader_file_is_registered_and_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut on_disk = BTreeSet::new();
    for (sub, prefix) in [("", ""), ("/software", "software/")] {
        for entry in std::fs::read_dir(format!("{dir}{sub}")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|x| x == "wgsl") {
                let stem = p.file_stem().unwrap().to_string_lossy();
                on_disk.insert(format!("{prefix}{stem}"));
            }
        }
    }
    let registered: BTreeSet<String> = ALL.iter().map(|s| s.file.to_string()).collect();
    assert_eq!(on_disk, registered, "shaders/ and shaders::ALL disagree");
    assert!(!ALL.is_empty());
    let names: BTreeSet<&str> = ALL.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), ALL.len(), "two shaders share a name");
    for shader in ALL {
        parse_and_validate(shader);
        assert!(
            shader.source.starts_with("//"),
            "shaders/{}.wgsl lacks its header comment (bindings, layouts, dispatch)",
            shader.name
        );
    }
}

#[test]
fn a_broken_shader_is_caught() {
    let broken = Shader {
        name: "broken",
        file: "broken",
        source: "// x\n@compute @workgroup_size(1) fn main() { let a: f32 = 1u; }",
        features: wgpu::Features::empty(),
    };
    let caught = std::panic::catch_unwind(|| parse_and_validate(&broken));
    assert!(caught.is_err());
}

#[test]
fn f16_needs_its_feature() {
    let source = "// x\nenable f16;\n@compute @workgroup_size(1) fn main() { let h: f16 = 1.0h; }";
    let without = Shader {
        name: "half",
        file: "half",
        source,
        features: wgpu::Features::empty(),
    };
    assert!(std::panic::catch_unwind(|| parse_and_validate(&without)).is_err());
    let with = Shader {
        name: "half",
        file: "half",
        source,
        features: wgpu::Features::SHADER_F16,
    };
    parse_and_validate(&with);
}

#[test]
fn kernel_tables_match_shader_declarations() {
    let entries = all_kernels()
        .into_iter()
        .map(|kernel| (kernel, kernel.shader, kernel.entry));
    for (kernel, shader, entry) in entries {
        let module = parse_and_validate(shader);
        let where_ = format!("kernel '{}' (shaders/{}.wgsl)", kernel.name, shader.file);
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == entry && e.stage == naga::ShaderStage::Compute),
            "{where_}: no compute entry point '{entry}'"
        );
        let mut globals: Vec<(u32, String, naga::AddressSpace)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let b = g.binding.as_ref()?;
                assert_eq!(b.group, 0, "{where_}: only bind group 0 is used");
                Some((b.binding, g.name.clone().unwrap_or_default(), g.space))
            })
            .collect();
        // A tile queue (shaders/tile_queue.wgsl) sits at its own binding, past the table's;
        // the executor binds it for `Dispatch::TileQueue` nodes.
        if let Some(at) = globals.iter().position(|g| g.1 == "queue") {
            let (binding, _, space) = globals.remove(at);
            assert_eq!(binding, 15, "{where_}: the queue's binding");
            let read_write = naga::StorageAccess::LOAD | naga::StorageAccess::STORE;
            assert_eq!(space, naga::AddressSpace::Storage { access: read_write });
        }
        globals.sort_by_key(|g| g.0);
        assert_eq!(
            globals.len(),
            kernel.bindings.len() + 1 + kernel.textures.len(),
            "{where_}: binding count (storage + params + textures)"
        );
        for (i, (binding, name, space)) in globals.iter().enumerate() {
            assert_eq!(*binding as usize, i, "{where_}: bindings are numbered 0..n");
            if i == kernel.bindings.len() {
                assert_eq!(name, "params", "{where_}");
                assert_eq!(
                    *space,
                    naga::AddressSpace::Uniform,
                    "{where_}: params is a uniform"
                );
                continue;
            }
            if i > kernel.bindings.len() {
                let want = &kernel.textures[i - kernel.bindings.len() - 1];
                assert_eq!(name, want.name, "{where_}: texture binding {i} name");
                let ty = module
                    .global_variables
                    .iter()
                    .find(|(_, g)| g.name.as_deref() == Some(name.as_str()))
                    .map(|(_, g)| &module.types[g.ty].inner)
                    .unwrap();
                let naga::TypeInner::Image { class, .. } = ty else {
                    panic!("{where_}: binding {i} '{name}' is not a texture");
                };
                let is_float = want.format == TexelFormat::Rgba32Float;
                match class {
                    naga::ImageClass::Storage { format, access } => {
                        // Written textures are write-only; read operands read-only (llvmpipe
                        // loads those without the sampled path's per-lane mip lookups).
                        let want_access = if want.write {
                            naga::StorageAccess::STORE
                        } else {
                            naga::StorageAccess::LOAD
                        };
                        assert_eq!(*access, want_access, "{where_}: '{name}' access");
                        let want_format = if is_float {
                            naga::StorageFormat::Rgba32Float
                        } else {
                            naga::StorageFormat::Rgba32Uint
                        };
                        assert_eq!(*format, want_format, "{where_}: '{name}' format");
                    }
                    other => panic!("{where_}: '{name}' is {other:?}"),
                }
                continue;
            }
            let want = &kernel.bindings[i];
            assert_eq!(name, want.name, "{where_}: binding {i} name");
            let naga::AddressSpace::Storage { access } = space else {
                panic!("{where_}: binding {i} '{name}' is not a storage buffer");
            };
            let writable = access.contains(naga::StorageAccess::STORE);
            assert_eq!(
                writable,
                want.access != Access::Read,
                "{where_}: binding {i} '{name}' access"
            );
        }
    }
}

/// The portable kernels run on any conforming WebGPU device, whose guaranteed workgroup
/// memory is 16 KiB (`kernels::PORTABLE_WORKGROUP_BYTES`; a device offering less gets the
/// software path): every non-software shader's workgroup variables fit in it together.
#[test]
fn portable_shaders_fit_webgpu_workgroup_memory() {
    let limit = webqlora::kernels::PORTABLE_WORKGROUP_BYTES;
    for shader in ALL.iter().filter(|s| !s.file.starts_with("software/")) {
        let module = parse_and_validate(shader);
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(_, var)| var.space == naga::AddressSpace::WorkGroup)
            .map(|(_, var)| layouter[var.ty].size)
            .sum();
        assert!(
            bytes <= limit,
            "shaders/{}.wgsl ({}): {bytes} bytes of workgroup memory, over WebGPU's guaranteed {limit}",
            shader.file,
            shader.name
        );
    }
}

/// The floats an entry point keeps in private `var`s (its own and those of every function it
/// calls, and private globals), from naga's IR: what a row-per-invocation design shows up in.
/// `let` values are not counted (the compiler places them), so this is a floor on the live
/// registers, not the count.
fn private_floats(module: &naga::Module, entry: &naga::EntryPoint) -> u32 {
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let words = |ty: naga::Handle<naga::Type>| layouter[ty].size / 4;
    let mut seen = BTreeSet::new();
    let mut stack = vec![&entry.function];
    let mut total: u32 = module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::Private)
        .map(|(_, v)| words(v.ty))
        .sum();
    while let Some(f) = stack.pop() {
        total += f
            .local_variables
            .iter()
            .map(|(_, v)| words(v.ty))
            .sum::<u32>();
        let mut calls = Vec::new();
        calls_in(&f.body, &mut calls);
        for h in calls {
            if seen.insert(h) {
                stack.push(&module.functions[h]);
            }
        }
    }
    total
}

/// The functions a block calls, at any depth of its control flow.
fn calls_in(block: &naga::Block, out: &mut Vec<naga::Handle<naga::Function>>) {
    for s in block.iter() {
        match s {
            naga::Statement::Call { function, .. } => out.push(*function),
            naga::Statement::Block(b) => calls_in(b, out),
            naga::Statement::If { accept, reject, .. } => {
                calls_in(accept, out);
                calls_in(reject, out);
            }
            naga::Statement::Switch { cases, .. } => {
                cases.iter().for_each(|c| calls_in(&c.body, out));
            }
            naga::Statement::Loop {
                body, continuing, ..
            } => {
                calls_in(body, out);
                calls_in(continuing, out);
            }
            _ => {}
        }
    }
}

/// What a portable kernel may keep in private `var`s: 64 floats (a thread's 255 registers on
/// NVIDIA hold that beside its indices and `let` values; a private array indexed at run time
/// lives in local memory, which is global memory).
const PRIVATE_FLOATS: u32 = 64;

/// The entry points over `PRIVATE_FLOATS` today, with their floats: the attention kernels
/// keep a head row (up to 256 dims) or a block of them an invocation, the ggml products a
/// block's 32 values beside their tiles. Each may only shrink, and leaves the list when it
/// fits; a kernel not listed must fit. Keys: the shader's name, with `:entry` where the
/// entry point is named otherwise.
const OVER_PRIVATE_FLOATS: &[(&str, u32)] = &[
    ("attention_backward_dkv", 519),
    ("attention_backward_dkv_masked", 263),
    ("attention_backward_dq", 262),
    ("attention_backward_dq_masked", 262),
    ("attention_decode", 263),
    ("attention_decode_f16:attention_decode", 263),
    ("attention_flash_backward_dkv", 1034),
    ("attention_flash_backward_dkv_masked", 778),
    ("attention_flash_backward_dq", 787),
    ("attention_flash_backward_dq_masked", 786),
    ("attention_flash_forward", 529),
    ("attention_flash_forward_masked", 529),
    ("attention_forward", 263),
    ("attention_forward_masked", 263),
    ("ggml_matmul:ggml_matmul_backward", 117),
    ("ggml_matmul:ggml_matmul_forward", 85),
];

/// No invocation of a non-software kernel keeps more than `PRIVATE_FLOATS` floats in private
/// variables, read from naga's IR, except the listed ones, which may not grow (#39).
#[test]
fn portable_kernels_keep_at_most_64_private_floats() {
    let mut over = Vec::new();
    let mut listed_fit = Vec::new();
    let mut keys = Vec::new();
    for shader in ALL.iter().filter(|s| !s.file.starts_with("software/")) {
        let module = parse_and_validate(shader);
        for e in &module.entry_points {
            let floats = private_floats(&module, e);
            let key = entry_key(shader.name, &e.name);
            let known = OVER_PRIVATE_FLOATS.iter().find(|(k, _)| *k == key);
            match known {
                Some(&(_, was)) if floats > was => {
                    over.push(format!("{key}: {floats} (was {was})"))
                }
                Some(_) if floats <= PRIVATE_FLOATS => listed_fit.push(format!("{key}: {floats}")),
                None if floats > PRIVATE_FLOATS => over.push(format!("{key}: {floats}")),
                _ => {}
            }
            keys.push(key);
        }
    }
    assert!(
        over.is_empty(),
        "private floats over {PRIVATE_FLOATS} (or over the listed count): {over:#?}"
    );
    assert!(
        listed_fit.is_empty(),
        "now within {PRIVATE_FLOATS}: take them off OVER_PRIVATE_FLOATS: {listed_fit:#?}"
    );
    for (key, _) in OVER_PRIVATE_FLOATS {
        assert!(
            keys.contains(&key.to_string()),
            "OVER_PRIVATE_FLOATS names {key}, no entry point"
        );
    }
}

/// `shader` or `shader:entry` where the entry point is named otherwise.
fn entry_key(shader: &str, entry: &str) -> String {
    if shader == entry {
        shader.to_string()
    } else {
        format!("{shader}:{entry}")
    }
}

/// The counter sees private arrays in the entry point, in the functions it calls and in
/// private globals, and counts a vec4 as 4.
#[test]
fn private_floats_are_counted_through_calls() {
    let source = "var<private> g: array<f32, 3>;\n\
        fn inner() -> f32 { var a: array<vec4<f32>, 5>; a[1].x = 1.0; return a[1].x + g[0]; }\n\
        @compute @workgroup_size(1) fn main() { var b: f32 = inner(); var c: vec2<f32>; c.x = b; }";
    let module = naga::front::wgsl::parse_str(source).unwrap();
    assert_eq!(
        private_floats(&module, &module.entry_points[0]),
        3 + 20 + 1 + 2
    );
}
