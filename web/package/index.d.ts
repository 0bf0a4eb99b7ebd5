// Types of the webqlora package: QLoRA fine-tuning of a small language model on the user's GPU
// (WebGPU), in a Web Worker the package starts itself.

/** Any failure of webqlora, with the message the CLI gives for it. */
export class WebQloraError extends Error {
  constructor(message: string, operation: string, options?: { cause?: unknown });
  /** What failed: 'open', 'prepare', 'train', 'evaluate', 'generate', 'adapter', ... */
  readonly operation: string;
}
/** The GPU device was lost (a driver reset, another tab, `GPUDevice.destroy()`). */
export class DeviceLostError extends WebQloraError {}
/** Settings that are not what the library takes: an unknown key, a wrong type. */
export class SettingsError extends WebQloraError {
  constructor(message: string, key: string);
  /** The key at fault. */
  readonly key: string;
}
/** A download that failed: its URL, and the HTTP status when the server answered (else 0). */
export class DownloadError extends WebQloraError {
  constructor(message: string, url: string, status: number);
  readonly url: string;
  readonly status: number;
}

/** The part size of the model cache when none is given (16 MiB). */
export const DEFAULT_CHUNK: number;
/** The URL of the catalog the package ships (the one the CLI's `--model NAME` reads). */
export const defaultCatalogUrl: string;

/** How the frozen base weights are held: the model's own (a GGUF's codes), GGUF codes, NF4, f32. */
export type BaseChoice = 'auto' | 'gguf' | 'nf4' | 'f32';

/** A run's settings; every key is optional and defaults as the CLI's `webqlora train`. */
export interface TrainSettings {
  /** LoRA rank (16). */
  rank?: number;
  /** LoRA alpha (2 × rank). */
  alpha?: number;
  /** Peak learning rate (2e-4). */
  lr?: number;
  /** Optimizer steps (default: `epochs` over the data). */
  steps?: number;
  /** Passes over the training data when `steps` is not given (1). */
  epochs?: number;
  /** Longest sequence in tokens (512). */
  maxSeqLen?: number;
  /** Sequences a micro-batch (4). */
  batch?: number;
  /** Micro-batches an optimizer step (1). */
  accumulation?: number;
  /** Seed of the adapter's initialization, the data order and dropout (42). */
  seed?: number;
  /** Learning-rate schedule: 'linear' (default), 'cosine' or 'constant'. */
  schedule?: 'linear' | 'cosine' | 'constant';
  warmupSteps?: number;
  weightDecay?: number;
  /** Gradient clipping by global norm (1.0). */
  maxGradNorm?: number;
  loraDropout?: number;
  /** The share of the data held out for validation (0). */
  validSplit?: number;
  /** Pack short examples into full rows. */
  packing?: boolean;
  /** DoRA: a trained magnitude per output (PEFT's use_dora). */
  dora?: boolean;
  /** rsLoRA: scale by alpha / √rank instead of alpha / rank. */
  rslora?: boolean;
  /** The modules to adapt (default: every linear one; Phi-3's are qkv_proj, o_proj, gate_up_proj, down_proj). */
  targetModules?: Array<
    'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj' | 'qkv_proj' | 'gate_up_proj'
  >;
  /** Recompute each layer's activations in the backward: less memory (true). */
  checkpointing?: boolean;
  /** Train on the prompt's tokens too. */
  trainOnInputs?: boolean;
  base?: BaseChoice;
  /** `base_model_name_or_path` in the adapter's config. */
  modelName?: string;
}

/** The settings as the library's JSON takes them (snake_case keys); throws SettingsError. */
export function librarySettings(settings?: TrainSettings): Record<string, number | string | boolean>;

/** JSONL text, a File / Blob, or named text: text, prompt/completion, messages, question/choices/answer or input_ids records. */
export type DataInput = string | Blob | { name: string; text: string };

/** Model files: File objects, or [file name, contents] pairs. */
export type ModelFile = File | [string, ArrayBuffer | ArrayBufferView | Blob];

/** What to open: local files, a URL (a .gguf file or a Hugging Face folder), or a catalog model. */
export type ModelSource =
  | { files: ModelFile[] }
  | { url: string }
  | { catalog: string };

export interface DownloadProgress {
  file: string;
  done: number;
  /** 0 when the server does not say. */
  total: number;
}

export interface OpenOptions {
  /** Force the kernels, as `WEBQLORA_KERNELS`: 'portable', 'software', 'nf4=portable,...'. */
  kernels?: string;
  onDownload?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
  /** The model cache's part size (bytes; the same for every call on one model). */
  chunkBytes?: number;
  /** The catalog `{ catalog }` names a model of (default: the package's). */
  catalogUrl?: string | URL;
  /** The worker script (default: the package's worker.js, beside index.js). */
  workerUrl?: string | URL;
}

export interface ModelInfo {
  device: string;
  backend: string;
  kernels: string;
  layers: number;
  hidden: number;
  vocab: number;
  tokenizer: boolean;
  gguf: boolean;
  /** The base the next run is held in ('gguf', 'nf4', 'f32'), and why. */
  base: string;
  baseWhy: string;
  maxStorageBinding: number;
  maxBuffer: number;
}

export interface FitCandidate {
  batch: number;
  accumulation: number;
  maxLen: number;
  seq: number;
  plannedBytes: number | null;
  paramsBytes: number | null;
  largestBuffer: number | null;
  error: string | null;
  fits: boolean;
}

export interface FitReport {
  budget: number;
  fits: boolean;
  asked: FitCandidate;
  /** The nearest smaller shape that fits, when the asked one does not. */
  proposal: FitCandidate | null;
  /** Why it does not fit, in words. */
  refusal: string | null;
  data: { examples: number; tokens: number };
  limits: { maxBuffer: number; maxStorageBinding: number };
}

export interface RunSummary {
  examples: number;
  packed: boolean;
  validExamples: number;
  seq: number;
  batch: number;
  accumulation: number;
  steps: number;
  /** The step the run starts after (0, or a resumed checkpoint's). */
  step: number;
  dora: boolean;
  plannedPeakBytes: number;
  trainable: number;
}

export interface StepReport {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  epoch: number;
  seconds: number;
}

export interface ValidationScore {
  step: number;
  loss: number;
  perplexity: number;
  tokens: number;
}

/** A run as it was after `step`: what `train`'s `resume` takes. */
export interface Checkpoint {
  step: number;
  steps: number;
  /** trainer_state.json */
  state: string;
  /** adapter_config.json */
  config: string;
  /** adapter_model.safetensors */
  weights: Uint8Array;
  /** optimizer.safetensors (the AdamW moments) */
  moments: Uint8Array;
}

export interface DeviceLoss {
  message: string;
  operation: string;
  /** The checkpoint's step the run goes on from (0: from the start). */
  resumeFrom: number;
}

export interface TrainOptions {
  resume?: Checkpoint | null;
  /** A checkpoint every N steps (0: at a stop and at the end only). */
  saveEvery?: number;
  /** Validation every N steps (and at the end), when `validSplit` holds data out. */
  evalEvery?: number;
  /** Stops the run after the step in progress (with a checkpoint). */
  signal?: AbortSignal;
  /** Device losses recovered from the last checkpoint before DeviceLostError is thrown (3). */
  recoverDeviceLoss?: number;
  onLoad?: (done: number, total: number) => void;
  onPrepared?: (summary: RunSummary) => void;
  onStep?: (step: StepReport) => void;
  onValidation?: (score: ValidationScore) => void;
  onCheckpoint?: (checkpoint: Checkpoint) => void;
  onDeviceLost?: (loss: DeviceLoss) => void;
}

export interface TrainResult {
  step: number;
  steps: number;
  stopped: boolean;
  summary: RunSummary;
  /** The last checkpoint (the run's end or stop), when one was taken. */
  checkpoint: Checkpoint | null;
}

export interface EvalReport {
  loss: number;
  perplexity: number;
  tokens: number;
  /** Multiple-choice accuracy and length-normalized accuracy (null without questions). */
  accuracy: number | null;
  accNorm: number | null;
  n: number;
}

export interface EvaluateOptions {
  /** The first N records (0: all). */
  limit?: number;
  /** With the trained adapter (true), or the base model alone. */
  adapter?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface GenerateOptions {
  maxNewTokens?: number;
  /** As a chat user message, when the model has a chat template (true). */
  chat?: boolean;
  /** With the trained adapter (true), or the base model alone. */
  adapter?: boolean;
  /** The text so far, as tokens come. */
  onText?: (text: string) => void;
}

export type MergedDtype = 'q8_0' | 'f16' | 'f32';

/** A model open on the GPU, in a worker of its own, and the run trained on it. */
export class Session {
  private constructor(worker: Worker);
  static open(source: ModelSource, options?: OpenOptions): Promise<Session>;
  /** The device and the model (updated by `renew` and `setKernels`). */
  info: ModelInfo;
  fit(data: DataInput, settings: TrainSettings, options?: { budgetMiB?: number }): Promise<FitReport>;
  train(data: DataInput, settings: TrainSettings, options?: TrainOptions): Promise<TrainResult>;
  checkpoint(): Promise<Checkpoint>;
  validate(): Promise<ValidationScore | null>;
  evaluate(data: DataInput, options?: EvaluateOptions): Promise<EvalReport>;
  generate(prompt: string, options?: GenerateOptions): Promise<string>;
  exportPeft(): Promise<{ config: Blob; weights: Blob }>;
  exportGgufLora(): Promise<Blob>;
  exportMergedGguf(options?: { dtype?: MergedDtype; onProgress?: (done: number, total: number) => void }): Promise<Blob>;
  setKernels(kernels: string): Promise<ModelInfo>;
  renew(): Promise<ModelInfo>;
  loseDevice(): void;
  close(): void;
}

/** A ready model of a catalog. */
export interface CatalogEntry {
  id: string;
  name: string;
  family?: string;
  quant?: string;
  license?: string;
  megabytes?: number;
  files: { name: string; url: string; sha256?: string }[];
}

export interface CachedFile {
  name: string;
  size: number;
  parts: number;
  sha256: string;
}

export interface CacheStatus {
  complete: boolean;
  bytes: number;
  meta: { complete: boolean; files: CachedFile[] } | null;
}

export function catalog(url?: string | URL): Promise<CatalogEntry[]>;
export function findModel(name: string, catalogUrl?: string | URL): Promise<CatalogEntry>;
export function cachedStatus(entry: CatalogEntry, options?: { chunkBytes?: number }): Promise<CacheStatus>;
export function downloadModel(
  entry: CatalogEntry,
  options?: { onDownload?: (progress: DownloadProgress) => void; signal?: AbortSignal; chunkBytes?: number },
): Promise<{ meta: { complete: boolean; files: CachedFile[] }; info: { resumedAt: [string, number][] } }>;
export function cachedFiles(entry: CatalogEntry): Promise<[string, ArrayBuffer][]>;
export function removeCachedModel(entry: CatalogEntry): Promise<void>;
export function filesFromUrl(
  url: string,
  options?: { onDownload?: (progress: DownloadProgress) => void; signal?: AbortSignal },
): Promise<[string, ArrayBuffer][]>;
