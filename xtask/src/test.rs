//! `cargo xtask test`: what CI runs. Installs what is missing, then runs each step, keeps
//! going after a failure so one run shows everything, and ends with one summary line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::install;

#[derive(Default)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Tests that returned early for a device feature the GPU lacks (`common::skip`), which
    /// cargo counts as passed: "binary<TAB>test<TAB>why" each.
    pub skipped: Vec<String>,
}

/// Add up cargo test's "test result: ok. 3 passed; 0 failed; 1 ignored; ..." lines.
fn count(line: &str, counts: &mut Counts) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (Some(n), Some(what)) = (words.iter().rev().nth(1), words.last()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match *what {
            "passed" => counts.passed += n,
            "failed" => counts.failed += n,
            "ignored" => counts.ignored += n,
            _ => {}
        }
    }
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    with_env(&mut cmd);
    cmd
}

/// What every command that touches the GPU or the model gets: the model's place and, on
/// headless machines, an XDG_RUNTIME_DIR (Mesa's window-system probing complains without it).
pub fn with_env(cmd: &mut Command) -> &mut Command {
    for model in crate::fetch_model::MODELS {
        cmd.env(model.env, crate::fetch_model::cache_dir().join(model.file));
    }
    cmd.env(
        crate::fetch_model::TOKENIZERS_ENV,
        crate::fetch_model::tokenizers_dir(),
    );
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("webqlora-xdg");
        let _ = std::fs::create_dir_all(&dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    cmd
}

/// The test binaries run again with `WEBQLORA_KERNELS=portable`: the kernels, the golden
/// forward passes and training steps, an adapter's module, the whole step, MCQ scoring.
const PORTABLE_TESTS: [&str; 15] = [
    "kernels_matmul",
    "kernels_elementwise",
    "kernels_attention",
    // The scorer's packed passes (choices as branches) on the masked flash forward.
    "mcq_scoring",
    "kernels_cross_entropy",
    "kernels_optimizer",
    "lora_nf4_module",
    "llama_golden",
    "llama_train_golden",
    "qwen3_golden",
    "gemma3_golden",
    "smollm3_golden",
    "phi3_golden",
    "gguf_base",
    "cli_dump_step",
];

/// Run cargo test, echoing its output and counting results.
fn cargo_test(extra: &[String], counts: &mut Counts) -> Result<(), String> {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    cargo_test_with(&[], &extra, counts)
}

/// `cargo_test` with environment variables set and these arguments.
pub fn cargo_test_with(
    env: &[(&str, &str)],
    extra: &[&str],
    counts: &mut Counts,
) -> Result<(), String> {
    let mut cmd = cargo();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let skip_log = std::env::temp_dir().join(format!("webqlora-skipped-{}", std::process::id()));
    let _ = std::fs::remove_file(&skip_log);
    cmd.env("WEBQLORA_SKIP_LOG", &skip_log);
    let mut child = cmd
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cargo test: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        count(&line, counts);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    // Skipped tests passed in cargo's count: they move to the skipped ones.
    let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
    let _ = std::fs::remove_file(&skip_log);
    for line in skipped.lines().filter(|l| !l.is_empty()) {
        println!("xtask: skipped {}", line.replace('\t', " "));
        counts.passed = counts.passed.saturating_sub(1);
        counts.skipped.push(line.to_string());
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test failed ({status})"))
    }
}

/// The steps of a run: when it started, and the names of the steps that failed.
struct Steps {
    start: Instant,
    failures: Vec<String>,
}

impl Steps {
    /// Say how step `name` went (with the time since the start), keeping its name if it failed.
    fn step(&mut self, name: &str, result: Result<(), String>) {
        match &result {
            Ok(()) => eprintln!(
                "xtask: {name}: ok ({:.0} s)",
                self.start.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("xtask: {name}: FAILED: {e}");
                self.failures.push(name.to_string());
            }
        }
    }
}

pub fn run(extra: &[String]) -> Result<(), String> {
    let mut steps = Steps {
        start: Instant::now(),
        failures: Vec::new(),
    };
    install_and_fetch()?;
    static_checks(&mut steps);
    let mut counts = Counts::default();
    test_runs(&mut steps, extra, &mut counts);
    fuzz_and_browsers(&mut steps, &mut counts);
    summary(&steps, &counts)
}

/// Install what is missing, and fetch the models and tokenizers the tests read (a failed
/// fetch is said, and the run goes on).
fn install_and_fetch() -> Result<(), String> {
    install::rust_tools()?;
    install::lavapipe()?;
    install::gl()?;
    install::chromium()?;
    // The SmolLM2 reference test reads the model from here (it says how to get it if absent).
    for model in crate::fetch_model::MODELS {
        match crate::fetch_model::fetch_model(model) {
            Ok(path) => eprintln!("xtask: model: {}", path.display()),
            Err(e) => eprintln!(
                "xtask: fetch-model --model {} failed ({e}); its tests will fail",
                model.name
            ),
        }
    }
    if let Err(e) = crate::fetch_model::fetch_tokenizers() {
        eprintln!("xtask: fetch-model --model tokenizers failed ({e}); their tests will fail");
    }
    Ok(())
}

/// fmt, clippy, the MCQ data against its generator, and clippy on wasm32.
fn static_checks(steps: &mut Steps) {
    steps.step(
        "fmt",
        install::run(cargo().args(["fmt", "--all", "--", "--check"])),
    );
    steps.step(
        "clippy",
        install::run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])),
    );
    steps.step(
        "MCQ data matches its generator",
        crate::mcq_data::main(&crate::repo_root(), true),
    );
    steps.step(
        "wasm32 check",
        install::run(cargo().args([
            "clippy",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ])),
    );
}

/// `--test NAME` for each of `tests`, then `extra`: cargo test's arguments.
fn test_args<'a>(tests: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    tests
        .iter()
        .flat_map(|t| ["--test", t])
        .chain(extra.iter().map(String::as_str))
        .collect()
}

/// The tests, then again on the portable kernels, then the subgroup kernels at other
/// vector widths, counting their results.
fn test_runs(steps: &mut Steps, extra: &[String], counts: &mut Counts) {
    let tests = cargo_test(extra, counts);
    if tests.is_err() && counts.failed == 0 {
        // A build failure or a crash: count it so the summary cannot read as green.
        counts.failed += 1;
    }
    steps.step("tests", tests);
    // The portable kernels (what hardware GPUs run), forced on lavapipe: every kernel test,
    // the golden steps and the whole-step test again.
    let portable = cargo_test_with(
        &[("WEBQLORA_KERNELS", "portable")],
        &test_args(&PORTABLE_TESTS, extra),
        counts,
    );
    steps.step("tests on the portable kernels", portable);
    // lavapipe's subgroups are as wide as its vectors: 128-bit vectors give four lanes,
    // 512-bit (where the CPU has AVX-512) sixteen; the subgroup kernels must work at every
    // width, as at the default eight.
    let mut widths = vec!["128"];
    if std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("avx512f")) {
        widths.push("512");
    }
    let mut other_widths = Ok(());
    for width in widths {
        let run = cargo_test_with(
            &[("LP_NATIVE_VECTOR_WIDTH", width)],
            &test_args(&["kernels_elementwise", "executor"], extra),
            counts,
        );
        if let Err(e) = run {
            other_widths = Err(format!("at {width}-bit vectors: {e}"));
        }
    }
    steps.step("subgroup kernels at other widths", other_widths);
}

/// Count a step that is one test: passed or failed.
fn count_one(result: &Result<(), String>, counts: &mut Counts) {
    match result {
        Ok(()) => counts.passed += 1,
        Err(_) => counts.failed += 1,
    }
}

/// The fuzzer, then the browser tests and the npm package's, each counted as one test.
fn fuzz_and_browsers(steps: &mut Steps, counts: &mut Counts) {
    // The parsers of users' files under 30 s of mutated inputs each (fuzz/src/main.rs); any
    // panic, abort, hang or allocation over the cap fails the run, naming the input.
    steps.step(
        "fuzz",
        install::run(cargo().current_dir(crate::repo_root()).args([
            "run",
            "-p",
            "webqlora-fuzz",
            "--",
            "run",
            "--seconds",
            "30",
        ])),
    );
    // The page in headless Chromium against the native trainer (counted as one test).
    let browser = crate::browser_test::run_test();
    count_one(&browser, counts);
    steps.step("browser end-to-end", browser);
    // The npm package: its files, its types under tsc --strict, and a page on its packed files
    // against the native trainer (counted as one test).
    let package = crate::package_test::run_test();
    count_one(&package, counts);
    steps.step("npm package", package);
    // One SmolLM2-135M step in the page (about a minute on SwiftShader) against the native one.
    let smollm2 = crate::browser_test::run_smollm2();
    count_one(&smollm2, counts);
    steps.step("browser SmolLM2 step", smollm2);
}

/// The failed steps and the summary line; an error naming the failed steps if any.
fn summary(steps: &Steps, counts: &Counts) -> Result<(), String> {
    let failures = &steps.failures;
    // Each failed step other than the tests counts as one failure in the summary line.
    let counted = [
        "tests",
        "tests on the portable kernels",
        "subgroup kernels at other widths",
        "browser end-to-end",
        "npm package",
        "browser SmolLM2 step",
    ];
    let other_failures = failures
        .iter()
        .filter(|f| !counted.contains(&f.as_str()))
        .count() as u64;
    println!(
        "xtask: {:.0} s; failed steps: {}",
        steps.start.elapsed().as_secs_f64(),
        if failures.is_empty() {
            "none".to_string()
        } else {
            failures.join(", ")
        }
    );
    println!(
        "summary: {} passed, {} failed, {} skipped",
        counts.passed,
        counts.failed + other_failures,
        counts.ignored + counts.skipped.len() as u64
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failures.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every test file the portable run and the stress run name exists (cargo refuses the whole
    /// run otherwise).
    #[test]
    fn portable_tests_are_test_files() {
        let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
        for name in PORTABLE_TESTS.iter().chain(&crate::stress::KERNEL_TESTS) {
            assert!(
                tests.join(format!("{name}.rs")).is_file(),
                "tests/{name}.rs"
            );
        }
    }

    #[test]
    fn counts_cargo_test_result_lines() {
        let mut c = Counts::default();
        count("test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.34s", &mut c);
        count(
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
            &mut c,
        );
        count("running 4 tests", &mut c);
        assert_eq!((c.passed, c.failed, c.ignored), (6, 3, 1));
    }
}
