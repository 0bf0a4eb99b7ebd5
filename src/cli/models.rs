//! `webqlora models`: the catalog's models (the page's, by name for `--model`) and what the
//! cache holds; `--fetch NAME` downloads one without running anything.

use clap::Args;
use webqlora::hub;
use webqlora::train::model_source::{cache_dir, default_model_path};

#[derive(Args)]
pub struct ModelsArgs {
    /// Download this model (a catalog name or hf:ORG/REPO[/FILE.gguf]) into the cache.
    #[arg(long, value_name = "NAME")]
    fetch: Option<String>,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.fetch {
        let wanted = hub::wanted(name)?.ok_or_else(|| {
            anyhow::anyhow!(
                "--fetch {name}: not a catalog name (see `webqlora models`) nor hf:ORG/REPO/FILE.gguf"
            )
        })?;
        let path = super::common::fetch_model(&wanted)?;
        println!("{}", path.display());
        return Ok(());
    }
    let catalog = hub::catalog()?;
    println!(
        "catalog (--model NAME downloads into {}):",
        cache_dir().join("models").display()
    );
    for m in &catalog.models {
        let state = match hub::kept(&m.id) {
            Some(k) => format!(
                "kept, {:.0} MB, SHA-256 {}",
                k.files.iter().map(|f| f.size).sum::<u64>() as f64 / 1e6,
                k.files
                    .iter()
                    .map(|f| &f.sha256[..12])
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("{:.0} MB to download", m.megabytes),
        };
        println!(
            "  {:<24} {} ({}, {}): {state}",
            m.id, m.name, m.family, m.quant
        );
    }
    // Models fetched by hf: name, and the default model `cargo xtask fetch-model` caches.
    let mut others = Vec::new();
    if let Ok(dir) = std::fs::read_dir(cache_dir().join("models")) {
        for entry in dir.flatten() {
            let key = entry.file_name().to_string_lossy().to_string();
            if catalog.models.iter().any(|m| m.id == key) {
                continue;
            }
            match hub::kept(&key) {
                Some(k) => others.push(format!(
                    "  {key}: {:.0} MB ({})",
                    k.files.iter().map(|f| f.size).sum::<u64>() as f64 / 1e6,
                    k.files.first().map_or("", |f| f.url.as_str())
                )),
                None => others.push(format!("  {key}: incomplete (the next use resumes it)")),
            }
        }
    }
    let default = default_model_path();
    if default.exists() {
        others.push(format!("  the default model: {}", default.display()));
    }
    others.sort();
    if !others.is_empty() {
        println!("also in the cache:");
        for line in others {
            println!("{line}");
        }
    }
    Ok(())
}
