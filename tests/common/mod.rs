//! Helpers shared by the integration tests: one GPU per test binary, seeded random data.
#![allow(dead_code)]

pub mod cli;
pub mod golden_step;
pub mod lora_reference;
pub mod modelfile;
pub mod tiny_gguf;

use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use webqlora::gpu::{AdapterRequest, Gpu};

/// The device every GPU test in this binary shares (lavapipe on machines without a GPU).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new_blocking(&AdapterRequest::default())
            .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
    })
}

/// A NaN bit pattern for poisoning outputs before kernels write them.
pub const POISON: u32 = 0x7fc0_dead;

/// The seed of one run of a random test: `WEBQLORA_SEED` when set (to replay a printed
/// failure), else a fresh one.
fn fresh_seed() -> u64 {
    std::env::var("WEBQLORA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>)
}

/// Skip the calling test for a reason outside the code (a device feature the GPU lacks): said
/// on stderr and recorded in `WEBQLORA_SKIP_LOG` when set (`cargo xtask test` sets it), so the
/// summary line counts the test as skipped, not passed. The caller returns right after.
pub fn skip(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("skipped: {why}");
    if let Some(log) = std::env::var_os("WEBQLORA_SKIP_LOG") {
        use std::io::Write;
        let line = format!("{}\t{name}\t{why}\n", env!("CARGO_CRATE_NAME"));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// A fresh random generator per test; the seed is printed so a failure can be replayed with
/// WEBQLORA_SEED=<seed>.
pub fn rng(test: &str) -> StdRng {
    let seed = fresh_seed();
    eprintln!("{test}: seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// How many fresh seeds each random test runs: 1, or `WEBQLORA_STRESS` (`cargo xtask
/// stress` sets it) to find the failures that only some inputs provoke.
pub fn stress_runs() -> usize {
    match std::env::var("WEBQLORA_STRESS") {
        Ok(n) => n.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            panic!("WEBQLORA_STRESS={n}: expected a count of seeds (1 or more)")
        }),
        Err(_) => 1,
    }
}

/// Run a random test's `body` on generators seeded by each of `regressions` (seeds that once
/// failed, kept as fixed cases), then on fresh seeds: one, or `WEBQLORA_STRESS` of them;
/// with `WEBQLORA_SEED` set, on that seed alone. A failure names its seed, which
/// `WEBQLORA_SEED=<seed>` replays exactly.
pub fn for_each_seed(test: &str, regressions: &[u64], body: impl Fn(StdRng)) {
    let seeds: Vec<u64> = if std::env::var_os("WEBQLORA_SEED").is_some() {
        vec![fresh_seed()]
    } else {
        let fresh = (0..stress_runs()).map(|_| rand::random::<u64>());
        regressions.iter().copied().chain(fresh).collect()
    };
    for seed in seeds {
        eprintln!("{test}: seed {seed}");
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            body(StdRng::seed_from_u64(seed))
        }));
        if let Err(panic) = run {
            eprintln!("{test}: failed at seed {seed}; WEBQLORA_SEED={seed} replays it");
            std::panic::resume_unwind(panic);
        }
    }
}

/// The one tolerance rule of the kernel and golden tests: `got` is close to `want` when
///
/// ‖got − want‖₂ ≤ rtol · max(‖want‖₂, floor · √n)
///
/// that is, a relative error of the whole output (not element by element, so that one value
/// near zero does not decide), against the reference's norm or, where that norm can be small,
/// against the scale the quantity's rounding error follows: `floor` is the RMS size of the
/// terms the output is computed from (numpy's `atol` = rtol · floor). A value that cancels to
/// almost zero still carries the rounding error of its terms, so without a floor a sum of
/// signed terms (a log-sum-exp of one score, a single dot product) fails by chance.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rtol: f64,
    pub floor: f64,
}

impl Tol {
    /// f32 kernels against an f64 CPU reference: f32 rounds each operation to 6e-8 relative,
    /// and the kernels sum up to ~10⁴ terms in an order (tiles, subgroups, pairwise) other
    /// than the reference's, which leaves up to ~1e-6 of the norm; 1e-5 keeps a 10× margin
    /// and still catches any indexing fault (those move the norm by 1e-2 or more).
    pub const F32: Tol = Tol::rel(1e-5);

    /// Outputs each computed from a few values by a few operations (RoPE's rotation, f16
    /// widened to f32, DoRA's scale): no sums, so a few ulps (6e-8 each) and 1e-6 is ~16.
    pub const ELEMENTWISE: Tol = Tol::rel(1e-6);

    /// A whole model's logits, loss or gradients against PyTorch's (f32 on CPU): every layer's
    /// products sum in an order other than MKL's blocked GEMM, and the layers compound it,
    /// to 1e-6–1e-5 of the norm measured; a wrong weight, scale or mask moves them by 1e-2 or
    /// more.
    pub const GOLDEN: Tol = Tol::rel(1e-4);

    /// A purely relative rule: for outputs whose norm cannot be small next to their terms.
    pub const fn rel(rtol: f64) -> Tol {
        Tol { rtol, floor: 0.0 }
    }

    /// The same `rtol`, judged against at least `floor` per element (RMS): the size of the
    /// terms an output that can cancel is summed from.
    pub const fn floor(self, floor: f64) -> Tol {
        Tol {
            rtol: self.rtol,
            floor,
        }
    }

    /// ‖got − want‖ / max(‖want‖, floor·√n), infinite for a non-finite `got`.
    pub fn err(&self, got: &[f32], want: &[f32]) -> f64 {
        assert_eq!(got.len(), want.len(), "lengths differ");
        if got.iter().any(|v| !v.is_finite()) {
            return f64::INFINITY;
        }
        let diff: f64 = got
            .iter()
            .zip(want)
            .map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|y| (*y as f64).powi(2)).sum();
        let scale = norm.sqrt().max(self.floor * (want.len() as f64).sqrt());
        diff.sqrt() / scale.max(1e-300)
    }

    /// Panic, naming `what`, when `got` is not close to `want`.
    #[track_caller]
    pub fn check(&self, what: impl std::fmt::Display, got: &[f32], want: &[f32]) {
        let e = self.err(got, want);
        assert!(
            e <= self.rtol,
            "{what}: error {e:e} of the norm (tolerance {:e}, floor {:e}, {} values)",
            self.rtol,
            self.floor,
            want.len()
        );
    }
}

/// Assert that `got` is close to `want` by the one rule (`Tol`).
#[track_caller]
pub fn assert_close(what: impl std::fmt::Display, got: &[f32], want: &[f32], tol: Tol) {
    tol.check(what, got, want)
}

/// `n` values uniform in [-scale, scale], none of them zero.
pub fn random_f32(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| loop {
            let v = rng.random_range(-scale..scale);
            if v != 0.0 {
                break v;
            }
        })
        .collect()
}

/// ‖a − b‖ / ‖b‖, with a NaN anywhere in `a` reported as infinity: how far apart two
/// outputs are, for checks that they differ. Closeness is judged by `Tol`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    Tol::rel(0.0).err(a, b)
}

/// `../shared/golden/<rel>` beside the repository root.
pub fn golden(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/golden")
        .join(rel)
}

/// transformers' shift: position s predicts labels[s + 1]; the last position and -100 carry
/// no loss.
pub fn shifted_targets(labels: &[i64], seq: usize) -> Vec<u32> {
    use webqlora::ops::cross_entropy::IGNORE;
    labels
        .chunks_exact(seq)
        .flat_map(|row| {
            (0..seq).map(move |s| match row.get(s + 1) {
                Some(&l) if l >= 0 => l as u32,
                _ => IGNORE,
            })
        })
        .collect()
}

/// `tests/data/<rel>` in the repository.
pub fn test_data(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A whole safetensors file read into memory, for tests.
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    pub fn open(rel: &str) -> Golden {
        let path = golden(rel);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
        Golden { bytes }
    }

    /// A file of the repository's own test data (`tests/data/<rel>`).
    pub fn open_test_data(rel: &str) -> Golden {
        let path = test_data(rel);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("test data {}: {e}", path.display()));
        Golden { bytes }
    }

    /// The golden batch: input ids, labels and (batch, seq).
    pub fn ids_labels(&self) -> (Vec<u32>, Vec<i64>, (usize, usize)) {
        let (_, shape, id_bytes) = self.raw("input_ids");
        let ids = bytemuck::pod_collect_to_vec::<u8, i64>(id_bytes)
            .iter()
            .map(|&i| i as u32)
            .collect();
        let labels = bytemuck::pod_collect_to_vec(self.raw("labels").2);
        (ids, labels, (shape[0], shape[1]))
    }

    pub fn tensors(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }

    pub fn names(&self) -> Vec<String> {
        self.tensors()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub fn raw(&self, name: &str) -> (safetensors::Dtype, Vec<usize>, &[u8]) {
        let t = self.tensors();
        let view = t
            .tensor(name)
            .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
        let (dtype, shape) = (view.dtype(), view.shape().to_vec());
        // The view borrows `t`; re-slice the file bytes for a longer lifetime.
        let data = view.data();
        let start = data.as_ptr() as usize - self.bytes.as_ptr() as usize;
        (dtype, shape, &self.bytes[start..start + data.len()])
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let (dtype, _, data) = self.raw(name);
        assert_eq!(dtype, safetensors::Dtype::F32, "{name}");
        bytemuck::pod_collect_to_vec(data)
    }

    pub fn u8(&self, name: &str) -> Vec<u8> {
        self.raw(name).2.to_vec()
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.raw(name).1
    }
}

/// The JSON file `../shared/golden/<rel>`.
pub fn golden_json(rel: &str) -> serde_json::Value {
    let path = golden(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Compile `g` with `outputs` marked, poison everything the graph writes, upload `inputs`
/// (inputs and params), run once and read the outputs back as f32.
pub fn run_graph(
    mut g: webqlora::graph::Graph,
    inputs: &[(webqlora::graph::TensorId, Vec<u8>)],
    outputs: &[webqlora::graph::TensorId],
) -> Vec<Vec<f32>> {
    for &t in outputs {
        if !g.tensor(t).role.defined_at_start() {
            g.mark_output(t);
        }
    }
    let gpu = gpu();
    let compiled = webqlora::graph::CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, POISON);
    for (t, bytes) in inputs {
        compiled.write(gpu, *t, bytes).unwrap();
    }
    compiled.run(gpu);
    outputs
        .iter()
        .map(|&t| pollster::block_on(compiled.read_f32(gpu, t)).unwrap())
        .collect()
}

pub fn bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Check `grad`, the claimed gradient of L(x) = Σ f(x)ᵢ·wᵢ, against central differences of
/// the f64 forward `f` at `samples` random coordinates (all of them when fewer).
pub fn check_gradient(
    name: &str,
    f: impl Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    w: &[f64],
    grad: &[f64],
    rng: &mut StdRng,
    samples: usize,
) {
    let loss = |x: &[f64]| -> f64 { f(x).iter().zip(w).map(|(a, b)| a * b).sum() };
    let scale = grad.iter().fold(1e-3f64, |m, g| m.max(g.abs()));
    let coords: Vec<usize> = if x.len() <= samples {
        (0..x.len()).collect()
    } else {
        (0..samples).map(|_| rng.random_range(0..x.len())).collect()
    };
    for j in coords {
        let h = 1e-6 * x[j].abs().max(1.0);
        let mut plus = x.to_vec();
        let mut minus = x.to_vec();
        plus[j] += h;
        minus[j] -= h;
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h);
        let err = (numeric - grad[j]).abs() / scale;
        assert!(
            err < 1e-6,
            "{name}: d/dx[{j}] analytic {} vs numeric {numeric} (rel {err:e})",
            grad[j]
        );
    }
}

/// A fresh empty folder under the system temp dir for one test.
pub fn temp_dir(test: &str) -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("webqlora-{test}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A test's folder (`temp_dir`): removed when the test is done with it, kept when the test
/// fails, to look at.
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept the failing test's folder {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The Gemma 3 270M Q4_K_M GGUF that `cargo xtask fetch-model --model gemma3-270m` caches
/// (`WEBQLORA_GEMMA3` overrides the place).
pub fn gemma3_path() -> std::path::PathBuf {
    cached_model(
        "WEBQLORA_GEMMA3",
        "gemma-3-270m-q4_k_m.gguf",
        " --model gemma3-270m",
    )
}

/// The SmolLM2-135M-Instruct GGUF that `cargo xtask fetch-model` caches (`WEBQLORA_SMOLLM2`
/// overrides the place).
pub fn smollm2_path() -> std::path::PathBuf {
    cached_model("WEBQLORA_SMOLLM2", "SmolLM2-135M-Instruct.Q4_1.gguf", "")
}

/// A model file `cargo xtask fetch-model{flag}` caches as `file`, or where `env` says.
fn cached_model(env: &str, file: &str, flag: &str) -> std::path::PathBuf {
    let path = std::env::var_os(env)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| webqlora::train::model_source::cache_dir().join(file));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask fetch-model{flag}` (or set {env})",
        path.display()
    );
    path
}

/// A byte-level BPE tokenizer.json with no merges: one token per byte (GPT-2's byte-to-unicode
/// alphabet), ids 0..256, for the golden tiny Llama's vocabulary of 256.
pub fn byte_tokenizer_json() -> String {
    use webqlora::model::gguf::MetaValue;
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars = vec![0u32; 256];
    for &b in &printable {
        chars[b as usize] = b;
    }
    let mut next = 256;
    for (b, c) in chars.iter_mut().enumerate() {
        if !printable.contains(&(b as u32)) {
            *c = next;
            next += 1;
        }
    }
    printable.clear();
    let tokens = chars
        .iter()
        .map(|&c| MetaValue::Str(char::from_u32(c).unwrap().to_string()))
        .collect();
    let mut m = std::collections::BTreeMap::new();
    m.insert("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into()));
    m.insert("tokenizer.ggml.pre".into(), MetaValue::Str("gpt2".into()));
    m.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens));
    m.insert("tokenizer.ggml.merges".into(), MetaValue::Array(vec![]));
    webqlora::tokenizer::tokenizer_json_from_gguf(&m)
        .unwrap()
        .to_string()
}

/// The golden tiny Llama (f32) copied into a fresh folder with `byte_tokenizer_json`.
pub fn tiny_llama_with_tokenizer(test: &str) -> TempDir {
    let dir = temp_dir(test);
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden("tiny-llama/base-f32").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), byte_tokenizer_json()).unwrap();
    dir
}

/// The golden batch (`input_ids`, `labels` [batch, seq]) as JSONL records, one a row.
pub fn golden_batch_jsonl() -> String {
    let expected = Golden::open("tiny-llama/expected.safetensors");
    let ints = |name: &str| -> (Vec<usize>, Vec<i64>) {
        let (_, shape, bytes) = expected.raw(name);
        (shape, bytemuck::pod_collect_to_vec(bytes))
    };
    let (shape, ids) = ints("input_ids");
    let (_, labels) = ints("labels");
    let seq = shape[1];
    ids.chunks(seq)
        .zip(labels.chunks(seq))
        .map(|(i, l)| serde_json::json!({"input_ids": i, "labels": l}).to_string() + "\n")
        .collect()
}

/// Logits [batch·seq, vocab] of a tiny-Llama-shaped model folder `dir` (base f32 or NF4, with
/// an optional adapter) for the golden input ids.
pub fn tiny_llama_logits(
    dir: &std::path::Path,
    base: webqlora::model::transformer::BaseFormat,
    adapter: Option<&webqlora::lora::peft::Adapter>,
) -> Vec<f32> {
    golden_logits("tiny-llama", dir, base, adapter, |_| {})
}

/// `tiny_llama_logits` for the golden batch of `family` (`tiny-qwen3`, …).
pub fn family_logits(
    family: &str,
    dir: &std::path::Path,
    base: webqlora::model::transformer::BaseFormat,
    adapter: Option<&webqlora::lora::peft::Adapter>,
) -> Vec<f32> {
    golden_logits(family, dir, base, adapter, |_| {})
}

/// `tiny_llama_logits` with `adjust` applied to the model before its graph is built.
pub fn tiny_llama_logits_with(
    dir: &std::path::Path,
    base: webqlora::model::transformer::BaseFormat,
    adapter: Option<&webqlora::lora::peft::Adapter>,
    adjust: impl FnOnce(&mut webqlora::model::transformer::Transformer),
) -> Vec<f32> {
    golden_logits("tiny-llama", dir, base, adapter, adjust)
}

/// Logits of the model folder `dir` on the golden batch of `family`.
fn golden_logits(
    family: &str,
    dir: &std::path::Path,
    base: webqlora::model::transformer::BaseFormat,
    adapter: Option<&webqlora::lora::peft::Adapter>,
    adjust: impl FnOnce(&mut webqlora::model::transformer::Transformer),
) -> Vec<f32> {
    use webqlora::graph::{CompiledGraph, DType, Graph};
    use webqlora::model::transformer::Transformer;
    let expected = Golden::open(&format!("{family}/expected.safetensors"));
    let (_, id_shape, id_bytes) = expected.raw("input_ids");
    let ids: Vec<u32> = bytemuck::pod_collect_to_vec::<u8, i64>(id_bytes)
        .iter()
        .map(|&i| i as u32)
        .collect();
    let (batch, seq) = (id_shape[0], id_shape[1]);
    let config = webqlora::model::ModelConfig::load(dir).unwrap();
    let files = webqlora::model::safetensors_files::SafetensorsFiles::open_dir(dir).unwrap();
    let mut g = Graph::new();
    let mut model =
        Transformer::declare(&mut g, &config, base, adapter.map(|a| &a.config), seq).unwrap();
    adjust(&mut model);
    let input = g.input("input_ids", &[batch * seq], DType::U32);
    let logits = model.forward_logits(&mut g, input, seq).unwrap();
    g.mark_output(logits);
    let gpu = gpu();
    let compiled = CompiledGraph::new(gpu, g).unwrap();
    compiled.poison(gpu, POISON);
    let missing =
        webqlora::model::load::upload_model(gpu, &compiled, &model, &files, base, adapter).unwrap();
    assert!(missing.is_empty(), "nothing provided {missing:?}");
    compiled
        .write(gpu, input, bytemuck::cast_slice(&ids))
        .unwrap();
    compiled.run(gpu);
    pollster::block_on(compiled.read_f32(gpu, logits)).unwrap()
}

/// An empty graph whose large products use the texture kernels (what `Graph::for_device`
/// gives software devices), whatever device the tests run on.
/// Their subgroup versions are used where the device allows, as there.
pub fn texture_graph() -> webqlora::graph::Graph {
    let mut g = webqlora::graph::Graph::new();
    g.kernels = webqlora::kernels::Kernels::all_software(
        Some(gpu().limits.max_texture_dimension_2d),
        gpu().has_eight_lane_subgroups(),
    );
    g
}

/// A texture graph whose products use the texture kernels without subgroups (what software
/// devices without eight-lane subgroups get).
pub fn texture_graph_without_subgroups() -> webqlora::graph::Graph {
    let mut g = webqlora::graph::Graph::new();
    g.kernels = webqlora::kernels::Kernels::all_software(
        Some(gpu().limits.max_texture_dimension_2d),
        false,
    );
    g
}

/// An empty graph on the portable kernels (what hardware GPUs get), with subgroup kernels
/// where the test device has subgroups.
pub fn portable_graph() -> webqlora::graph::Graph {
    let mut g = webqlora::graph::Graph::new();
    g.kernels = webqlora::kernels::Kernels::all_portable(portable_subgroups());
    g
}

/// The test device's subgroup sizes, where it has subgroups.
pub fn portable_subgroups() -> Option<(u32, u32)> {
    let gpu = gpu();
    gpu.has(wgpu::Features::SUBGROUP)
        .then_some((gpu.info.subgroup_min_size, gpu.info.subgroup_max_size))
}

/// An empty graph on the software buffer kernels (register tiles, no textures).
pub fn software_buffer_graph() -> webqlora::graph::Graph {
    let mut g = webqlora::graph::Graph::new();
    g.kernels = webqlora::kernels::Kernels::all_software(None, false);
    g
}

/// `n` random blocks of ggml block type `ty` whose f16 scales are finite and ordinary (the
/// rest is any bytes).
pub fn random_blocks(ty: webqlora::quant::ggml::GgmlType, n: usize, rng: &mut impl Rng) -> Vec<u8> {
    random_blocks_scaled(ty, n, rng, 0.05)
}

/// `random_blocks` with f16 scales in [-d_max, d_max].
pub fn random_blocks_scaled(
    ty: webqlora::quant::ggml::GgmlType,
    n: usize,
    rng: &mut impl Rng,
    d_max: f32,
) -> Vec<u8> {
    use webqlora::quant::ggml::GgmlType;
    let (_, bytes) = ty.block();
    let halves: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => panic!("{} has no blocks", ty.name()),
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let mut block: Vec<u8> = (0..bytes).map(|_| rng.random()).collect();
        for &at in halves {
            let v = half::f16::from_f32(rng.random_range(-d_max..d_max));
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        out.extend(block);
    }
    out
}

/// The Hugging Face tokenizer folders (`<family>/tokenizer.json` and `tokenizer_config.json`)
/// that `cargo xtask fetch-model --model tokenizers` caches (`WEBQLORA_TOKENIZERS` overrides
/// the place).
pub fn tokenizers_dir() -> std::path::PathBuf {
    cached_model("WEBQLORA_TOKENIZERS", "tokenizers", " --model tokenizers")
}

/// A generator seeded by (`seed`, `name`): each tensor of a random model gets its own values,
/// the same every time it is asked for.
pub fn named_rng(seed: u64, name: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, name).hash(&mut h);
    rand::rngs::StdRng::seed_from_u64(h.finish())
}
