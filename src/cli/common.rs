//! Options several subcommands share.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use webqlora::model::transformer::{BaseChoice, BaseFormat, ModelKind};
use webqlora::train::model_source::default_model_path;

/// `--model`, for the commands that load one.
#[derive(Args)]
pub struct ModelArg {
    /// A GGUF file, a Hugging Face folder, a catalog name (`webqlora models` lists them) or
    /// `hf:ORG/REPO/FILE.gguf` / `hf:ORG/REPO` (downloaded into the cache, resumed, checked);
    /// default: the cached SmolLM2-135M-Instruct.
    #[arg(long = "model", value_name = "MODEL")]
    pub given: Option<PathBuf>,
}

impl ModelArg {
    /// The model's path: the file or folder given, a model by name downloaded into the cache
    /// (or found there), or where `cargo xtask fetch-model` caches the default one.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        let Some(given) = &self.given else {
            return Ok(default_model_path());
        };
        if given.exists() {
            return Ok(given.clone());
        }
        match given.to_str().map(webqlora::hub::wanted).transpose()? {
            Some(Some(wanted)) => fetch_model(&wanted),
            // Not a name: opening it says there is no such file or folder.
            _ => Ok(given.clone()),
        }
    }
}

/// Download a model by name into the cache (or find it there), with progress on stderr.
pub fn fetch_model(wanted: &webqlora::hub::Wanted) -> anyhow::Result<PathBuf> {
    if webqlora::hub::kept(&wanted.key).is_some() {
        return Ok(webqlora::hub::model_path(wanted));
    }
    let mut bar = super::progress::Progress::new(
        "download: MiB",
        0,
        false,
        super::progress::Stream::Stderr,
        "downloading {msg} {bar:30} {pos}/{len} MiB [{elapsed_precise}, ETA {eta}]",
    );
    let mib = |b: u64| b.div_ceil(1 << 20);
    let path = webqlora::hub::fetch(wanted, &mut |done, total, name| {
        if let Some(t) = total {
            bar.set_total(mib(t));
        }
        bar.set(mib(done), name);
    })?;
    bar.finish(false);
    eprintln!("model: {}", path.display());
    Ok(path)
}

/// How the frozen base weights are held on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaseArg {
    /// f32 (dequantized if the model is 4-bit).
    F32,
    /// NF4, blocksize 64 (quantized on load unless the model already is bitsandbytes NF4).
    Nf4,
    /// A GGUF file's own codes (Q4_K, Q6_K, Q8_0, …: the weights as downloaded, no second
    /// quantization); its float tensors in f32.
    Gguf,
}

impl BaseArg {
    /// The format this asks for, for a model at `model` (`--base gguf` needs a GGUF file).
    pub fn format(self, model: &std::path::Path) -> anyhow::Result<BaseFormat> {
        Ok(match self {
            BaseArg::F32 => BaseFormat::F32,
            BaseArg::Nf4 => BaseFormat::Nf4 { blocksize: 64 },
            BaseArg::Gguf if !model.is_file() => anyhow::bail!(
                "--base gguf keeps a GGUF file's own codes, and {} is a folder (use --base nf4 or f32)",
                model.display()
            ),
            BaseArg::Gguf => BaseFormat::Gguf,
        })
    }
}

/// The base a command holds the model in: what `--base` asks for, else the model's default on
/// this device (`BaseFormat::default_for`: a GGUF's own weights, a folder's NF4).
pub fn choose_base(
    asked: Option<BaseArg>,
    model: &std::path::Path,
    kind: ModelKind,
    kernels: &webqlora::kernels::Kernels,
) -> anyhow::Result<BaseChoice> {
    Ok(match asked {
        Some(b) => BaseChoice::asked(b.format(model)?),
        None => BaseFormat::default_for(kind, kernels),
    })
}

/// What a multiple-choice answer is: the choice's text (lm-evaluation-harness style) or its
/// letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum McqScoreArg {
    Text,
    Letter,
}

/// Progress of loading a model (reading, dequantizing, quantizing to NF4), on stderr; silent
/// when `quiet`. Feed it through `Progress::counts` from `upload_model_with_progress`'s
/// callback.
pub fn load_bar(quiet: bool) -> super::progress::Progress {
    super::progress::Progress::new(
        "loading: tensor",
        0,
        quiet,
        super::progress::Stream::Stderr,
        "loading {bar:30} {pos}/{len} tensors {elapsed}",
    )
}

/// The median of `v` (the mean of the middle two for an even count); `v` ends sorted.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// clap parser for counts that must be at least 1 (`--batch 0` is an error, not a 1).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// clap parser for finite numbers above zero (`--alpha`, `--epochs`).
pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(x.is_finite() && x > 0.0) {
        return Err("must be a finite number above 0".into());
    }
    Ok(x)
}

/// clap parser for finite numbers at or above zero (`--lr`, `--weight-decay`).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err("must be a finite number, 0 or more".into());
    }
    Ok(x)
}

/// Refuse to replace an existing output file unless `--force` was given.
pub fn check_new_file(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        anyhow::bail!("{}: already exists (--force replaces it)", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.5]), 7.5);
    }
}
