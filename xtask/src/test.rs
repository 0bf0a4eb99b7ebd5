//! `cargo xtask test`: what CI runs. Installs what is missing, then runs each step, keeps
//! going after a failure so one run shows everything, and ends with one summary line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::install;

struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
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

/// Run cargo test, echoing its output and counting results.
fn cargo_test(extra: &[String], counts: &mut Counts) -> Result<(), String> {
    let mut child = cargo()
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
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo test failed ({status})"))
    }
}

pub fn run(extra: &[String]) -> Result<(), String> {
    let start = Instant::now();
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

    let mut failures: Vec<String> = Vec::new();
    let mut step = |name: &str, result: Result<(), String>| match &result {
        Ok(()) => eprintln!("xtask: {name}: ok ({:.0} s)", start.elapsed().as_secs_f64()),
        Err(e) => {
            eprintln!("xtask: {name}: FAILED: {e}");
            failures.push(name.to_string());
        }
    };
    step(
        "fmt",
        install::run(cargo().args(["fmt", "--all", "--", "--check"])),
    );
    step(
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
    step(
        "MCQ data matches its generator",
        crate::mcq_data::main(&crate::repo_root(), true),
    );
    step(
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
    let mut counts = Counts {
        passed: 0,
        failed: 0,
        ignored: 0,
    };
    let tests = cargo_test(extra, &mut counts);
    if tests.is_err() && counts.failed == 0 {
        // A build failure or a crash: count it so the summary cannot read as green.
        counts.failed += 1;
    }
    step("tests", tests);
    // The page in headless Chromium against the native trainer (counted as one test).
    let browser = crate::browser_test::run_test();
    match &browser {
        Ok(()) => counts.passed += 1,
        Err(_) => counts.failed += 1,
    }
    step("browser end-to-end", browser);
    // One SmolLM2-135M step in the page (about a minute on SwiftShader) against the native one.
    let smollm2 = crate::browser_test::run_smollm2();
    match &smollm2 {
        Ok(()) => counts.passed += 1,
        Err(_) => counts.failed += 1,
    }
    step("browser SmolLM2 step", smollm2);

    // Each failed step other than the tests counts as one failure in the summary line.
    let other_failures = failures
        .iter()
        .filter(|f| !["tests", "browser end-to-end", "browser SmolLM2 step"].contains(&f.as_str()))
        .count() as u64;
    println!(
        "xtask: {:.0} s; failed steps: {}",
        start.elapsed().as_secs_f64(),
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
        counts.ignored
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

    #[test]
    fn counts_cargo_test_result_lines() {
        let mut c = Counts {
            passed: 0,
            failed: 0,
            ignored: 0,
        };
        count("test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.34s", &mut c);
        count(
            "test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
            &mut c,
        );
        count("running 4 tests", &mut c);
        assert_eq!((c.passed, c.failed, c.ignored), (6, 3, 1));
    }
}
