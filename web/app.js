// The page: model, data, settings, training with a live loss chart, trying prompts and MCQ
// accuracy before and after, and the adapter download. All work happens in worker.js.

import * as models from './models.js';

const $ = (id) => document.getElementById(id);
const worker = new Worker('worker.js', { type: 'module' });
// Exposed for the end-to-end test, which reads the losses.
const state = window.webqloraState = { modelName: '', data: null, dataName: '', trained: false, losses: [], tokens: 0, seconds: 0 };

function message(text, error) {
  const m = $('message');
  m.hidden = !text;
  m.textContent = text || '';
  m.className = error ? 'message error' : 'message';
}

// What an error means for the user.
function explain(where, text) {
  if (/limit|exceeds|max_storage|maxStorage|binding size/i.test(text)) {
    return `Your GPU's limits are too small for this (${where}): ${text}. A smaller batch or sequence length needs less.`;
  }
  if (/lost|destroyed/i.test(text)) {
    return `The GPU device was lost (${where}): ${text}. Reload the page: the model and the run's last checkpoint stay in this browser's storage.`;
  }
  if (/out of memory|OutOfMemory|allocation/i.test(text)) {
    return `The GPU ran out of memory (${where}): ${text}. Try a smaller batch, sequence length or rank.`;
  }
  return `${where}: ${text}`;
}

worker.onerror = (e) => {
  message(explain('the trainer stopped', e.message || 'unknown error (device lost or out of memory?)'), true);
  setBusy(false);
};

// ---- model files, kept in the Origin Private File System ------------------------------------

async function opfsDir() {
  if (!navigator.storage || !navigator.storage.getDirectory) return null;
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle('model', { create: true });
}

async function keepModel(files) {
  try {
    const root = await navigator.storage.getDirectory();
    await root.removeEntry('model', { recursive: true }).catch(() => {});
    const dir = await opfsDir();
    for (const [name, buf] of files) {
      const h = await dir.getFileHandle(name, { create: true });
      const w = await h.createWritable();
      await w.write(buf);
      await w.close();
    }
  } catch (e) { console.warn('could not keep the model in this browser', e); }
}

async function cachedModel() {
  try {
    const dir = await opfsDir();
    if (!dir) return null;
    const files = [];
    for await (const [name, h] of dir.entries()) {
      files.push([name, await (await h.getFile()).arrayBuffer()]);
    }
    return files.length ? files : null;
  } catch (e) { return null; }
}

// ---- the run, kept in the Origin Private File System so a reload can resume it -------------
// run/run.json (settings, data name, model name), run/data.jsonl, and per checkpoint
// <step>.state.json, <step>.adapter_config.json, <step>.adapter_model.safetensors,
// <step>.optimizer.safetensors; run/latest.json (step, steps, losses so far) is written last,
// so it never names a checkpoint whose files are not all there.

async function runDir(create) {
  if (!navigator.storage || !navigator.storage.getDirectory) return null;
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle('run', { create });
}

async function writeFile(dir, name, data) {
  const h = await dir.getFileHandle(name, { create: true });
  const w = await h.createWritable();
  await w.write(data);
  await w.close();
}

async function readFile(dir, name, text) {
  const f = await (await dir.getFileHandle(name)).getFile();
  return text ? f.text() : f.arrayBuffer();
}

async function startRun(settings) {
  try {
    const root = await navigator.storage.getDirectory();
    await root.removeEntry('run', { recursive: true }).catch(() => {});
    const dir = await runDir(true);
    await writeFile(dir, 'data.jsonl', state.data);
    await writeFile(dir, 'run.json', JSON.stringify({ settings, dataName: state.dataName, modelName: state.modelName, modelId: state.modelId }));
  } catch (e) { console.warn('could not keep the run in this browser', e); }
}

// The checkpoints' writes, one after another; what reads the run waits for them.
let storing = Promise.resolve();

async function keepCheckpoint(m) {
  try {
    const dir = await runDir(true);
    const prefix = `${m.step}.`;
    await writeFile(dir, prefix + 'state.json', m.state);
    await writeFile(dir, prefix + 'adapter_config.json', m.config);
    await writeFile(dir, prefix + 'adapter_model.safetensors', m.weights);
    await writeFile(dir, prefix + 'optimizer.safetensors', m.moments);
    const previous = state.savedStep;
    await writeFile(dir, 'latest.json', JSON.stringify({ step: m.step, steps: m.steps,
      losses: state.losses.slice(0, m.step), valLosses: (state.valLosses || []).filter(([s]) => s <= m.step) }));
    state.savedStep = m.step;
    if (previous && previous !== m.step) {
      for (const f of ['state.json', 'adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors']) {
        await dir.removeEntry(`${previous}.${f}`).catch(() => {});
      }
    }
    $('train-info').dataset.saved = String(m.step);
  } catch (e) { console.warn('could not keep the checkpoint in this browser', e); }
}

// The interrupted run kept in this browser, if any: { run, latest } (a finished one too with
// `finished`).
async function keptRun(finished) {
  try {
    const dir = await runDir(false);
    const latest = JSON.parse(await readFile(dir, 'latest.json', true));
    const run = JSON.parse(await readFile(dir, 'run.json', true));
    state.keptLatest = latest;
    return finished || latest.step < latest.steps ? { run, latest } : null;
  } catch (e) { state.keptError = String(e); return null; }
}

async function fetchWithProgress(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  const total = Number(r.headers.get('content-length')) || 0;
  const reader = r.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    $('download-progress').max = total || got;
    $('download-progress').value = got;
    $('download-text').textContent = `${(got / 1e6).toFixed(1)} MB${total ? ' of ' + (total / 1e6).toFixed(1) : ''}`;
  }
  const out = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out.buffer;
}

async function filesFromUrl(url) {
  if (/\.gguf(\?|$)/i.test(url)) {
    return [[url.split('/').pop().split('?')[0], await fetchWithProgress(url)]];
  }
  const base = url.endsWith('/') ? url : url + '/';
  const files = [['config.json', await fetchWithProgress(base + 'config.json')]];
  try {
    files.push(['model.safetensors', await fetchWithProgress(base + 'model.safetensors')]);
  } catch (e) {
    const index = JSON.parse(new TextDecoder().decode(await fetchWithProgress(base + 'model.safetensors.index.json')));
    for (const shard of new Set(Object.values(index.weight_map))) {
      files.push([shard, await fetchWithProgress(base + shard)]);
    }
  }
  for (const optional of ['tokenizer.json', 'tokenizer_config.json']) {
    try { files.push([optional, await fetchWithProgress(base + optional)]); } catch (e) { /* absent */ }
  }
  return files;
}

// `id`: the ready model's catalog id, so that a resumed run reopens it.
function openModel(files, name, keep, id) {
  state.modelName = name;
  state.modelId = id || null;
  message('');
  $('model-info').textContent = `opening ${name} …`;
  const copies = files.map(([n, b]) => [n, b.slice(0)]);
  // ?kernels=portable (or software, or nf4=portable,...) forces the kernels, as
  // WEBQLORA_KERNELS does for the native binary.
  const kernels = new URLSearchParams(location.search).get('kernels');
  worker.postMessage({ type: 'open', files, kernels }, files.map(([, b]) => b));
  if (keep) keepModel(copies);
}

$('model-files').onchange = async () => {
  const list = [...$('model-files').files];
  const files = [];
  for (const f of list) files.push([f.name, await f.arrayBuffer()]);
  openModel(files, list.map((f) => f.name).join(', '), true);
};
$('model-url-load').onclick = async () => {
  try {
    const url = $('model-url').value.trim();
    openModel(await filesFromUrl(url), url, true);
  } catch (e) { message(`download: ${e.message}`, true); }
};
$('model-cached').onclick = async () => {
  const files = await cachedModel();
  if (files) openModel(files, 'the model kept in this browser', false);
};

// ---- ready models by name (models.js) -------------------------------------------------------

const downloading = new Map();
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

function button(text, label, onclick) {
  const b = document.createElement('button');
  b.textContent = text;
  b.setAttribute('aria-label', label);
  b.onclick = onclick;
  return b;
}

async function renderCatalog() {
  const body = $('catalog').tBodies[0];
  const rows = [];
  for (const entry of state.catalog || []) {
    const st = await models.status(entry);
    const tr = document.createElement('tr');
    tr.id = `model-${entry.id}`;
    const busyHere = downloading.has(entry.id);
    tr.dataset.state = busyHere ? 'downloading' : st.complete ? 'kept' : st.bytes ? 'partial' : 'none';
    const name = document.createElement('td');
    name.innerHTML = `<strong></strong><br><span class="small"></span>`;
    name.querySelector('strong').textContent = entry.name;
    name.querySelector('span').textContent = [entry.family, entry.quant, entry.license].filter(Boolean).join(' · ');
    const size = document.createElement('td');
    size.textContent = entry.megabytes ? `about ${entry.megabytes} MB` : '';
    const kept = document.createElement('td');
    kept.className = 'status';
    if (st.complete) {
      const f = st.meta.files;
      kept.textContent = `kept: ${mb(st.bytes)}, SHA-256 ${f.map((x) => x.sha256.slice(0, 12)).join(', ')}…`;
      kept.title = f.map((x) => `${x.name}: ${x.size} bytes, SHA-256 ${x.sha256}`).join('\n');
      kept.dataset.sha256 = f.map((x) => x.sha256).join(' ');
    } else if (st.bytes) {
      kept.textContent = `${mb(st.bytes)} kept, stopped: resume to finish`;
    } else {
      kept.textContent = busyHere ? 'starting …' : '–';
    }
    const actions = document.createElement('td');
    if (busyHere) {
      actions.append(button('Pause', `Pause the download of ${entry.name}`, () => downloading.get(entry.id).abort()));
    } else if (st.complete) {
      actions.append(button('Use', `Use ${entry.name}`, () => useModel(entry)));
      actions.append(button('Remove', `Remove ${entry.name} from this browser`, () => removeModel(entry)));
    } else if (st.bytes) {
      actions.append(button('Resume download', `Resume the download of ${entry.name}`, () => fetchModel(entry)));
      actions.append(button('Remove', `Remove ${entry.name} from this browser`, () => removeModel(entry)));
    } else {
      actions.append(button('Download', `Download ${entry.name}`, () => fetchModel(entry)));
    }
    tr.append(name, size, kept, actions);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  if (navigator.storage.estimate) {
    const e = await navigator.storage.estimate();
    $('storage-info').textContent = `This browser keeps ${mb(e.usage || 0)} for this page; it allows about ${mb(e.quota || 0)}.`;
  }
}

async function fetchModel(entry) {
  const ctl = new AbortController();
  downloading.set(entry.id, ctl);
  await renderCatalog();
  try {
    const { meta, info } = await models.download(entry, (got, total, file) => {
      $('download-progress').max = total || got;
      $('download-progress').value = got;
      $('download-text').textContent = `${file}: ${mb(got)}${total ? ' of ' + mb(total) : ''}`;
      const row = document.getElementById(`model-${entry.id}`);
      const cell = row && row.querySelector('.status');
      if (cell) cell.textContent = `downloading ${file}: ${mb(got)}${total ? ' of ' + mb(total) : ''}`;
    }, ctl.signal);
    state.lastDownload = { id: entry.id, meta, info };
  } catch (e) {
    if (e.name !== 'AbortError') message(`download of ${entry.name}: ${e.message}`, true);
  }
  downloading.delete(entry.id);
  await renderCatalog();
}

async function useModel(entry) {
  try {
    openModel(await models.files(entry), entry.name, false, entry.id);
  } catch (e) { message(`${entry.name}: ${e.message}`, true); }
}

async function removeModel(entry) {
  await models.remove(entry);
  await renderCatalog();
}

// ---- data ------------------------------------------------------------------------------------

function setData(text, name) {
  state.data = text;
  state.dataName = name;
  const lines = text.split('\n').filter((l) => l.trim()).length;
  $('data-info').textContent = `${name}: ${lines} records`;
  updateButtons();
}
$('data-file').onchange = async () => {
  const f = $('data-file').files[0];
  if (f) setData(await f.text(), f.name);
};
$('data-sample').onclick = async () => {
  setData(await (await fetch('mcq-train.jsonl')).text(), 'mcq-train.jsonl (bundled)');
};

// ---- training --------------------------------------------------------------------------------

let modelReady = false;
let busy = false;
function setBusy(b) { busy = b; updateButtons(); }
function updateButtons() {
  $('train').disabled = busy || !modelReady || !state.data;
  $('check-fit').disabled = busy || !modelReady || !state.data;
  $('fit-proposal').disabled = busy || !modelReady || !state.data;
  $('stop').disabled = !busy;
  $('generate').disabled = busy || !modelReady;
  $('mcq').disabled = busy || !modelReady;
  $('download').disabled = busy || !state.trained;
  $('download-gguf').disabled = busy || !state.trained;
  $('download-merged').disabled = busy || !state.trained || !(state.info && state.info.gguf);
}

function settings() {
  const num = (id) => Number($(id).value);
  return {
    rank: num('rank'), alpha: num('alpha'), lr: num('lr'), steps: num('steps'),
    max_seq_len: num('seq'), batch: num('batch'), accumulation: num('accumulation'),
    seed: num('seed'), base: $('base').value, packing: $('packing').checked, dora: $('dora').checked,
    save_every: num('save-every'), valid_split: num('valid-split'), eval_every: num('eval-every'),
    model_name: state.modelName,
  };
}

// Training loss a point a step (blue), validation loss at each evaluation (orange).
function drawChart() {
  const c = $('loss-chart');
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const pts = state.losses;
  const vals = state.valLosses || [];
  if (!pts.length) return;
  const all = pts.concat(vals.map(([, l]) => l));
  const max = Math.max(...all), min = Math.min(...all);
  const span = Math.max(max - min, 1e-6);
  const n = Number($('steps').value) || pts.length;
  const x = (step) => 40 + (c.width - 50) * (n > 1 ? (step - 1) / (n - 1) : 0);
  const y = (l) => 10 + (c.height - 30) * (1 - (l - min) / span);
  g.strokeStyle = '#888';
  g.strokeRect(40, 10, c.width - 50, c.height - 30);
  g.fillStyle = '#444';
  g.font = '12px sans-serif';
  g.fillText(max.toFixed(3), 2, 16);
  g.fillText(min.toFixed(3), 2, c.height - 20);
  g.fillText('loss', 2, c.height / 2);
  g.fillStyle = '#1f5fbf';
  g.fillText('train', 50, c.height - 4);
  g.strokeStyle = '#1f5fbf';
  g.beginPath();
  pts.forEach((l, i) => { if (i === 0) g.moveTo(x(i + 1), y(l)); else g.lineTo(x(i + 1), y(l)); });
  g.stroke();
  if (vals.length) {
    g.fillStyle = '#d9480f';
    g.fillText('validation', 100, c.height - 4);
    g.strokeStyle = '#d9480f';
    g.beginPath();
    vals.forEach(([step, l], i) => { if (i === 0) g.moveTo(x(step), y(l)); else g.lineTo(x(step), y(l)); });
    g.stroke();
    for (const [step, l] of vals) g.fillRect(x(step) - 2, y(l) - 2, 5, 5);
  }
}

// Will it fit: the step's planned GPU memory against the budget and the GPU's limits, before
// anything is allocated; Train starts only when it fits, else the page proposes a smaller batch
// (more accumulation, the same examples a step) or shorter sequences.
function checkFit(start) {
  setBusy(true);
  $('fit-proposal').hidden = true;
  worker.postMessage({ type: 'fit', data: state.data, dataName: state.dataName, settings: settings(),
    budget: Number($('budget').value), start });
}
$('check-fit').onclick = () => checkFit(false);
$('train').onclick = () => {
  // A new run: the last one's losses and checkpoint mark are no longer this run's.
  state.losses = [];
  state.valLosses = [];
  drawChart();
  $('train-info').dataset.saved = '0';
  $('train-info').textContent = 'checking that the run fits …';
  checkFit(true);
};
$('fit-proposal').onclick = () => {
  const p = state.fit && state.fit.proposal;
  if (!p) return;
  $('batch').value = String(p.batch);
  $('accumulation').value = String(p.accumulation);
  $('seq').value = String(p.max_len);
  checkFit(true);
};

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
function showFit(r) {
  state.fit = r;
  const a = r.asked;
  const data = `data: ${r.data.examples} examples, ${r.data.tokens} tokens`;
  if (a.planned_bytes != null) {
    $('fit-info').textContent = `Planned GPU memory ${mib(a.planned_bytes)} of the ${mib(r.budget)} budget ` +
      `(batch ${a.batch} × ${a.accumulation} accumulation, sequences of ${a.seq} tokens; model and adapter ` +
      `${mib(a.params_bytes)}; largest buffer ${mib(a.largest_buffer)}, the GPU allows ${mib(r.limits.max_buffer)}); ${data}.`;
  } else {
    $('fit-info').textContent = `${data}.`;
  }
  $('fit-info').className = r.fits ? '' : 'refusal';
  if (!r.fits) {
    $('fit-info').textContent += ` It does not fit: ${r.refusal}.`;
    const p = r.proposal;
    $('fit-proposal').hidden = !p;
    if (p) $('fit-proposal').textContent = `Train with batch ${p.batch} × ${p.accumulation} accumulation, sequences of ${p.seq} tokens (${mib(p.planned_bytes)})`;
  }
}

function startTraining() {
  state.running = true;
  state.losses = [];
  state.valLosses = [];
  state.steps = [];
  state.tokens = 0;
  state.seconds = 0;
  state.trained = false;
  drawChart();
  setBusy(true);
  $('resume-run').hidden = true;
  $('train-info').textContent = 'preparing …';
  state.run = settings();
  state.savedStep = 0;
  $('train-info').dataset.saved = '0';
  // Chained with the checkpoint writes: a run's files are never removed under them.
  storing = storing.then(() => startRun(state.run));
  worker.postMessage({ type: 'prepare', data: state.data, dataName: state.dataName, settings: state.run });
}

// Resume the run a reload (or a lost device) interrupted, from its last checkpoint: the same
// data and settings, the model kept in this browser (or the one open, after a lost device).
async function resumeKept(kept) {
  if (!modelReady) {
    const entry = kept.run.modelId && (state.catalog || []).find((m) => m.id === kept.run.modelId);
    const files = entry ? await models.files(entry).catch(() => null) : await cachedModel();
    if (!files) { message('Load the model this run used first, then resume.', true); return; }
    openModel(files, entry ? entry.name : kept.run.modelName || 'the model kept in this browser', false, entry && entry.id);
  }
  const dir = await runDir(false);
  const step = kept.latest.step;
  const resume = [
    await readFile(dir, `${step}.state.json`, true),
    await readFile(dir, `${step}.adapter_config.json`, true),
    new Uint8Array(await readFile(dir, `${step}.adapter_model.safetensors`)),
    new Uint8Array(await readFile(dir, `${step}.optimizer.safetensors`)),
  ];
  setData(await readFile(dir, 'data.jsonl', true), kept.run.dataName);
  state.run = kept.run.settings;
  state.losses = kept.latest.losses;
  state.valLosses = kept.latest.valLosses || [];
  state.steps = [];
  state.tokens = 0;
  state.seconds = 0;
  state.trained = false;
  state.savedStep = step;
  $('steps').value = String(state.run.steps);
  $('save-every').value = String(state.run.save_every);
  $('batch').value = String(state.run.batch);
  $('accumulation').value = String(state.run.accumulation || 1);
  $('seq').value = String(state.run.max_seq_len);
  $('valid-split').value = String(state.run.valid_split || 0);
  $('eval-every').value = String(state.run.eval_every || 0);
  $('packing').checked = !!state.run.packing;
  $('dora').checked = !!state.run.dora;
  $('resume-run').hidden = true;
  state.running = true;
  setBusy(true);
  drawChart();
  $('train-info').textContent = `resuming from step ${step} …`;
  worker.postMessage({ type: 'prepare', data: state.data, dataName: state.dataName, settings: state.run, resume });
}

$('resume-run').onclick = async () => {
  const kept = await keptRun();
  if (!kept) { $('resume-run').hidden = true; return; }
  await resumeKept(kept);
};
// What a lost GPU device interrupted, resumed on a new device: the run from its last
// checkpoint (a finished run's too, which brings its adapter back), else nothing to do.
async function afterNewDevice() {
  await storing;
  const kept = await keptRun(true);
  if (kept && (state.running || state.trained)) {
    await resumeKept(kept);
  } else if (state.running) {
    // No checkpoint yet: the run starts again.
    $('train').click();
  } else {
    setBusy(false);
  }
}
// The end-to-end test forces a loss, as a GPU reset would happen, through GPUDevice.destroy().
window.webqloraLoseDevice = () => worker.postMessage({ type: 'lose-device' });
$('stop').onclick = () => worker.postMessage({ type: 'stop' });

$('generate').onclick = () => {
  setBusy(true);
  const tag = state.trained ? 'after' : 'before';
  $(`gen-${tag}`).textContent = '…';
  worker.postMessage({ type: 'generate', prompt: $('prompt').value, maxNew: 48, chat: $('chat').checked, tag });
};
$('mcq').onclick = async () => {
  setBusy(true);
  const tag = state.trained ? 'after' : 'before';
  $(`mcq-${tag}`).textContent = '…';
  // The user's own questions when given, else the bundled test split.
  const own = $('mcq-file').files[0];
  const data = own ? await own.text() : await (await fetch('mcq-test.jsonl')).text();
  state.mcqSource = own ? own.name : 'mcq-test.jsonl (bundled)';
  worker.postMessage({ type: 'mcq', data, name: state.mcqSource, limit: Number($('mcq-limit').value), tag });
};
$('download').onclick = () => { setBusy(true); worker.postMessage({ type: 'adapter' }); };
$('download-gguf').onclick = () => { setBusy(true); worker.postMessage({ type: 'adapter-gguf' }); };
$('download-merged').onclick = () => {
  setBusy(true);
  worker.postMessage({ type: 'merged-gguf', dtype: $('merged-dtype').value });
};

/// Seconds as "1 h 02 min", "3 min 05 s" or "12 s".
function duration(s) {
  if (!isFinite(s)) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600), min = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h > 0) return `${h} h ${String(min).padStart(2, '0')} min`;
  if (min > 0) return `${min} min ${String(sec).padStart(2, '0')} s`;
  return `${sec} s`;
}

function download(name, blob) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

worker.onmessage = (e) => {
  const m = e.data;
  switch (m.type) {
    case 'opened':
      modelReady = true;
      state.info = m.info;
      $('model-info').textContent = `${state.modelName}: ${m.info.layers} layers, hidden ${m.info.hidden}, vocabulary ${m.info.vocab}` +
        `${m.info.tokenizer ? '' : ' (no tokenizer: tokenized data only)'} — on ${m.info.device || 'the WebGPU adapter'} (${m.info.backend})` +
        ` — base ${m.info.base}: ${m.info.base_why}`;
      updateButtons();
      break;
    case 'load-progress':
      $('load-progress').max = m.total;
      $('load-progress').value = m.done;
      $('load-text').textContent = `${m.done} / ${m.total} tensors`;
      break;
    case 'fitted':
      showFit(m.report);
      if (m.start && m.report.fits) startTraining();
      else {
        if (m.start) $('train-info').textContent = 'not started: it does not fit (see above)';
        setBusy(false);
      }
      break;
    case 'prepared':
      $('train-info').textContent = `${m.summary.dora ? 'DoRA, ' : ''}${m.summary.examples} ${m.summary.packed ? 'packed rows' : 'examples'}, batches of ${m.summary.batch} × ${m.summary.seq} tokens, ` +
        `${m.summary.trainable} trainable values, planned GPU memory ${(m.summary.planned_peak_bytes / 2 ** 20).toFixed(1)} MiB`;
      $('step-progress').max = m.summary.steps;
      if (m.summary.step >= m.summary.steps) {
        state.trained = true;
        setBusy(false);
        break;
      }
      if (m.summary.step > 0) $('train-info').textContent += ` — resumed after step ${m.summary.step}`;
      worker.postMessage({ type: 'train', saveEvery: state.run.save_every, evalEvery: state.run.eval_every,
        validation: m.summary.valid_examples > 0 });
      break;
    case 'checkpoint':
      storing = storing.then(() => keepCheckpoint(m));
      break;
    case 'validation':
      (state.valLosses = state.valLosses || []).push([m.step, m.loss]);
      $('val-text').textContent = `validation loss ${m.loss.toFixed(4)} (perplexity ${m.perplexity.toFixed(2)}) after step ${m.step}`;
      drawChart();
      break;
    case 'step':
      state.losses.push(m.loss);
      (state.steps = state.steps || []).push(m);
      state.tokens += m.tokens;
      state.seconds += m.seconds;
      $('step-progress').value = m.step;
      $('step-text').textContent = `step ${m.step} / ${m.steps}: loss ${m.loss.toFixed(4)}, lr ${m.lr.toExponential(2)}, ` +
        `${(state.tokens / state.seconds).toFixed(1)} tokens/s, ETA ${duration(state.seconds / state.steps.length * (m.steps - m.step))}`;
      drawChart();
      break;
    case 'trained':
      state.running = false;
      state.trained = true;
      $('train-info').textContent += m.stopped ? ' — stopped' : ' — done';
      setBusy(false);
      break;
    case 'gen-text':
      $(`gen-${m.tag}`).textContent = m.text;
      break;
    case 'gen-done':
      $(`gen-${m.tag}`).textContent = m.text;
      setBusy(false);
      break;
    case 'mcq-progress':
      $('mcq-progress').max = m.total;
      $('mcq-progress').value = m.done;
      break;
    case 'mcq-done':
      $(`mcq-${m.tag}`).textContent = `${(100 * m.result.accuracy).toFixed(1)}% (acc_norm ${(100 * m.result.acc_norm).toFixed(1)}%, ${m.result.n} questions of ${state.mcqSource})`;
      setBusy(false);
      break;
    case 'adapter':
      download('adapter_config.json', new Blob([m.config], { type: 'application/json' }));
      download('adapter_model.safetensors', new Blob([m.weights], { type: 'application/octet-stream' }));
      $('download-info').textContent = 'adapter_config.json and adapter_model.safetensors downloaded';
      setBusy(false);
      break;
    case 'adapter-gguf':
      download('adapter.gguf', new Blob([m.bytes], { type: 'application/octet-stream' }));
      $('download-info').textContent = 'adapter.gguf downloaded (llama.cpp: --lora adapter.gguf; Ollama: ADAPTER ./adapter.gguf)';
      setBusy(false);
      break;
    case 'device-lost': {
      // Said in words, then a new device; the run goes on from its last checkpoint.
      const at = state.savedStep ? `from the checkpoint of step ${state.savedStep}` : 'from the start';
      message(`The GPU device was lost while running '${m.where}' — ${m.message.replace(/\.?$/, '.')} Opening a new one` +
        (state.running ? `; training goes on ${at}.` : '.'));
      state.deviceLosses = (state.deviceLosses || 0) + 1;
      worker.postMessage({ type: 'renew' });
      break;
    }
    case 'renewed':
      state.info = m.info;
      afterNewDevice();
      break;
    case 'merge-progress':
      $('download-info').textContent = `merging: tensor ${m.done} of ${m.total}`;
      break;
    case 'merged-gguf':
      download(`merged-${m.dtype}.gguf`, new Blob([m.bytes], { type: 'application/octet-stream' }));
      $('download-info').textContent = `merged-${m.dtype}.gguf downloaded (${mb(m.bytes.byteLength)}; llama.cpp: -m merged-${m.dtype}.gguf)`;
      setBusy(false);
      break;
    case 'error': {
      // An error mid-run (out of memory, say) keeps the last checkpoint: offer to resume it.
      const wasRunning = state.running;
      state.running = false;
      message(explain(m.where, m.message), true);
      setBusy(false);
      if (wasRunning) offerResume();
      break;
    }
  }
};

// The Resume button, when this browser keeps an unfinished run.
async function offerResume() {
  await storing;
  const kept = await keptRun();
  if (!kept) return;
  $('resume-run').hidden = false;
  $('resume-run').textContent = `Resume the interrupted run (${kept.run.dataName}): step ${kept.latest.step} of ${kept.latest.steps}`;
}

// ---- start -----------------------------------------------------------------------------------

if (!navigator.gpu) {
  message('This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome or Edge, ' +
    'or Firefox/Safari with WebGPU enabled; on Linux, Chrome needs --enable-unsafe-webgpu.', true);
} else {
  cachedModel().then((files) => { $('model-cached').hidden = !files; });
  models.catalog().then((list) => { state.catalog = list; return renderCatalog(); })
    .catch((e) => { $('storage-info').textContent = `No list of ready models (${e.message}).`; });
  offerResume();
}
updateButtons();
