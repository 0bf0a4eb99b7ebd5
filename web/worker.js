// The trainer, in a Web Worker so the page never freezes. It owns the WASM module and the
// GPU device; the page talks to it by messages (see app.js).
import init, { WebSession } from './pkg/webqlora.js';

let session = null;
let stopping = false;
let losing = false;
const ready = init({ module_or_path: new URL('./pkg/webqlora_bg.wasm', import.meta.url) });

function post(msg, transfer) { self.postMessage(msg, transfer || []); }
function fail(where, e) { post({ type: 'error', where, message: String(e && e.message || e) }); }

async function handle(m) {
  await ready;
  switch (m.type) {
    case 'open': {
      const files = m.files.map(([name, buf]) => [name, new Uint8Array(buf)]);
      session = await WebSession.open(files);
      if (m.kernels) session.set_kernels(m.kernels);
      post({ type: 'opened', info: JSON.parse(session.info()) });
      break;
    }
    case 'fit': {
      const report = session.fit(m.data, m.dataName, JSON.stringify(m.settings), m.budget);
      post({ type: 'fitted', report: JSON.parse(report), start: m.start });
      break;
    }
    case 'prepare': {
      const summary = await session.prepare(m.data, m.dataName, JSON.stringify(m.settings),
        (done, total) => post({ type: 'load-progress', done, total }), m.resume || null);
      post({ type: 'prepared', summary: JSON.parse(summary) });
      break;
    }
    case 'train': {
      stopping = false;
      const every = m.saveEvery || 0;
      for (;;) {
        const t0 = performance.now();
        const r = JSON.parse(await session.step());
        r.seconds = (performance.now() - t0) / 1000;
        post({ type: 'step', ...r });
        const last = r.step >= r.steps;
        // Validation every `evalEvery` steps and at the end, as the CLI's --eval-every.
        if (m.validation && ((m.evalEvery > 0 && r.step % m.evalEvery === 0) || last)) {
          const v = JSON.parse(await session.validate());
          if (v) post({ type: 'validation', ...v });
        }
        // A checkpoint every `saveEvery` steps, at Stop and at the end: the page keeps it in
        // the Origin Private File System, so a reload or a lost device resumes the run.
        if ((every > 0 && r.step % every === 0) || stopping || last) {
          const [st, config, weights, moments] = await session.checkpoint();
          post({ type: 'checkpoint', step: r.step, steps: r.steps, state: st, config,
            weights: weights.buffer, moments: moments.buffer }, [weights.buffer, moments.buffer]);
        }
        if (last || stopping) break;
        // A loss asked for (the end-to-end test does, as a GPU reset would happen): the
        // next step fails on the destroyed device.
        if (losing) { losing = false; session.lose_device(); }
      }
      post({ type: 'trained', stopped: stopping });
      break;
    }
    case 'renew': {
      await session.renew();
      post({ type: 'renewed', info: JSON.parse(session.info()) });
      break;
    }
    case 'lose-device':
      session.lose_device();
      throw new Error('the device was destroyed on request');
    case 'stop':
      stopping = true;
      break;
    case 'generate': {
      const text = await session.generate(m.prompt, m.maxNew, m.chat,
        (t) => post({ type: 'gen-text', tag: m.tag, text: t }));
      post({ type: 'gen-done', tag: m.tag, text });
      break;
    }
    case 'mcq': {
      const r = await session.mcq(m.data, m.name, m.limit,
        (done, total) => post({ type: 'mcq-progress', done, total }));
      post({ type: 'mcq-done', tag: m.tag, result: JSON.parse(r) });
      break;
    }
    case 'adapter-gguf': {
      const bytes = await session.adapter_gguf();
      post({ type: 'adapter-gguf', bytes: bytes.buffer }, [bytes.buffer]);
      break;
    }
    case 'merged-gguf': {
      const bytes = await session.merged_gguf(m.dtype,
        (done, total) => post({ type: 'merge-progress', done, total }));
      post({ type: 'merged-gguf', dtype: m.dtype, bytes: bytes.buffer }, [bytes.buffer]);
      break;
    }
    case 'adapter': {
      const [config, weights] = await session.adapter();
      post({ type: 'adapter', config, weights: weights.buffer }, [weights.buffer]);
      break;
    }
  }
}

// Why the device was lost, if it was: the loss callback may come a moment after the failed
// call that revealed it.
async function lostDevice() {
  for (let i = 0; i < 20 && session; i++) {
    const why = session.device_lost();
    if (why) return why;
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
}

// Messages are handled one at a time, except 'stop' and 'lose-device' during a training,
// which must reach the running loop. A lost device is its own message: the page opens a new
// one and resumes from the last checkpoint.
let queue = Promise.resolve();
let training = false;
self.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'stop') { stopping = true; return; }
  if (m.type === 'lose-device' && training) { losing = true; return; }
  queue = queue.then(async () => {
    training = m.type === 'train';
    try {
      await handle(m);
    } catch (err) {
      const why = m.type !== 'open' && m.type !== 'renew' ? await lostDevice() : null;
      if (why) post({ type: 'device-lost', where: m.type, message: why });
      else fail(m.type, err);
    } finally {
      training = false;
    }
  });
};
