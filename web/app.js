// The page: model, data, settings, training with a live loss chart, trying prompts and MCQ
// accuracy before and after, and the adapter download. Built on the webqlora package (the
// import map in index.html names it), as any web app would be: nothing here talks to the
// WebAssembly module or the worker directly.

import {
  Session, DeviceLostError, catalog, cachedStatus, downloadModel, cachedFiles, removeCachedModel,
  filesFromUrl, defaultCatalogUrl,
} from 'webqlora';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// ?catalog=URL: another catalog of ready models; ?chunk_kib=: the model cache's part size (the
// end-to-end test's tiny files come in several parts so); ?kernels=: forced kernels, as
// WEBQLORA_KERNELS does for the native binary.
const catalogUrl = params.get('catalog') ? new URL(params.get('catalog'), location.href).href : defaultCatalogUrl;
const chunkBytes = params.get('chunk_kib') ? Number(params.get('chunk_kib')) * 1024 : undefined;
const kernels = params.get('kernels');
let session = null;
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

// An operation's failure, said in words; a lost device is renewed (and a run resumed).
function failed(where, e) {
  if (e instanceof DeviceLostError) return deviceLost(where, e.message);
  message(explain(where, e.message || String(e)), true);
  setBusy(false);
}

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

function showDownload({ file, done, total }) {
  $('download-progress').max = total || done;
  $('download-progress').value = done;
  $('download-text').textContent = `${file}: ${mb(done)}${total ? ' of ' + mb(total) : ''}`;
}

// `id`: the ready model's catalog id, so that a resumed run reopens it.
async function openModel(files, name, keep, id) {
  state.modelName = name;
  state.modelId = id || null;
  message('');
  modelReady = false;
  updateButtons();
  $('model-info').textContent = `opening ${name} …`;
  // The session takes the buffers; the browser keeps copies.
  if (keep) keepModel(files.map(([n, b]) => [n, b.slice(0)]));
  if (session) session.close();
  session = null;
  try {
    session = await Session.open({ files }, { kernels });
  } catch (e) {
    message(explain('open', e.message), true);
    return false;
  }
  showInfo(session.info);
  return true;
}

function showInfo(info) {
  modelReady = true;
  state.info = info;
  $('model-info').textContent = `${state.modelName}: ${info.layers} layers, hidden ${info.hidden}, vocabulary ${info.vocab}` +
    `${info.tokenizer ? '' : ' (no tokenizer: tokenized data only)'} — on ${info.device || 'the WebGPU adapter'} (${info.backend})` +
    ` — base ${info.base}: ${info.baseWhy}`;
  updateButtons();
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
    openModel(await filesFromUrl(url, { onDownload: showDownload }), url, true);
  } catch (e) { message(`download: ${e.message}`, true); }
};
$('model-cached').onclick = async () => {
  const files = await cachedModel();
  if (files) openModel(files, 'the model kept in this browser', false);
};

// ---- ready models by name (the package's catalog and cache) ----------------------------------

const downloading = new Map();

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
    const st = await cachedStatus(entry, { chunkBytes });
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
    const { meta, info } = await downloadModel(entry, {
      chunkBytes,
      signal: ctl.signal,
      onDownload: (p) => {
        showDownload(p);
        const row = document.getElementById(`model-${entry.id}`);
        const cell = row && row.querySelector('.status');
        if (cell) cell.textContent = `downloading ${p.file}: ${mb(p.done)}${p.total ? ' of ' + mb(p.total) : ''}`;
      },
    });
    state.lastDownload = { id: entry.id, meta, info };
  } catch (e) {
    if (e.name !== 'AbortError') message(`download of ${entry.name}: ${e.message}`, true);
  }
  downloading.delete(entry.id);
  await renderCatalog();
}

async function useModel(entry) {
  try {
    await openModel(await cachedFiles(entry), entry.name, false, entry.id);
  } catch (e) { message(`${entry.name}: ${e.message}`, true); }
}

async function removeModel(entry) {
  await removeCachedModel(entry);
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

// The run's settings as the package types them, and the page's own (checkpoints, validation).
function settings() {
  const num = (id) => Number($(id).value);
  return {
    settings: {
      rank: num('rank'), alpha: num('alpha'), lr: num('lr'), steps: num('steps'),
      maxSeqLen: num('seq'), batch: num('batch'), accumulation: num('accumulation'),
      seed: num('seed'), base: $('base').value, packing: $('packing').checked, dora: $('dora').checked,
      validSplit: num('valid-split'), modelName: state.modelName,
      targetModules: $('targets').value.split(',').map((t) => t.trim()).filter(Boolean),
    },
    saveEvery: num('save-every'), evalEvery: num('eval-every'),
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
async function checkFit(start) {
  setBusy(true);
  $('fit-proposal').hidden = true;
  let report;
  try {
    report = await session.fit(data(), settings().settings, { budgetMiB: Number($('budget').value) });
  } catch (e) {
    if (start) $('train-info').textContent = 'not started';
    return failed('fit', e);
  }
  showFit(report);
  if (start && report.fits) return startTraining();
  if (start) $('train-info').textContent = 'not started: it does not fit (see above)';
  setBusy(false);
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
  $('seq').value = String(p.maxLen);
  checkFit(true);
};

const data = () => ({ name: state.dataName, text: state.data });
const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
function showFit(r) {
  state.fit = r;
  const a = r.asked;
  const d = `data: ${r.data.examples} examples, ${r.data.tokens} tokens`;
  if (a.plannedBytes != null) {
    $('fit-info').textContent = `Planned GPU memory ${mib(a.plannedBytes)} of the ${mib(r.budget)} budget ` +
      `(batch ${a.batch} × ${a.accumulation} accumulation, sequences of ${a.seq} tokens; model and adapter ` +
      `${mib(a.paramsBytes)}; largest buffer ${mib(a.largestBuffer)}, the GPU allows ${mib(r.limits.maxBuffer)}); ${d}.`;
  } else {
    $('fit-info').textContent = `${d}.`;
  }
  $('fit-info').className = r.fits ? '' : 'refusal';
  if (!r.fits) {
    $('fit-info').textContent += ` It does not fit: ${r.refusal}.`;
    const p = r.proposal;
    $('fit-proposal').hidden = !p;
    if (p) $('fit-proposal').textContent = `Train with batch ${p.batch} × ${p.accumulation} accumulation, sequences of ${p.seq} tokens (${mib(p.plannedBytes)})`;
  }
}

function startTraining() {
  state.losses = [];
  state.valLosses = [];
  state.savedStep = 0;
  $('resume-run').hidden = true;
  state.run = settings();
  // Chained with the checkpoint writes: a run's files are never removed under them.
  storing = storing.then(() => startRun(state.run));
  return runTraining(null);
}

// Train (from `resume`, a checkpoint, when given), the page following each step, validation,
// checkpoint and device loss; the package recovers a lost device from the last checkpoint.
let stopper = null;
async function runTraining(resume) {
  state.running = true;
  state.steps = [];
  state.tokens = 0;
  state.seconds = 0;
  state.trained = false;
  drawChart();
  setBusy(true);
  $('train-info').textContent = resume ? `resuming from step ${resume.step} …` : 'preparing …';
  $('train-info').dataset.saved = String(state.savedStep || 0);
  stopper = new AbortController();
  let result;
  try {
    result = await session.train(data(), state.run.settings, {
      resume,
      saveEvery: state.run.saveEvery,
      evalEvery: state.run.evalEvery,
      signal: stopper.signal,
      onLoad: (done, total) => {
        $('load-progress').max = total;
        $('load-progress').value = done;
        $('load-text').textContent = `${done} / ${total} tensors`;
      },
      onPrepared: (s) => {
        $('train-info').textContent = `${s.dora ? 'DoRA, ' : ''}${s.examples} ${s.packed ? 'packed rows' : 'examples'}, batches of ${s.batch} × ${s.seq} tokens, ` +
          `${s.trainable} trainable values, planned GPU memory ${mib(s.plannedPeakBytes)}` +
          (s.step > 0 ? ` — resumed after step ${s.step}` : '');
        $('step-progress').max = s.steps;
      },
      onStep: (m) => {
        state.losses.push(m.loss);
        state.steps.push(m);
        state.tokens += m.tokens;
        state.seconds += m.seconds;
        $('step-progress').value = m.step;
        $('step-text').textContent = `step ${m.step} / ${m.steps}: loss ${m.loss.toFixed(4)}, lr ${m.lr.toExponential(2)}, ` +
          `${(state.tokens / state.seconds).toFixed(1)} tokens/s, ETA ${duration(state.seconds / state.steps.length * (m.steps - m.step))}`;
        drawChart();
      },
      onValidation: (v) => {
        state.valLosses.push([v.step, v.loss]);
        $('val-text').textContent = `validation loss ${v.loss.toFixed(4)} (perplexity ${v.perplexity.toFixed(2)}) after step ${v.step}`;
        drawChart();
      },
      onCheckpoint: (c) => { storing = storing.then(() => keepCheckpoint(c)); },
      onDeviceLost: (loss) => {
        // Said in words; the run goes on from its last checkpoint on a new device.
        state.deviceLosses = (state.deviceLosses || 0) + 1;
        const at = loss.resumeFrom ? `from the checkpoint of step ${loss.resumeFrom}` : 'from the start';
        message(`The GPU device was lost while running '${loss.operation}' — ${loss.message.replace(/\.?$/, '.')} Opening a new one; training goes on ${at}.`);
        state.losses = state.losses.slice(0, loss.resumeFrom);
        state.valLosses = state.valLosses.filter(([step]) => step <= loss.resumeFrom);
      },
    });
  } catch (e) {
    // An error mid-run (out of memory, say) keeps the last checkpoint: offer to resume it.
    state.running = false;
    failed('train', e);
    offerResume();
    return;
  }
  if (session.info) state.info = session.info;
  state.running = false;
  state.trained = true;
  $('train-info').textContent += result.stopped ? ' — stopped' : ' — done';
  setBusy(false);
}

// Resume the run a reload interrupted, from its last checkpoint: the same data and settings,
// the model kept in this browser.
async function resumeKept(kept) {
  if (!modelReady) {
    const entry = kept.run.modelId && (state.catalog || []).find((m) => m.id === kept.run.modelId);
    const files = entry ? await cachedFiles(entry).catch(() => null) : await cachedModel();
    if (!files) { message('Load the model this run used first, then resume.', true); return; }
    if (!await openModel(files, entry ? entry.name : kept.run.modelName || 'the model kept in this browser', false, entry && entry.id)) return;
  }
  const dir = await runDir(false);
  const step = kept.latest.step;
  const resume = {
    step,
    steps: kept.latest.steps,
    state: await readFile(dir, `${step}.state.json`, true),
    config: await readFile(dir, `${step}.adapter_config.json`, true),
    weights: new Uint8Array(await readFile(dir, `${step}.adapter_model.safetensors`)),
    moments: new Uint8Array(await readFile(dir, `${step}.optimizer.safetensors`)),
  };
  setData(await readFile(dir, 'data.jsonl', true), kept.run.dataName);
  state.run = kept.run.settings;
  state.losses = kept.latest.losses;
  state.valLosses = kept.latest.valLosses || [];
  state.savedStep = step;
  const s = state.run.settings;
  $('steps').value = String(s.steps);
  $('save-every').value = String(state.run.saveEvery);
  $('batch').value = String(s.batch);
  $('accumulation').value = String(s.accumulation || 1);
  $('seq').value = String(s.maxSeqLen);
  $('valid-split').value = String(s.validSplit || 0);
  $('eval-every').value = String(state.run.evalEvery || 0);
  $('packing').checked = !!s.packing;
  $('dora').checked = !!s.dora;
  if (s.targetModules) $('targets').value = s.targetModules.join(',');
  $('resume-run').hidden = true;
  await runTraining(resume);
}

$('resume-run').onclick = async () => {
  const kept = await keptRun();
  if (!kept) { $('resume-run').hidden = true; return; }
  await resumeKept(kept);
};

// A device lost outside a training: said in words, then a new device; a finished run's adapter
// comes back from its last checkpoint.
async function deviceLost(where, why) {
  state.deviceLosses = (state.deviceLosses || 0) + 1;
  message(`The GPU device was lost while running '${where}' — ${why.replace(/\.?$/, '.')} Opening a new one.`);
  try {
    showInfo(await session.renew());
  } catch (e) {
    message(explain('a new GPU device', e.message), true);
    setBusy(false);
    return;
  }
  await storing;
  const kept = state.trained ? await keptRun(true) : null;
  if (kept) await resumeKept(kept);
  else setBusy(false);
}
// The end-to-end test forces a loss, as a GPU reset would happen, through GPUDevice.destroy().
window.webqloraLoseDevice = () => session && session.loseDevice();
$('stop').onclick = () => stopper && stopper.abort();

$('generate').onclick = async () => {
  setBusy(true);
  const tag = state.trained ? 'after' : 'before';
  $(`gen-${tag}`).textContent = '…';
  try {
    const text = await session.generate($('prompt').value, { maxNewTokens: 48, chat: $('chat').checked,
      onText: (t) => { $(`gen-${tag}`).textContent = t; } });
    $(`gen-${tag}`).textContent = text;
  } catch (e) { return failed('generate', e); }
  setBusy(false);
};
$('mcq').onclick = async () => {
  setBusy(true);
  const tag = state.trained ? 'after' : 'before';
  $(`mcq-${tag}`).textContent = '…';
  // The user's own questions when given, else the bundled test split.
  const own = $('mcq-file').files[0];
  const text = own ? await own.text() : await (await fetch('mcq-test.jsonl')).text();
  state.mcqSource = own ? own.name : 'mcq-test.jsonl (bundled)';
  try {
    const r = await session.evaluate({ name: state.mcqSource, text }, {
      limit: Number($('mcq-limit').value),
      onProgress: (done, total) => { $('mcq-progress').max = total; $('mcq-progress').value = done; },
    });
    if (r.accuracy == null) throw new Error(`${state.mcqSource}: no multiple-choice questions (records with question, choices and answer)`);
    $(`mcq-${tag}`).textContent = `${(100 * r.accuracy).toFixed(1)}% (acc_norm ${(100 * r.accNorm).toFixed(1)}%, ${r.n} questions of ${state.mcqSource})`;
  } catch (e) { return failed('mcq', e); }
  setBusy(false);
};

async function exporting(where, work) {
  setBusy(true);
  try { await work(); } catch (e) { return failed(where, e); }
  setBusy(false);
}
$('download').onclick = () => exporting('adapter', async () => {
  const { config, weights } = await session.exportPeft();
  download('adapter_config.json', config);
  download('adapter_model.safetensors', weights);
  $('download-info').textContent = 'adapter_config.json and adapter_model.safetensors downloaded';
});
$('download-gguf').onclick = () => exporting('adapter-gguf', async () => {
  download('adapter.gguf', await session.exportGgufLora());
  $('download-info').textContent = 'adapter.gguf downloaded (llama.cpp: --lora adapter.gguf; Ollama: ADAPTER ./adapter.gguf)';
});
$('download-merged').onclick = () => exporting('merged-gguf', async () => {
  const dtype = $('merged-dtype').value;
  const blob = await session.exportMergedGguf({ dtype,
    onProgress: (done, total) => { $('download-info').textContent = `merging: tensor ${done} of ${total}`; } });
  download(`merged-${dtype}.gguf`, blob);
  $('download-info').textContent = `merged-${dtype}.gguf downloaded (${mb(blob.size)}; llama.cpp: -m merged-${dtype}.gguf)`;
});

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
  catalog(catalogUrl).then((list) => { state.catalog = list; return renderCatalog(); })
    .catch((e) => { $('storage-info').textContent = `No list of ready models (${e.message}).`; });
  offerResume();
}
updateButtons();
