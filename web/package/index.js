// webqlora for web apps: QLoRA fine-tuning of a small language model on the user's GPU, in a
// Web Worker the package starts itself. Types: index.d.ts. The layers (docs/ARCHITECTURE.md):
// the Rust `WebSession` (src/web.rs) → the worker's request protocol (worker.js) → this typed
// API, with the model cache of models.js.

import { DeviceLostError, DownloadError, SettingsError, WebQloraError } from './errors.js';
import * as cache from './models.js';

export { DeviceLostError, DownloadError, SettingsError, WebQloraError };
export { DEFAULT_CHUNK, defaultCatalogUrl } from './models.js';

// ---- settings: typed keys in, the library's JSON out ------------------------------------------

// camelCase key → [the library's key, type].
const SETTING_KEYS = {
  rank: ['rank', 'number'],
  alpha: ['alpha', 'number'],
  lr: ['lr', 'number'],
  steps: ['steps', 'number'],
  epochs: ['epochs', 'number'],
  maxSeqLen: ['max_seq_len', 'number'],
  batch: ['batch', 'number'],
  accumulation: ['accumulation', 'number'],
  seed: ['seed', 'number'],
  schedule: ['schedule', 'string'],
  warmupSteps: ['warmup_steps', 'number'],
  weightDecay: ['weight_decay', 'number'],
  maxGradNorm: ['max_grad_norm', 'number'],
  loraDropout: ['lora_dropout', 'number'],
  validSplit: ['valid_split', 'number'],
  packing: ['packing', 'boolean'],
  dora: ['dora', 'boolean'],
  rslora: ['rslora', 'boolean'],
  targetModules: ['target_modules', 'strings'],
  checkpointing: ['checkpointing', 'boolean'],
  trainOnInputs: ['train_on_inputs', 'boolean'],
  base: ['base', 'string'],
  modelName: ['model_name', 'string'],
};

/** The library's JSON settings for `settings`; an unknown key or a wrong type is refused. */
export function librarySettings(settings = {}) {
  if (settings === null || typeof settings !== 'object') {
    throw new SettingsError(`settings: expected an object, got ${settings === null ? 'null' : typeof settings}`, '');
  }
  const out = {};
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined) continue;
    const known = SETTING_KEYS[key];
    if (!known) {
      throw new SettingsError(`settings.${key}: not a setting (the settings are ${Object.keys(SETTING_KEYS).join(', ')})`, key);
    }
    const [name, type] = known;
    const fits = type === 'strings'
      ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : typeof value === type && (type !== 'number' || Number.isFinite(value));
    if (!fits) {
      const expected = { number: 'a finite number', strings: 'a list of strings' }[type] || `a ${type}`;
      throw new SettingsError(`settings.${key}: expected ${expected}, got ${JSON.stringify(value)}`, key);
    }
    out[name] = value;
  }
  return out;
}

// snake_case keys → camelCase, deeply (the library's JSON reports as typed objects).
function camel(value) {
  if (Array.isArray(value)) return value.map(camel);
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) return value;
  const out = {};
  for (const [k, v] of Object.entries(value)) out[k.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase())] = camel(v);
  return out;
}

// ---- inputs -------------------------------------------------------------------------------

async function dataOf(data) {
  if (typeof data === 'string') return { text: data, name: 'data.jsonl' };
  if (data && typeof data.text === 'function') return { text: await data.text(), name: data.name || 'data.jsonl' };
  if (data && typeof data.text === 'string') return { text: data.text, name: data.name || 'data.jsonl' };
  throw new SettingsError('data: expected JSONL text, a File / Blob, or { name, text }', 'data');
}

async function bytesOf(data) {
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  if (data && typeof data.arrayBuffer === 'function') return data.arrayBuffer();
  throw new SettingsError('model files: expected File, Blob, ArrayBuffer or Uint8Array contents', 'files');
}

async function fetchBytes(url, onDownload, signal) {
  let r;
  try {
    r = await fetch(url, { signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new DownloadError(`${url}: ${e.message}`, url, 0);
  }
  if (!r.ok) throw new DownloadError(`${url}: HTTP ${r.status}`, url, r.status);
  const total = Number(r.headers.get('content-length')) || 0;
  const file = url.split('/').pop().split('?')[0];
  const reader = r.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    if (onDownload) onDownload({ file, done: got, total });
  }
  const out = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out.buffer;
}

/**
 * The files of a model at `url`: one .gguf file, or a Hugging Face folder (config.json, the
 * safetensors weights or their shards, tokenizer.json and tokenizer_config.json when there).
 */
export async function filesFromUrl(url, { onDownload, signal } = {}) {
  if (/\.gguf(\?|$)/i.test(url)) {
    return [[url.split('/').pop().split('?')[0], await fetchBytes(url, onDownload, signal)]];
  }
  const base = url.endsWith('/') ? url : url + '/';
  const files = [['config.json', await fetchBytes(base + 'config.json', onDownload, signal)]];
  try {
    files.push(['model.safetensors', await fetchBytes(base + 'model.safetensors', onDownload, signal)]);
  } catch (e) {
    if (!(e instanceof DownloadError) || e.status !== 404) throw e;
    const index = JSON.parse(new TextDecoder().decode(await fetchBytes(base + 'model.safetensors.index.json', onDownload, signal)));
    for (const shard of new Set(Object.values(index.weight_map))) {
      files.push([shard, await fetchBytes(base + shard, onDownload, signal)]);
    }
  }
  for (const optional of ['tokenizer.json', 'tokenizer_config.json']) {
    try {
      files.push([optional, await fetchBytes(base + optional, onDownload, signal)]);
    } catch (e) {
      if (!(e instanceof DownloadError) || e.status !== 404) throw e;
    }
  }
  return files;
}

// ---- the model catalog and its cache ---------------------------------------------------------

/** The ready models of a catalog (the package's own by default). */
export function catalog(url) {
  return cache.catalog(url);
}

/** A catalog entry by id or name (case-insensitive). */
export async function findModel(name, catalogUrl) {
  const list = await cache.catalog(catalogUrl);
  const want = String(name).toLowerCase();
  const entry = list.find((m) => m.id.toLowerCase() === want || (m.name || '').toLowerCase() === want);
  if (!entry) {
    throw new WebQloraError(`no model '${name}' in the catalog (it has ${list.map((m) => m.id).join(', ')})`, 'open');
  }
  return entry;
}

/** What this browser holds of a catalog entry: complete, bytes kept, and the files' record. */
export function cachedStatus(entry, { chunkBytes } = {}) {
  return cache.status(entry, chunkBytes);
}

/**
 * Download a catalog entry into this browser's Origin Private File System, or what is missing
 * of it (HTTP Range), checking each file's SHA-256 against the catalog's where it gives one.
 */
export async function downloadModel(entry, { onDownload, signal, chunkBytes } = {}) {
  return cache.download(entry, (done, total, file) => onDownload && onDownload({ file, done, total }), signal, chunkBytes);
}

/** The files of a downloaded catalog entry, as `Session.open({ files })` takes them. */
export function cachedFiles(entry) {
  return cache.files(entry);
}

/** Remove a catalog entry's files from this browser. */
export function removeCachedModel(entry) {
  return cache.remove(entry);
}

// ---- the session --------------------------------------------------------------------------------

/** A model open on the GPU, in a worker of its own, and the run trained on it. */
export class Session {
  #worker;
  #next = 1;
  #pending = new Map();
  #broken = null;

  /** The device and the model (updated by `renew`). */
  info;

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = (e) => this.#receive(e.data);
    worker.onerror = (e) => {
      e.preventDefault?.();
      this.#broken = new WebQloraError(`the trainer's worker stopped: ${e.message || 'it could not start (is the package served with its pkg/ folder?)'}`, 'worker');
      for (const p of this.#pending.values()) p.reject(this.#broken);
      this.#pending.clear();
    };
  }

  /**
   * Open a model: `{ files }` (File objects or [name, bytes] pairs), `{ url }` (a .gguf file or
   * a Hugging Face folder), or `{ catalog: 'id or name' }` (downloaded into this browser once,
   * then read from it).
   */
  static async open(source, options = {}) {
    const { kernels, onDownload, signal, chunkBytes, catalogUrl, workerUrl } = options;
    let files;
    if (source && source.files) {
      files = [];
      for (const f of source.files) {
        if (Array.isArray(f)) files.push([f[0], await bytesOf(f[1])]);
        else files.push([f.name, await bytesOf(f)]);
      }
    } else if (source && typeof source.url === 'string') {
      files = await filesFromUrl(source.url, { onDownload, signal });
    } else if (source && typeof source.catalog === 'string') {
      const entry = await findModel(source.catalog, catalogUrl);
      const kept = await cache.status(entry, chunkBytes);
      if (!kept.complete) await downloadModel(entry, { onDownload, signal, chunkBytes });
      files = await cache.files(entry);
    } else {
      throw new SettingsError('Session.open: give { files }, { url } or { catalog }', 'source');
    }
    const worker = new Worker(workerUrl || new URL('./worker.js', import.meta.url), { type: 'module' });
    const session = new Session(worker);
    try {
      session.info = camel(await session.#call('open', { files, kernels: kernels || null }, {},
        files.map(([, b]) => b)));
    } catch (e) {
      worker.terminate();
      throw e;
    }
    return session;
  }

  #receive(m) {
    const p = this.#pending.get(m.id);
    if (!p) return;
    if (m.kind === 'event') {
      const handler = p.on[m.name];
      if (handler) handler(m);
    } else {
      this.#pending.delete(m.id);
      if (m.kind === 'done') p.resolve(m.value);
      else if (m.lost) p.reject(new DeviceLostError(m.lost, p.op));
      else p.reject(new WebQloraError(m.message, p.op));
    }
  }

  #call(op, args = {}, on = {}, transfer = []) {
    if (this.#broken) return Promise.reject(this.#broken);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { op, resolve, reject, on });
      this.#worker.postMessage({ id, op, ...args }, transfer);
    });
  }

  /**
   * Will this run fit: the planned GPU memory of a training step for `data` and `settings`,
   * nothing allocated, against `budgetMiB` and the device's limits, and the nearest smaller
   * batch / sequence length that fits when it does not.
   */
  async fit(data, settings, { budgetMiB = 4096 } = {}) {
    const d = await dataOf(data);
    return camel(await this.#call('fit', { data: d.text, dataName: d.name, settings: librarySettings(settings), budgetMiB }));
  }

  /**
   * Train an adapter on `data` with `settings`, from `resume` (a checkpoint) when given. Resolves
   * when the last step is done, or after the step in progress once `signal` aborts (with
   * `stopped`). A lost GPU device is recovered: a new device, and the run goes on from its last
   * checkpoint (`onDeviceLost` says so), up to `recoverDeviceLoss` times (default 3; 0 throws
   * DeviceLostError at once).
   */
  async train(data, settings, options = {}) {
    const d = await dataOf(data);
    const lib = librarySettings(settings);
    const { signal, saveEvery = 0, evalEvery = 0, recoverDeviceLoss = 3 } = options;
    let resume = options.resume || null;
    let last = resume;
    let losses = 0;
    for (;;) {
      try {
        const summary = camel(await this.#call('prepare', { data: d.text, dataName: d.name, settings: lib, resume },
          { load: (m) => options.onLoad && options.onLoad(m.done, m.total) }));
        if (options.onPrepared) options.onPrepared(summary);
        if (summary.step >= summary.steps) {
          return { step: summary.step, steps: summary.steps, stopped: false, summary, checkpoint: last };
        }
        const id = this.#next;
        const stop = () => this.#worker.postMessage({ op: 'stop', target: id });
        if (signal) signal.addEventListener('abort', stop, { once: true });
        let result;
        try {
          result = await this.#call('train', { saveEvery, evalEvery, validation: summary.validExamples > 0, stopNow: !!(signal && signal.aborted) }, {
            step: (m) => options.onStep && options.onStep(stepReport(m)),
            validation: (m) => options.onValidation && options.onValidation(camel(strip(m))),
            checkpoint: (m) => {
              last = checkpointOf(m);
              if (options.onCheckpoint) options.onCheckpoint(last);
            },
          });
        } finally {
          if (signal) signal.removeEventListener('abort', stop);
        }
        return { ...result, summary, checkpoint: last };
      } catch (e) {
        if (!(e instanceof DeviceLostError) || losses >= recoverDeviceLoss) throw e;
        losses += 1;
        if (options.onDeviceLost) options.onDeviceLost({ message: e.message, operation: e.operation, resumeFrom: last ? last.step : 0 });
        await this.renew();
        resume = last;
      }
    }
  }

  /** A checkpoint of the run as it is now, what `train`'s `resume` takes. */
  async checkpoint() {
    return checkpointOf(await this.#call('checkpoint'));
  }

  /** The validation loss now (null without validation data: `validSplit` 0). */
  async validate() {
    const v = await this.#call('validate');
    return v && camel(v);
  }

  /**
   * Evaluate on `data`, as `webqlora eval` does: loss and perplexity over every record, and
   * the multiple-choice accuracy of its questions; with the adapter once trained unless
   * `adapter` is false.
   */
  async evaluate(data, { limit = 0, adapter = true, onProgress } = {}) {
    const d = await dataOf(data);
    return camel(await this.#call('evaluate', { data: d.text, name: d.name, limit, adapter },
      { progress: (m) => onProgress && onProgress(m.done, m.total) }));
  }

  /**
   * Greedy text from `prompt` (as a chat user message when `chat` and the model has a chat
   * template), `onText(text so far)` as tokens come; with the adapter once trained unless
   * `adapter` is false.
   */
  generate(prompt, { maxNewTokens = 48, chat = true, adapter = true, onText } = {}) {
    return this.#call('generate', { prompt, maxNew: maxNewTokens, chat, adapter },
      { text: (m) => onText && onText(m.text) });
  }

  /** The trained adapter in PEFT's format: adapter_config.json and adapter_model.safetensors. */
  async exportPeft() {
    const { config, weights } = await this.#call('adapter');
    return {
      config: new Blob([config], { type: 'application/json' }),
      weights: new Blob([weights], { type: 'application/octet-stream' }),
    };
  }

  /** The trained adapter as llama.cpp's GGUF LoRA (`--lora`, Ollama's ADAPTER). */
  async exportGgufLora() {
    return new Blob([await this.#call('adapter-gguf')], { type: 'application/octet-stream' });
  }

  /** The model with the adapter merged in, one GGUF that llama.cpp and Ollama run. */
  async exportMergedGguf({ dtype = 'q8_0', onProgress } = {}) {
    const bytes = await this.#call('merged-gguf', { dtype }, { progress: (m) => onProgress && onProgress(m.done, m.total) });
    return new Blob([bytes], { type: 'application/octet-stream' });
  }

  /** Force the kernels (`WEBQLORA_KERNELS`'s form: 'portable', 'software', 'nf4=portable,...'). */
  async setKernels(kernels) {
    this.info = camel(await this.#call('set-kernels', { kernels }));
    return this.info;
  }

  /** A new GPU device after a loss (the model stays open; a run resumes from a checkpoint). */
  async renew() {
    this.info = camel(await this.#call('renew'));
    return this.info;
  }

  /** Destroy the GPU device, as a GPU reset does (for testing recovery). */
  loseDevice() {
    const id = this.#next++;
    this.#worker.postMessage({ id, op: 'lose-device' });
  }

  /** End the worker and free the GPU device. */
  close() {
    this.#worker.terminate();
    this.#broken = new WebQloraError('the session is closed', 'close');
    for (const p of this.#pending.values()) p.reject(this.#broken);
    this.#pending.clear();
  }
}

function strip(m) {
  const { id, kind, name, ...rest } = m;
  return rest;
}

function stepReport(m) {
  return camel(strip(m));
}

function checkpointOf(m) {
  return { step: m.step, steps: m.steps, state: m.state, config: m.config, weights: m.weights, moments: m.moments };
}
