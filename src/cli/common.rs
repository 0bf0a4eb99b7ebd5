//! Options several subcommands share.

use clap::ValueEnum;
use webqlora::model::llama::BaseFormat;

/// How the frozen base weights are held on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaseArg {
    /// f32 (dequantized if the model is 4-bit).
    F32,
    /// NF4, blocksize 64 (quantized on load unless the model already is bitsandbytes NF4).
    Nf4,
}

impl BaseArg {
    pub fn name(self) -> &'static str {
        match self {
            BaseArg::F32 => "f32",
            BaseArg::Nf4 => "NF4",
        }
    }
}

pub fn base_format(b: BaseArg) -> BaseFormat {
    match b {
        BaseArg::F32 => BaseFormat::F32,
        BaseArg::Nf4 => BaseFormat::Nf4 { blocksize: 64 },
    }
}

/// What a multiple-choice answer is: the choice's text (lm-evaluation-harness style) or its
/// letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum McqScoreArg {
    Text,
    Letter,
}
