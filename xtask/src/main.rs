//! Project tasks: `cargo xtask <task>`.
//!
//!   test          install what the tests need when missing, then fmt, clippy, wasm check, tests,
//!                 browser tests
//!   fetch-model   a model's GGUF into the cache (--model smollm2 | gemma3-270m); prints
//!                 `model: PATH`
//!   demo          the MCQ demo: accuracy before, QLoRA training, accuracy after (--model NAME)
//!   build-web     the npm package into target/npm and the page on it into target/web
//!                 (wasm32 build + wasm-bindgen)
//!   pack-npm      the npm package packed (npm pack) into target/webqlora-VERSION.tgz
//!   package-test  the npm package's test: its files, tsc --strict on the TypeScript example,
//!                 the example page on the packed files against the native trainer
//!   serve         serve target/web on 127.0.0.1 (--port, --files DIR, --uploads DIR)
//!   browser-test  the page in headless Chromium against the native trainer (--smollm2: one
//!                 SmolLM2 step in the page)
//!   mcq-data      write data/mcq/{train,valid,test}.jsonl (`--check`: compare instead)
//!   stress        the random-seed kernel tests under many seeds (--seeds 200, --path
//!                 software|portable|both, --test FILE, --only NAME, --skip NAME)
//!   interop       llama.cpp runs webqlora's exports (GGUF LoRA, merged GGUF); builds
//!                 llama-cpp-python once (not part of `test`: the build takes ~15 minutes)

mod browser_test;
mod demo;
mod fetch_model;
mod install;
mod interop;
mod mcq_data;
mod package_test;
mod stress;
mod test;
mod web;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("fetch-model") => fetch_model::main(&args[1..]),
        Some("demo") => demo::main(&args[1..]),
        Some("interop") => interop::main(&args[1..]),
        Some("stress") => stress::main(&args[1..]),
        Some("build-web") => web::build_main(),
        Some("pack-npm") => web::pack_main(),
        Some("package-test") => package_test::run_test(),
        Some("serve") => web::serve_main(&args[1..]),
        Some("browser-test") if args.get(1).map(String::as_str) == Some("--smollm2") => {
            browser_test::run_smollm2()
        }
        Some("browser-test") => browser_test::run_test(),
        Some("mcq-data") => mcq_data::main(
            &repo_root(),
            args.get(1).map(String::as_str) == Some("--check"),
        ),
        _ => {
            eprintln!("usage: cargo xtask <task>\n\ntasks:\n  test          everything CI runs: installs missing tools, fmt, clippy, wasm32 check, tests, browser tests\n  fetch-model   a model's GGUF into the cache (--model smollm2|gemma3-270m); prints `model: PATH`\n  demo          the MCQ demo: accuracy before, QLoRA training, accuracy after (--model smollm2|gemma3-270m)\n  build-web     the npm package into target/npm and the page on it into target/web\n  pack-npm      the npm package packed into target/webqlora-VERSION.tgz\n  package-test  the npm package: its files, tsc --strict on its TypeScript example, the example page\n  serve         serve target/web on 127.0.0.1 (--port N)\n  browser-test  the page in headless Chromium against the native trainer (--smollm2)\n  mcq-data      write data/mcq/*.jsonl from the generator (--check: compare)\n  stress        the random-seed kernel tests under many seeds (--seeds N, --path software|portable|both, --test FILE, --only NAME, --skip NAME)\n  interop       llama.cpp runs webqlora's exports (builds llama-cpp-python once)");
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

/// The repository root (xtask lives one folder below it).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repository")
        .to_path_buf()
}
