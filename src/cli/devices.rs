//! `webqlora devices`

use clap::Args;
use webqlora::gpu::device::{allowed_backends, available_adapters, enumerate, OPTIONAL_FEATURES};
use webqlora::gpu::DeviceClass;
use webqlora::kernels::{Capabilities, Kernels};
use webqlora::model::transformer::{BaseFormat, ModelKind};

use super::GpuArgs;

#[derive(Args)]
pub struct DevicesArgs {
    /// Mark this adapter index as the one to use (the same as `--gpu N`).
    #[arg(long)]
    adapter: Option<usize>,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    webqlora::gpu::device::check_environment()?;
    let mut request = args.gpu.request();
    request.index = args.adapter.or(request.index);
    let (adapters, chosen) = pollster::block_on(enumerate(&request));
    if adapters.is_empty() {
        anyhow::bail!(
            "no GPU adapter found for backends {:?}; {}",
            allowed_backends(&request),
            pollster::block_on(available_adapters())
        );
    }
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let mark = if Some(i) == chosen { "  <- used" } else { "" };
        println!("[{i}] {}{mark}", info.name);
        println!(
            "    backend: {:?}   type: {:?}   class: {:?}",
            info.backend,
            info.device_type,
            DeviceClass::of(&info)
        );
        println!("    driver: {} ({})", info.driver, info.driver_info);
        let l = adapter.limits();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "    max storage binding: {} bytes ({:.0} MiB)",
            l.max_storage_buffer_binding_size,
            mib(l.max_storage_buffer_binding_size)
        );
        println!(
            "    max buffer size: {} bytes ({:.0} MiB)",
            l.max_buffer_size,
            mib(l.max_buffer_size)
        );
        println!(
            "    workgroup storage: {} bytes",
            l.max_compute_workgroup_storage_size
        );
        println!(
            "    invocations per workgroup: {}",
            l.max_compute_invocations_per_workgroup
        );
        println!(
            "    workgroups per dimension: {}",
            l.max_compute_workgroups_per_dimension
        );
        println!(
            "    storage buffers per stage: {}",
            l.max_storage_buffers_per_shader_stage
        );
        let f = adapter.features();
        let yes = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        println!(
            "    shader-f16: {}   subgroups: {} (size {}..{})   timestamp queries: {}",
            yes(wgpu::Features::SHADER_F16),
            yes(wgpu::Features::SUBGROUP),
            info.subgroup_min_size,
            info.subgroup_max_size,
            yes(wgpu::Features::TIMESTAMP_QUERY)
        );
        println!("    device would request: {:?}", f & OPTIONAL_FEATURES);
        let caps = Capabilities::of(&info, &l, f & OPTIONAL_FEATURES);
        let kernels = Kernels::for_device(&caps)?;
        println!("    kernels (WEBQLORA_KERNELS={kernels}):");
        for line in kernels.describe() {
            println!("      {line}");
        }
        println!("    default base (--base overrides):");
        for (what, kind) in [
            ("a GGUF model", ModelKind::Gguf),
            ("a Hugging Face folder", ModelKind::Folder),
            ("a bitsandbytes folder", ModelKind::BnbFolder),
        ] {
            let choice = BaseFormat::default_for(kind, &kernels);
            println!("      {what}: {}", choice.describe());
        }
    }
    if chosen.is_none() {
        anyhow::bail!(
            "adapter index {} does not exist: {} adapter(s) found",
            request.index.unwrap_or(0),
            adapters.len()
        );
    }
    Ok(())
}
