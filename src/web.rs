//! The browser API (wasm32 only), the bottom layer of the npm package (web/package/: its
//! worker.js calls this, its index.js gives web apps a typed API over the worker): open a model
//! from the files the page was given, train on a JSONL dataset step by step, evaluate (loss and
//! multiple-choice accuracy), generate text, and hand back the adapter in PEFT and GGUF form. The same library code as the
//! native binary; only the I/O differs.

use js_sys::{Array, Function, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::data::{encode_records, parse_jsonl, EncodeOptions, Mcq, Record};
use crate::gpu::{AdapterRequest, Gpu};
use crate::lora::gguf_lora::{gguf_lora_bytes, GgufLoraDtype};
use crate::lora::gguf_merge::{merged_gguf_bytes, GgufDtype};
use crate::lora::peft::Adapter;
use crate::lora::LoraConfig;
use crate::model::generate::{generate, Sampler};
use crate::model::gguf::GgufFile;
use crate::model::load::upload_model_with_progress;
use crate::model::safetensors_files::SafetensorsFiles;
use crate::model::transformer::{BaseChoice, BaseFormat, ModelKind};
use crate::model::transformer_decode::Decoder;
use crate::model::{ModelConfig, WeightSource};
use crate::tokenizer::{Message, Tokenizer};
use crate::train::evaluate::{question_items, LossScore, Scorer, ScorerShape, PASS_TOKENS};
use crate::train::fit::{will_it_fit, FitShape};
use crate::train::recipe::{lora_config, Recipe, RunSettings};
use crate::train::schedule::ScheduleKind;
use crate::train::session::TrainSession;
use crate::train::trainer::{
    pad_id, split_validation, tensors_from_bytes, tensors_to_bytes, Trainer,
};

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

#[wasm_bindgen]
pub struct WebSession {
    gpu: Gpu,
    config: ModelConfig,
    weights: Box<dyn WeightSource>,
    tokenizer: Option<Tokenizer>,
    /// The base of the last run prepared, or the model's default on this device.
    base: BaseChoice,
    training: Option<Trainer>,
    /// The page's `?kernels=`, applied again to a new device.
    kernels: Option<String>,
}

fn setting(s: &serde_json::Value, key: &str, default: f64) -> f64 {
    s[key].as_f64().unwrap_or(default)
}

/// The whole number at `key` (`default` when absent), at least `least`: anything else is
/// refused naming the key, never reinterpreted (a batch of 0 is not a batch of 1).
fn count(s: &serde_json::Value, key: &str, default: usize, least: usize) -> Result<usize, String> {
    match &s[key] {
        serde_json::Value::Null => Ok(default),
        v => match v.as_f64() {
            // Whole numbers up to 2^53, which JavaScript numbers hold exactly.
            Some(n) if n.fract() == 0.0 && n >= least as f64 && n <= 9007199254740992.0 => {
                Ok(n as usize)
            }
            _ => Err(format!(
                "settings.{key}: expected a whole number, at least {least}, and got {v}"
            )),
        },
    }
}

/// The batch, accumulation and longest sequence the settings ask for.
fn asked_shape(s: &serde_json::Value) -> Result<FitShape, String> {
    Ok(FitShape {
        batch: count(s, "batch", 4, 1)?,
        accumulation: count(s, "accumulation", 1, 1)?,
        max_len: count(s, "max_seq_len", 512, 1)?,
    })
}

impl WebSession {
    /// The base this model is held in when the settings do not ask for one (as the CLI's:
    /// `BaseFormat::default_for`).
    fn default_base(&self) -> BaseChoice {
        BaseFormat::default_for(
            ModelKind::of(&self.config, self.weights.as_ref()),
            &self.gpu.kernels,
        )
    }

    /// The settings' `base`: "gguf", "f32", "nf4", or absent / "" / "auto" for the default.
    fn base_of(&self, s: &serde_json::Value) -> Result<BaseChoice, String> {
        Ok(match &s["base"] {
            serde_json::Value::Null => self.default_base(),
            serde_json::Value::String(b) => match b.as_str() {
                "" | "auto" => self.default_base(),
                "f32" => BaseChoice::asked(BaseFormat::F32),
                "nf4" => BaseChoice::asked(BaseFormat::Nf4 { blocksize: 64 }),
                "gguf" if self.weights.as_gguf().is_some() => BaseChoice::asked(BaseFormat::Gguf),
                "gguf" => {
                    return Err(
                        "base \"gguf\" keeps a GGUF file's own codes, and this model is a \
                         folder (use nf4 or f32)"
                            .into(),
                    )
                }
                other => {
                    return Err(format!(
                        "base {other:?}: expected \"auto\", \"gguf\", \"f32\" or \"nf4\""
                    ))
                }
            },
            other => return Err(format!("base {other}: expected a string")),
        })
    }

    /// The recipe of a run (`train::recipe`, as the CLI's): the settings JSON's keys, and
    /// `shape` instead of its batch, accumulation and length for `fit`'s smaller proposals.
    fn setup(
        &self,
        data: &str,
        data_name: &str,
        s: &serde_json::Value,
        shape: Option<FitShape>,
    ) -> Result<Recipe, String> {
        let shape = match shape {
            Some(shape) => shape,
            None => asked_shape(s)?,
        };
        let seed = count(s, "seed", 42, 0)? as u64;
        let records = parse_jsonl(data, data_name).map_err(|e| e.to_string())?;
        let opts = EncodeOptions {
            train_on_inputs: s["train_on_inputs"].as_bool().unwrap_or(false),
            max_len: shape.max_len,
            mcq_by_letter: false,
        };
        let needs_tok = records
            .iter()
            .any(|(_, r)| !matches!(r, Record::Tokens { .. }));
        if needs_tok && self.tokenizer.is_none() {
            return Err("this model has no tokenizer: give its tokenizer.json, or tokenized data (input_ids)".to_string());
        }
        let examples = encode_records(
            &records,
            self.tokenizer.as_ref(),
            self.config.vocab_size,
            &opts,
            data_name,
        )
        .map_err(|e| e.to_string())?;
        let (train, valid) = split_validation(examples, setting(s, "valid_split", 0.0), seed)
            .map_err(|e| e.to_string())?;
        let targets: Option<Vec<String>> = match &s["target_modules"] {
            serde_json::Value::Null => None,
            serde_json::Value::Array(list) => Some(
                list.iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or("target_modules: expected a list of module names")?,
            ),
            _ => return Err("target_modules: expected a list of module names".into()),
        };
        let rank = setting(s, "rank", 16.0);
        if !(rank >= 1.0 && rank.fract() == 0.0) {
            return Err(format!(
                "rank {rank}: a LoRA rank is a whole number, at least 1"
            ));
        }
        let lora = lora_config(
            rank as usize,
            s["alpha"].as_f64(),
            setting(s, "lora_dropout", 0.0),
            targets.as_deref(),
            s["rslora"].as_bool().unwrap_or(false),
            s["dora"].as_bool().unwrap_or(false),
            s["model_name"].as_str().unwrap_or(""),
            "target_modules",
        )?;
        let schedule: ScheduleKind = s["schedule"]
            .as_str()
            .unwrap_or("linear")
            .parse()
            .map_err(|e: String| e.to_string())?;
        let run = RunSettings {
            lora,
            base: self.base_of(s)?.format,
            batch: shape.batch,
            accumulation: shape.accumulation,
            max_len: shape.max_len,
            steps: match s["steps"] {
                serde_json::Value::Null => None,
                _ => Some(count(s, "steps", 1, 1)?),
            },
            epochs: setting(s, "epochs", 1.0),
            schedule,
            lr: setting(s, "lr", 2e-4),
            warmup: count(s, "warmup_steps", 0, 0)?,
            weight_decay: setting(s, "weight_decay", 0.0),
            max_grad_norm: setting(s, "max_grad_norm", 1.0) as f32,
            seed,
            packing: s["packing"].as_bool().unwrap_or(false),
            checkpointing: s["checkpointing"].as_bool().unwrap_or(true),
        };
        Recipe::new(train, valid, &run)
    }
}

#[wasm_bindgen]
impl WebSession {
    /// Open a model from `files`, an array of [name, Uint8Array] pairs: one .gguf file, or a
    /// Hugging Face folder's config.json and model.safetensors (or shards; bitsandbytes 4-bit
    /// too) with tokenizer.json / tokenizer_config.json when present.
    pub async fn open(files: Array) -> Result<WebSession, JsValue> {
        let mut named: Vec<(String, Vec<u8>)> = Vec::new();
        for pair in files.iter() {
            let pair = Array::from(&pair);
            let name = pair.get(0).as_string().ok_or("a file without a name")?;
            let bytes = Uint8Array::new(&pair.get(1)).to_vec();
            named.push((name, bytes));
        }
        let find = |suffix: &str| named.iter().position(|(n, _)| n.ends_with(suffix));
        let text = |i: Option<usize>| i.map(|i| String::from_utf8_lossy(&named[i].1).to_string());
        let (config, weights, tokenizer): (ModelConfig, Box<dyn WeightSource>, Option<Tokenizer>) =
            if let Some(i) = find(".gguf") {
                let (name, bytes) = named.swap_remove(i);
                let file = GgufFile::from_bytes(bytes.into(), &name).map_err(js_err)?;
                let tok = Tokenizer::from_gguf(&file.metadata, &name).ok();
                (file.config().clone(), Box::new(file), tok)
            } else {
                let config_text = text(find("config.json").filter(|&i| {
                    !named[i].0.ends_with("tokenizer_config.json")
                        && !named[i].0.ends_with("generation_config.json")
                }))
                .ok_or("no .gguf file and no config.json among the model files")?;
                let config = ModelConfig::from_json(&config_text, "config.json").map_err(js_err)?;
                let tok_json = text(find("tokenizer.json"));
                let tok_config = text(find("tokenizer_config.json"));
                let tok = match tok_json {
                    Some(t) => Some(
                        Tokenizer::from_json(&t, tok_config.as_deref(), &config, "tokenizer.json")
                            .map_err(js_err)?,
                    ),
                    None => None,
                };
                let shards: Vec<(String, crate::model::file_bytes::FileBytes)> = named
                    .into_iter()
                    .filter(|(n, _)| n.ends_with(".safetensors"))
                    .map(|(n, b)| (n, b.into()))
                    .collect();
                if shards.is_empty() {
                    return Err("no .safetensors weights among the model files".into());
                }
                let files = SafetensorsFiles::from_files(shards).map_err(js_err)?;
                (config, Box::new(files), tok)
            };
        let gpu = Gpu::new(&AdapterRequest::default()).await.map_err(js_err)?;
        let base = BaseFormat::default_for(ModelKind::of(&config, weights.as_ref()), &gpu.kernels);
        Ok(WebSession {
            gpu,
            config,
            weights,
            tokenizer,
            base,
            training: None,
            kernels: None,
        })
    }

    /// Why the GPU device was lost (the browser reset it, or `lose_device`), or undefined
    /// while it works. Nothing more runs on a lost device: `renew` opens another.
    pub fn device_lost(&self) -> Option<String> {
        self.gpu.lost()
    }

    /// Destroy the GPU device (`GPUDevice.destroy()`), as a browser's GPU reset does; the
    /// page's end-to-end test forces a loss through it.
    pub fn lose_device(&self) {
        self.gpu.device.destroy();
    }

    /// Open a new GPU device after a loss, keeping the model's files, tokenizer and kernel
    /// choice; the training on the old device is gone (`prepare` with a checkpoint resumes
    /// it).
    pub async fn renew(&mut self) -> Result<(), JsValue> {
        self.training = None;
        self.gpu = Gpu::new(&AdapterRequest::default()).await.map_err(js_err)?;
        if let Some(k) = self.kernels.clone() {
            self.set_kernels(&k)?;
        }
        Ok(())
    }

    /// Force the kernels graphs use from now on, in `WEBQLORA_KERNELS`'s form (`portable`,
    /// `software`, `nf4=portable,...`); the page passes its URL's `?kernels=`.
    pub fn set_kernels(&mut self, value: &str) -> Result<(), JsValue> {
        let caps = self.gpu.capabilities();
        self.gpu.kernels = crate::kernels::Kernels::with_override(&caps, value).map_err(js_err)?;
        self.kernels = Some(value.to_string());
        if !self.base.asked {
            // The default base follows the kernels (codes on the portable path).
            self.base = self.default_base();
        }
        Ok(())
    }

    /// The device and model, as JSON.
    pub fn info(&self) -> String {
        let c = &self.config;
        serde_json::json!({
            "device": self.gpu.info.name,
            "backend": format!("{:?}", self.gpu.info.backend),
            "kernels": self.gpu.kernels.to_string(),
            "layers": c.num_layers, "hidden": c.hidden_size, "vocab": c.vocab_size,
            "tokenizer": self.tokenizer.is_some(),
            "gguf": self.weights.as_gguf().is_some(),
            "base": self.base.format.key(),
            "base_why": self.base.why,
            "max_storage_binding": self.gpu.limits.max_storage_buffer_binding_size,
            "max_buffer": self.gpu.limits.max_buffer_size,
        })
        .to_string()
    }

    /// Will this run fit: the planned GPU memory of a training step for `data` and
    /// `settings` (as `prepare` takes them), nothing allocated, against `budget_mib` (the
    /// memory the user gives it; WebGPU does not say how much a GPU has) and the device's
    /// limits, and the nearest smaller batch / sequence length that fits when it does not
    /// (`train::fit`). JSON: budget, fits, asked and proposal (batch, accumulation, max_len,
    /// seq, planned_bytes, params_bytes, largest_buffer, error), refusal (words), and the
    /// data (examples, tokens) and the device's limits.
    pub fn fit(
        &self,
        data: &str,
        data_name: &str,
        settings: &str,
        budget_mib: f64,
    ) -> Result<String, JsValue> {
        let s: serde_json::Value = serde_json::from_str(settings).map_err(js_err)?;
        let asked = self.setup(data, data_name, &s, None).map_err(js_err)?;
        let budget = (budget_mib.max(0.0) * (1u64 << 20) as f64) as u64;
        let report = will_it_fit(
            asked_shape(&s).map_err(js_err)?,
            budget,
            |shape| match self.setup(data, data_name, &s, Some(*shape)) {
                Ok(run) => (
                    run.settings.seq,
                    TrainSession::plan(&self.gpu, &self.config, &run.settings)
                        .map_err(|e| e.to_string()),
                ),
                Err(e) => (0, Err(e)),
            },
        );
        let mut out = report.to_json();
        let examples = asked.examples + asked.valid.len();
        let tokens: usize = asked
            .train
            .iter()
            .chain(&asked.valid)
            .map(|e| e.ids.len())
            .sum();
        out["data"] = serde_json::json!({"examples": examples, "tokens": tokens});
        out["limits"] = serde_json::json!({
            "max_buffer": self.gpu.limits.max_buffer_size,
            "max_storage_binding": self.gpu.limits.max_storage_buffer_binding_size,
        });
        Ok(out.to_string())
    }

    /// Build the trainer for `data` (JSONL, any format the CLI takes) with `settings` (JSON:
    /// rank, alpha, lr, steps, batch, accumulation, max_seq_len, seed, schedule,
    /// warmup_steps, weight_decay, max_grad_norm, valid_split, base "auto"/"gguf"/"f32"/"nf4"),
    /// load the
    /// weights (`progress(done, total)`), and start a fresh adapter, or with `resume` (what
    /// `checkpoint` returned, kept by the page) continue that run where it stopped: the same
    /// data and settings then give the losses an uninterrupted run gives. Returns a JSON
    /// summary.
    pub async fn prepare(
        &mut self,
        data: &str,
        data_name: &str,
        settings: &str,
        progress: &Function,
        resume: JsValue,
    ) -> Result<String, JsValue> {
        let resume = if resume.is_null() || resume.is_undefined() {
            None
        } else {
            let parts = Array::from(&resume);
            let state = crate::train::trainer::TrainerState::parse(
                &parts.get(0).as_string().ok_or("checkpoint: no state")?,
                std::path::Path::new("checkpoint/trainer_state.json"),
            )
            .map_err(js_err)?;
            let config = parts
                .get(1)
                .as_string()
                .ok_or("checkpoint: no adapter config")?;
            let weights = Uint8Array::new(&parts.get(2)).to_vec();
            let adapter = Adapter::from_bytes(
                &config,
                "checkpoint/adapter_config.json",
                weights.into(),
                "checkpoint/adapter_model.safetensors",
            )
            .map_err(js_err)?;
            let moments = tensors_from_bytes(
                Uint8Array::new(&parts.get(3)).to_vec(),
                "checkpoint/optimizer.safetensors",
            )
            .map_err(js_err)?;
            Some((adapter, moments, state))
        };
        let mut s: serde_json::Value = serde_json::from_str(settings).map_err(js_err)?;
        if let Some((_, _, state)) = &resume {
            // A run resumes on the base it was trained on: the checkpoint's (NF4 for one from
            // before the base was recorded), which settings that ask for another contradict.
            let recorded = state.base.clone().unwrap_or_else(|| "nf4".into());
            match s["base"].as_str().filter(|b| !b.is_empty() && *b != "auto") {
                Some(asked) if asked != recorded => {
                    return Err(js_err(format!(
                        "the checkpoint was trained on the {recorded} base, and the settings \
                         ask for {asked}: resume it on its own base, or start afresh"
                    )))
                }
                _ => s["base"] = serde_json::Value::String(recorded),
            }
        }
        self.base = self.base_of(&s).map_err(js_err)?;
        let Recipe {
            settings,
            schedule,
            train,
            starts,
            valid,
            ..
        } = self.setup(data, data_name, &s, None).map_err(js_err)?;
        let (seq, batch, accumulation, total) = (
            settings.seq,
            settings.batch,
            settings.accumulation,
            schedule.total,
        );
        self.training = None;
        let pad = pad_id(self.tokenizer.as_ref(), &self.config);
        let (train_count, valid_count) = (train.len(), valid.len());
        let packed = starts.is_some();
        let mut trainer = Trainer::new(
            &self.gpu,
            &self.config,
            self.weights.as_ref(),
            settings,
            schedule,
            train,
            starts,
            valid,
            pad,
            resume.as_ref().map(|(a, _, _)| a),
            &mut |done, all| {
                let _ = progress.call2(&JsValue::NULL, &done.into(), &all.into());
            },
        )
        .map_err(js_err)?;
        if let Some((_, moments, state)) = &resume {
            trainer
                .resume(&self.gpu, moments, state)
                .map_err(|e| js_err(format!("resuming: {e}")))?;
        }
        let summary = serde_json::json!({
            "examples": train_count, "packed": packed, "valid_examples": valid_count, "seq": seq, "batch": batch,
            "accumulation": accumulation, "steps": total, "step": trainer.step,
            "dora": trainer.session.settings.lora.use_dora,
            "planned_peak_bytes": trainer.session.compiled.peak_bytes(),
            "trainable": trainer.session.trainable().iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>(),
        });
        self.training = Some(trainer);
        Ok(summary.to_string())
    }

    /// One optimizer step; JSON with step, steps, loss, lr, grad_norm, tokens, epoch.
    pub async fn step(&mut self) -> Result<String, JsValue> {
        let t = self.training.as_mut().ok_or("prepare training first")?;
        let r = t.step(&self.gpu).await.map_err(js_err)?;
        let mut line = r.fields();
        line["steps"] = r.total.into();
        Ok(line.to_string())
    }

    /// The validation loss now (JSON: loss, perplexity, tokens; null without validation
    /// data, `valid_split` 0).
    pub async fn validate(&self) -> Result<String, JsValue> {
        let t = self.training.as_ref().ok_or("prepare training first")?;
        let score = t.validate(&self.gpu).await.map_err(js_err)?;
        Ok(match score {
            Some(v) => serde_json::json!({
                "step": t.step, "loss": v.loss, "perplexity": v.perplexity, "tokens": v.tokens,
            }),
            None => serde_json::Value::Null,
        }
        .to_string())
    }

    /// The trained adapter as [adapter_config.json text, adapter_model.safetensors bytes].
    pub async fn adapter(&self) -> Result<Array, JsValue> {
        let t = self.training.as_ref().ok_or("nothing trained yet")?;
        let adapter = t.adapter(&self.gpu).await.map_err(js_err)?;
        let (config, bytes) = adapter.to_bytes().map_err(js_err)?;
        let out = Array::new();
        out.push(&JsValue::from_str(&config));
        out.push(&Uint8Array::from(&bytes[..]));
        Ok(out)
    }

    /// A checkpoint of the run as it is now: [trainer state JSON, adapter_config.json text,
    /// adapter_model.safetensors bytes, optimizer.safetensors bytes (the AdamW moments)], what
    /// `prepare` takes to resume. An adapter holding a NaN or infinity is refused.
    pub async fn checkpoint(&self) -> Result<Array, JsValue> {
        let t = self.training.as_ref().ok_or("nothing trained yet")?;
        let (adapter, moments, state) = t.checkpoint(&self.gpu).await.map_err(js_err)?;
        let (config, weights) = adapter.to_bytes().map_err(js_err)?;
        let moments = tensors_to_bytes(&moments).map_err(js_err)?;
        let out = Array::new();
        out.push(&JsValue::from_str(&state.to_json()));
        out.push(&JsValue::from_str(&config));
        out.push(&Uint8Array::from(&weights[..]));
        out.push(&Uint8Array::from(&moments[..]));
        Ok(out)
    }

    /// The trained adapter as llama.cpp's GGUF LoRA for this model (f32), what
    /// `webqlora export --format gguf-lora` writes.
    pub async fn adapter_gguf(&self) -> Result<Uint8Array, JsValue> {
        let t = self.training.as_ref().ok_or("nothing trained yet")?;
        let adapter = t.adapter(&self.gpu).await.map_err(js_err)?;
        let bytes = gguf_lora_bytes(&adapter, &self.config, GgufLoraDtype::F32, "the adapter")
            .map_err(js_err)?;
        Ok(Uint8Array::from(&bytes[..]))
    }

    /// The model with the trained adapter merged in, as one GGUF that llama.cpp and Ollama run
    /// (`dtype` f32, f16 or q8_0; `progress(done, total)` a tensor at a time): what `webqlora
    /// merge --format gguf` writes. The model must be a GGUF file (its metadata, tokenizer and
    /// chat template are copied).
    pub async fn merged_gguf(
        &self,
        dtype: &str,
        progress: &Function,
    ) -> Result<Uint8Array, JsValue> {
        let t = self.training.as_ref().ok_or("nothing trained yet")?;
        let base = self.weights.as_gguf().ok_or(
            "a merged GGUF starts from a GGUF model; this one is a Hugging Face folder: download              the PEFT adapter and merge it with `webqlora merge`",
        )?;
        let dtype: GgufDtype = dtype.parse().map_err(js_err)?;
        let adapter = t.adapter(&self.gpu).await.map_err(js_err)?;
        let bytes = merged_gguf_bytes(base, &adapter, dtype, |done, all| {
            let _ = progress.call2(&JsValue::NULL, &done.into(), &all.into());
        })
        .map_err(js_err)?;
        Ok(Uint8Array::from(&bytes[..]))
    }

    fn lora(&self) -> Option<&LoraConfig> {
        self.training.as_ref().map(|t| &t.session.settings.lora)
    }

    /// Upload weights into a graph that does not share the training graph's.
    fn fill(
        &self,
        compiled: &crate::graph::CompiledGraph,
        model: &crate::model::transformer::Transformer,
    ) -> Result<(), JsValue> {
        upload_model_with_progress(
            &self.gpu,
            compiled,
            model,
            self.weights.as_ref(),
            self.base.format,
            None,
            &mut |_, _| {},
        )
        .map_err(js_err)?;
        Ok(())
    }

    /// The training graph to share weights with, and the adapter to apply: with `adapter`
    /// once training has started, else the base model alone (sharing its weights all the same).
    fn trained(
        &self,
        adapter: bool,
    ) -> (Option<&crate::graph::CompiledGraph>, Option<&LoraConfig>) {
        match &self.training {
            Some(t) => (
                Some(&t.session.compiled),
                if adapter { self.lora() } else { None },
            ),
            None => (None, None),
        }
    }

    /// Generate from `prompt` (as a chat user message with `chat`, when the model has a chat
    /// template), greedy, calling `on_text(text so far)` as tokens come; with the adapter when
    /// `adapter` is set and training has started, else from the base model.
    pub async fn generate(
        &self,
        prompt: &str,
        max_new: u32,
        chat: bool,
        adapter: bool,
        on_text: &Function,
    ) -> Result<String, JsValue> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or("this model has no tokenizer")?;
        let ids = if chat && tok.chat_template.is_some() {
            tok.encode_chat(
                &[Message {
                    role: "user".into(),
                    content: prompt.into(),
                }],
                true,
            )
            .map_err(js_err)?
        } else {
            tok.encode(prompt, true).map_err(js_err)?
        };
        let max_ctx = ids.len() + max_new as usize;
        let decoder = match self.trained(adapter) {
            (Some(compiled), lora) => Decoder::sharing(
                &self.gpu,
                &self.config,
                self.base.format,
                lora,
                max_ctx,
                compiled,
            )
            .map_err(js_err)?,
            (None, _) => {
                let d = Decoder::new(&self.gpu, &self.config, self.base.format, None, max_ctx)
                    .map_err(js_err)?;
                self.fill(&d.compiled, &d.model)?;
                d
            }
        };
        let mut sampler = Sampler::new(0.0, 1.0, 0);
        let stop = tok.stop_ids();
        let mut out_ids = Vec::new();
        let produced = generate(
            &decoder,
            &self.gpu,
            &ids,
            max_new as usize,
            &mut sampler,
            &stop,
            |t| {
                out_ids.push(t);
                if let Ok(s) = tok.decode(&out_ids, true) {
                    let _ = on_text.call1(&JsValue::NULL, &JsValue::from_str(&s));
                }
                true
            },
        )
        .await
        .map_err(js_err)?;
        tok.decode(&produced, true).map_err(js_err)
    }

    /// Evaluate on `data` (JSONL, the file `name`, which errors name), its first `limit`
    /// records (0: all), as `webqlora eval --json` does: the loss and perplexity over every
    /// record (a question's loss is its right answer's), and the multiple-choice accuracy and
    /// acc_norm of its questions. With the adapter when `adapter` is set and training has
    /// started. `progress(done, total)` a question at a time. JSON: loss, perplexity, tokens,
    /// accuracy and acc_norm (null without questions), n.
    pub async fn evaluate(
        &self,
        data: &str,
        name: &str,
        limit: u32,
        adapter: bool,
        progress: &Function,
    ) -> Result<String, JsValue> {
        let mut records = parse_jsonl(data, name).map_err(js_err)?;
        if limit > 0 {
            records.truncate(limit as usize);
        }
        let needs_tok = records
            .iter()
            .any(|(_, r)| !matches!(r, Record::Tokens { .. }));
        let tok = match (&self.tokenizer, needs_tok) {
            (Some(t), _) => Some(t),
            (None, false) => None,
            (None, true) => {
                return Err(
                    "this model has no tokenizer: give its tokenizer.json, or tokenized data (input_ids)".into(),
                )
            }
        };
        let questions: Vec<Mcq> = records
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Mcq(q) => Some(q.clone()),
                _ => None,
            })
            .collect();
        records.retain(|(_, r)| !matches!(r, Record::Mcq(_)));
        if records.is_empty() && questions.is_empty() {
            return Err(format!("{name}: no records to evaluate").into());
        }
        let opts = EncodeOptions {
            train_on_inputs: false,
            max_len: 2048,
            mcq_by_letter: false,
        };
        let other =
            encode_records(&records, tok, self.config.vocab_size, &opts, name).map_err(js_err)?;
        let example_items = crate::train::evaluate::example_items(&other);
        let items = match tok {
            Some(tok) if !questions.is_empty() => {
                Some(question_items(tok, &questions, false).map_err(js_err)?)
            }
            _ => None,
        };
        let shape = ScorerShape::for_items(
            &[
                example_items.as_slice(),
                items.as_ref().map_or(&[], |q| q.items.as_slice()),
            ],
            PASS_TOKENS,
            self.config.vocab_size,
            self.gpu.limits.max_storage_buffer_binding_size,
        );
        let scorer = match self.trained(adapter) {
            (Some(compiled), lora) => Scorer::sharing(
                &self.gpu,
                &self.config,
                self.base.format,
                lora,
                shape,
                compiled,
            )
            .map_err(js_err)?,
            (None, _) => {
                let s = Scorer::new(&self.gpu, &self.config, self.base.format, None, shape)
                    .map_err(js_err)?;
                self.fill(&s.compiled, &s.model)?;
                s
            }
        };
        let (logprob, tokens) = scorer
            .logprob_sum(&self.gpu, &other)
            .await
            .map_err(js_err)?;
        let mcq = match &items {
            Some(items) => Some(
                scorer
                    .mcq(&self.gpu, &questions, items, |i| {
                        let _ = progress.call2(&JsValue::NULL, &i.into(), &questions.len().into());
                    })
                    .await
                    .map_err(js_err)?,
            ),
            None => None,
        };
        let loss = match &mcq {
            Some(m) => LossScore::of(logprob + m.answer_logprob, tokens + m.answer_tokens),
            None => LossScore::of(logprob, tokens),
        };
        Ok(serde_json::json!({
            "loss": loss.loss, "perplexity": loss.perplexity, "tokens": loss.tokens,
            "accuracy": mcq.as_ref().map(|m| m.accuracy),
            "acc_norm": mcq.as_ref().map(|m| m.acc_norm),
            "n": other.len() + questions.len(),
        })
        .to_string())
    }
}
