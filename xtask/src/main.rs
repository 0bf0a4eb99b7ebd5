//! Project tasks: `cargo xtask <task>`.
//!
//!   test          install what the tests need when missing, then fmt, clippy, wasm check, tests
//!   fetch-model   SmolLM2-135M-Instruct (GGUF) into the cache; prints `model: PATH`

mod fetch_model;
mod install;
mod test;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("fetch-model") => fetch_model::main(),
        _ => {
            eprintln!("usage: cargo xtask <task>\n\ntasks:\n  test          everything CI runs: installs missing tools, fmt, clippy, wasm32 check, tests\n  fetch-model   SmolLM2-135M-Instruct (GGUF) into the cache; prints `model: PATH`");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
