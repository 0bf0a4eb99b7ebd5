//! Fuzzing webqlora's parsers of files users hand it, as safetensors and llama.cpp fuzz
//! theirs, on stable Rust so that `cargo xtask test` runs it everywhere:
//!
//!   webqlora-fuzz run [--seconds 30] [--corpus fuzz/corpus] [--out target/fuzz] [TARGET]...
//!   webqlora-fuzz write-corpus fuzz/corpus
//!
//! Targets: `gguf` (the header, metadata and tensor table, a model's config from them, the
//! tensors read), `adapter_config` (PEFT's adapter_config.json), `trainer_state` (a
//! checkpoint's trainer_state.json), `jsonl` (data records), `chat_template` (a template
//! rendered), `tokenizer` (the tokenizer a GGUF's metadata builds, encoding and decoding).
//!
//! Why not cargo-fuzz: libFuzzer needs nightly Rust and CI builds with stable. bolero's
//! stable mode generates typed values without mutating a corpus, and a random byte string
//! never gets past the GGUF magic. So: a mutation loop over a small corpus of real and crafted
//! files (byte flips, interesting integers written over 4- and 8-byte fields, cut, repeated
//! and spliced ranges, dictionary words for the text formats), each input run under
//! `catch_unwind`. It fails, saving the input under `--out`, on a panic; on an abort (stack
//! overflow, say) or an allocation past `ALLOCATION_CAP` (a counting global allocator) the
//! process dies and `TARGET.current` is the input; on an input that runs past `HANG_SECONDS`
//! a watchdog says so and aborts. Errors are the expected outcome: a parser must refuse.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use webqlora::model::gguf::{self, GgufFile, MetaValue};
use webqlora::model::gguf_write::{GgufValue, GgufWriter};
use webqlora::tokenizer::{Message, Tokenizer};

/// The most memory an input may hold at once: the corpus files are a few KiB, so anything
/// near this is a size read from the file and believed.
const ALLOCATION_CAP: usize = 1 << 30;
/// The longest an input may run.
const HANG_SECONDS: u64 = 5;

struct Capped;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts sizes, and refuses (null, which the
// standard library turns into an abort naming the size) past the cap.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size() > ALLOCATION_CAP {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size() > ALLOCATION_CAP {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old
            && LIVE.fetch_add(new_size - old, Ordering::Relaxed) + new_size - old > ALLOCATION_CAP
        {
            LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// When the current input started (ms since the run began; 0: none running).
static STARTED_MS: AtomicU64 = AtomicU64::new(0);

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("gguf", fuzz_gguf),
    ("adapter_config", fuzz_adapter_config),
    ("trainer_state", fuzz_trainer_state),
    ("jsonl", fuzz_jsonl),
    ("chat_template", fuzz_chat_template),
    ("tokenizer", fuzz_tokenizer),
];

fn fuzz_gguf(data: &[u8]) {
    let _ = gguf::read_tensors(data, "fuzz.gguf");
    if let Ok(file) = GgufFile::from_bytes(data.to_vec().into(), "fuzz.gguf") {
        let _ = file.config().check();
        for name in [
            "token_embd.weight",
            "output_norm.weight",
            "blk.0.attn_q.weight",
        ] {
            let _ = file.tensor(name);
        }
    }
}

fn fuzz_adapter_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = webqlora::lora::peft::parse_config(text, Path::new("adapter_config.json"));
    }
}

fn fuzz_trainer_state(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ =
            webqlora::train::trainer::TrainerState::parse(text, Path::new("trainer_state.json"));
    }
}

fn fuzz_jsonl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = webqlora::data::parse_jsonl(&text, "fuzz.jsonl");
}

fn conversation() -> Vec<Message> {
    [
        ("system", "Be brief."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "2+2?"),
    ]
    .iter()
    .map(|(role, content)| Message {
        role: role.to_string(),
        content: content.to_string(),
    })
    .collect()
}

fn fuzz_chat_template(data: &[u8]) {
    thread_local! {
        static TOKENIZER: std::cell::RefCell<Tokenizer> = std::cell::RefCell::new(
            Tokenizer::from_gguf(&tokenizer_metadata(), "corpus").expect("the corpus tokenizer")
        );
    }
    let template = String::from_utf8_lossy(data).into_owned();
    TOKENIZER.with(|t| {
        let mut t = t.borrow_mut();
        t.chat_template = Some(template);
        let _ = t.apply_chat_template(&conversation(), true);
    });
}

fn fuzz_tokenizer(data: &[u8]) {
    let Ok(metadata) = gguf::parse_metadata(data, "fuzz.gguf") else {
        return;
    };
    let Ok(tok) = Tokenizer::from_gguf(&metadata, "fuzz.gguf") else {
        return;
    };
    if let Ok(ids) = tok.encode("hello <ctl> world ab", true) {
        let _ = tok.decode(&ids, false);
    }
    let _ = tok.apply_chat_template(&conversation(), true);
}

// ---- mutation -----------------------------------------------------------------------------

const U32S: [u32; 12] = [
    0,
    1,
    2,
    3,
    4,
    8,
    9,
    255,
    65535,
    0x7fff_ffff,
    0x8000_0000,
    u32::MAX,
];
const U64S: [u64; 8] = [
    0,
    1,
    32,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

/// Words a text format's mutations insert.
fn dictionary(target: &str) -> &'static [&'static str] {
    match target {
        "adapter_config" | "trainer_state" | "jsonl" => &[
            "\"",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "null",
            "true",
            "-1",
            "0",
            "1e309",
            "NaN",
            "18446744073709551615",
            "-9223372036854775809",
            "\"r\": ",
            "\"step\": ",
            "\"lora_alpha\": ",
            "\"target_modules\": ",
            "\"input_ids\": ",
            "\"labels\": ",
            "\"messages\": ",
            "\"choices\": ",
            "\"answer\": ",
            "\"text\": ",
            "\\u0000",
            "\\ud800",
            "[[[[[[[[",
            "]]]]]]]]",
        ],
        "chat_template" => &[
            "{{",
            "}}",
            "{%",
            "%}",
            "{% for m in messages %}",
            "{% endfor %}",
            "{% for i in range(999999) %}",
            "{% if ",
            "{% endif %}",
            "{% set x = ",
            "namespace(a=1)",
            " ~ ",
            " * 99999999",
            "|join",
            "|list",
            "loop.index",
            "raise_exception('x')",
            "messages[0]['content']",
            ".split(' ')",
            ".strip()",
            "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
            "bos_token",
            "eos_token",
        ],
        _ => &[],
    }
}

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, corpus: &[Vec<u8>], words: &[&str]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = input.len();
        let at = if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        };
        match rng.random_range(0..9) {
            0 if len > 0 => input[at] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => input[at] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
            2 if len >= 4 => {
                let at = at.min(len - 4);
                let v = U32S[rng.random_range(0..U32S.len())];
                input[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 if len >= 8 => {
                let at = at.min(len - 8);
                let v = U64S[rng.random_range(0..U64S.len())];
                input[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 if len > 0 => {
                let n = rng.random_range(1..=(len - at).min(64));
                input.drain(at..at + n);
            }
            5 if len > 0 && len < 1 << 20 => {
                let n = rng.random_range(1..=(len - at).min(64));
                let chunk: Vec<u8> = input[at..at + n].to_vec();
                let to = rng.random_range(0..=len);
                input.splice(to..to, chunk);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let n = rng.random_range(1..=(other.len() - from).min(64));
                    let end = (at + n).min(len);
                    input.splice(at..end, other[from..from + n].iter().copied());
                }
            }
            7 if len > 0 => input.truncate(at),
            8 if !words.is_empty() => {
                let w = words[rng.random_range(0..words.len())];
                input.splice(at..at, w.bytes());
            }
            _ => {}
        }
    }
}

// ---- the loop -----------------------------------------------------------------------------

fn read_corpus(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| {
            format!(
                "{}: {e} (write it with `webqlora-fuzz write-corpus`)",
                dir.display()
            )
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let corpus = files
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<Vec<_>, _>>()?;
    if corpus.is_empty() {
        return Err(format!("{}: no corpus files", dir.display()));
    }
    Ok(corpus)
}

/// Run `target` on mutations of its corpus for `seconds`; the count of inputs run.
fn fuzz(
    name: &str,
    target: Target,
    corpus: &[Vec<u8>],
    out: &Path,
    seconds: f64,
    seed: u64,
    began: Instant,
) -> Result<u64, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let words = dictionary(name);
    let current = out.join(format!("{name}.current"));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut runs = 0u64;
    let mut i = 0usize;
    while Instant::now() < deadline {
        // The corpus as it is first, then its mutations.
        let input = if i < corpus.len() {
            corpus[i].clone()
        } else {
            let mut input = corpus[rng.random_range(0..corpus.len())].clone();
            mutate(&mut rng, &mut input, corpus, words);
            input
        };
        i += 1;
        std::fs::write(&current, &input).map_err(|e| format!("{}: {e}", current.display()))?;
        STARTED_MS.store(began.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let outcome = std::panic::catch_unwind(|| target(&input));
        STARTED_MS.store(0, Ordering::SeqCst);
        runs += 1;
        if outcome.is_err() {
            let saved = out.join(format!("{name}-panic-{runs}.bin"));
            let _ = std::fs::write(&saved, &input);
            return Err(format!(
                "{name}: a panic on input {runs}, saved as {}",
                saved.display()
            ));
        }
    }
    let _ = std::fs::remove_file(&current);
    Ok(runs)
}

fn run(args: &[String]) -> Result<(), String> {
    let mut seconds = 30.0;
    let mut corpus_dir = PathBuf::from("fuzz/corpus");
    let mut out = PathBuf::from("target/fuzz");
    let mut names: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                let v = value()?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0)
                    .ok_or(format!("--seconds {v}: expected a number of seconds"))?;
            }
            "--corpus" => corpus_dir = value()?.into(),
            "--out" => out = value()?.into(),
            name if TARGETS.iter().any(|(t, _)| *t == name) => names.push(name.to_string()),
            other => {
                let known: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
                return Err(format!(
                    "unknown argument {other:?} (targets: {})",
                    known.join(", ")
                ));
            }
        }
    }
    if names.is_empty() {
        names = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let began = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let started = STARTED_MS.load(Ordering::SeqCst);
        let now = began.elapsed().as_millis() as u64 + 1;
        if started != 0 && now.saturating_sub(started) > HANG_SECONDS * 1000 {
            eprintln!("fuzz: an input ran past {HANG_SECONDS} s (hang); it is the .current file");
            std::process::abort();
        }
    });
    // Panics are caught and reported with their input; the default hook's message stays.
    let seed: u64 = std::env::var("WEBQLORA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz: seed {seed} (WEBQLORA_FUZZ_SEED replays the run), {seconds} s a target");
    for name in &names {
        let target = TARGETS.iter().find(|(t, _)| t == name).expect("checked").1;
        let corpus = read_corpus(&corpus_dir.join(name))?;
        let runs = fuzz(name, target, &corpus, &out, seconds, seed, began)?;
        println!(
            "fuzz: {name}: {runs} inputs from {} corpus files, no panic, abort, hang or \
             allocation over {} MiB",
            corpus.len(),
            ALLOCATION_CAP >> 20
        );
    }
    Ok(())
}

// ---- the corpus ---------------------------------------------------------------------------

/// A tokenizer's metadata as a GGUF file holds it: byte-level BPE over a few tokens, a
/// control token and a ChatML template.
fn tokenizer_metadata() -> BTreeMap<String, MetaValue> {
    let bytes = tiny_gguf(true);
    gguf::parse_metadata(&bytes, "corpus").expect("our own file")
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
    message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A one-layer Llama of width 8 over a 32-token vocabulary, as GGUF (with its tokenizer and
/// chat template when `tokenizer`).
fn tiny_gguf(tokenizer: bool) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", GgufValue::Str("llama".into()));
    for (key, v) in [
        ("llama.embedding_length", 8),
        ("llama.feed_forward_length", 16),
        ("llama.block_count", 1),
        ("llama.attention.head_count", 2),
        ("llama.attention.head_count_kv", 1),
        ("llama.context_length", 64),
        ("tokenizer.ggml.bos_token_id", 1),
        ("tokenizer.ggml.eos_token_id", 2),
    ] {
        w.meta(key, GgufValue::U32(v));
    }
    w.meta("llama.rope.freq_base", GgufValue::F32(10000.0));
    w.meta(
        "llama.attention.layer_norm_rms_epsilon",
        GgufValue::F32(1e-5),
    );
    if tokenizer {
        let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>", "<ctl>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        tokens.extend("abcdehlorw ".chars().map(|c| c.to_string()));
        tokens
            .extend(["he", "ll", "hell", "hello", "wo", "wor", "worl", "world"].map(String::from));
        while tokens.len() < 32 {
            tokens.push(format!("<extra_{}>", tokens.len()));
        }
        let mut types = vec![1i32; tokens.len()];
        types[..4].copy_from_slice(&[3, 3, 3, 4]);
        w.meta("tokenizer.ggml.model", GgufValue::Str("gpt2".into()));
        w.meta("tokenizer.ggml.pre", GgufValue::Str("default".into()));
        w.meta("tokenizer.ggml.tokens", GgufValue::StrArray(tokens));
        w.meta("tokenizer.ggml.token_type", GgufValue::I32Array(types));
        w.meta(
            "tokenizer.ggml.merges",
            GgufValue::StrArray(
                [
                    "h e", "l l", "he ll", "hell o", "w o", "wo r", "wor l", "worl d",
                ]
                .map(String::from)
                .to_vec(),
            ),
        );
        w.meta("tokenizer.chat_template", GgufValue::Str(CHATML.into()));
    }
    let values =
        |n: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect() };
    for (name, shape) in [
        ("token_embd.weight", vec![32, 8]),
        ("output_norm.weight", vec![8]),
        ("blk.0.attn_norm.weight", vec![8]),
        ("blk.0.attn_q.weight", vec![8, 8]),
        ("blk.0.attn_k.weight", vec![4, 8]),
        ("blk.0.attn_v.weight", vec![4, 8]),
        ("blk.0.attn_output.weight", vec![8, 8]),
        ("blk.0.ffn_norm.weight", vec![8]),
        ("blk.0.ffn_gate.weight", vec![16, 8]),
        ("blk.0.ffn_up.weight", vec![16, 8]),
        ("blk.0.ffn_down.weight", vec![8, 16]),
    ] {
        let n = shape.iter().product();
        if name == "blk.0.ffn_down.weight" {
            w.tensor_f16(name, &shape, &values(n));
        } else {
            w.tensor_f32(name, &shape, &values(n));
        }
    }
    w.to_bytes()
}

/// The corpus: real formats, small, and a few crafted files each.
fn write_corpus(dir: &Path) -> Result<(), String> {
    let lines = |items: &[&str]| items.join("\n") + "\n";
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        ("gguf", "tiny-llama.gguf", tiny_gguf(false)),
        ("gguf", "tiny-llama-tokenizer.gguf", tiny_gguf(true)),
        ("tokenizer", "tiny-llama-tokenizer.gguf", tiny_gguf(true)),
        (
            "adapter_config",
            "peft.json",
            br#"{"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "layers_pattern": null, "layers_to_transform": null, "lora_alpha": 32, "lora_dropout": 0.05, "modules_to_save": null, "peft_type": "LORA", "r": 16, "rank_pattern": {}, "revision": null, "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false}"#.to_vec(),
        ),
        (
            "adapter_config",
            "dora.json",
            br#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8.0, "target_modules": ["q_proj"], "use_dora": true, "use_rslora": true}"#.to_vec(),
        ),
        (
            "trainer_state",
            "state.json",
            webqlora::train::trainer::TrainerState {
                step: 12,
                seed: 42,
                total_steps: 100,
                lr: 2e-4,
                batch: 4,
                accumulation: 2,
                seq: 128,
                packing: true,
                base: Some("nf4".into()),
            }
            .to_json()
            .into_bytes(),
        ),
        (
            "trainer_state",
            "old.json",
            br#"{"step": 1, "seed": 7, "total_steps": 3, "lr": 0.001, "batch": 2, "accumulation": 1, "seq": 16}"#.to_vec(),
        ),
        (
            "jsonl",
            "records.jsonl",
            lines(&[
                r#"{"text": "The cat sat."}"#,
                r#"{"prompt": "2+2=", "completion": "4"}"#,
                r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
                r#"{"question": "Sky?", "choices": ["blue", "green", "red"], "answer": "A"}"#,
                r#"{"question": "One?", "choices": ["1", "2"], "answer": 0}"#,
                r#"{"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4]}"#,
            ])
            .into_bytes(),
        ),
        ("jsonl", "bom-crlf.jsonl", "\u{feff}{\"text\": \"a\"}\r\n\r\n{\"input_ids\": [5]}\r\n".as_bytes().to_vec()),
        ("chat_template", "chatml.jinja", CHATML.as_bytes().to_vec()),
        (
            "chat_template",
            "system-first.jinja",
            b"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set system = '' %}{% set rest = messages %}{% endif %}{% for m in rest %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{{ '<start_of_turn>' + m['role'] + '\\n' + (system + '\\n\\n' if loop.first and system else '') + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}".to_vec(),
        ),
        (
            "chat_template",
            "namespace.jinja",
            b"{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}{{ m.role|upper }}: {{ m.content.split(' ')|join(' ') }}{% if loop.index0 == ns.last %} <-{% endif %}\n{% endfor %}".to_vec(),
        ),
    ];
    for (target, name, bytes) in files {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        std::fs::write(d.join(name), bytes).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("write-corpus") if args.len() == 2 => write_corpus(Path::new(&args[1])),
        _ => Err(
            "usage: webqlora-fuzz run [--seconds S] [--corpus DIR] [--out DIR] \
                  [TARGET]... | write-corpus DIR"
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("fuzz: {e}");
        std::process::exit(1);
    }
}
