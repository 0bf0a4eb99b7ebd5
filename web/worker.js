// The trainer, in a Web Worker so the page never freezes. It owns the WASM module and the
// GPU device; the page talks to it by messages (see app.js).
import init, { WebSession } from './pkg/webqlora.js';

let session = null;
let stopping = false;
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
        // the Origin Private File System, so a reload resumes the run.
        if ((every > 0 && r.step % every === 0) || stopping || last) {
          const [st, config, weights, moments] = await session.checkpoint();
          post({ type: 'checkpoint', step: r.step, steps: r.steps, state: st, config,
            weights: weights.buffer, moments: moments.buffer }, [weights.buffer, moments.buffer]);
        }
        if (last || stopping) break;
      }
      post({ type: 'trained', stopped: stopping });
      break;
    }
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
      const r = await session.mcq(m.data, m.limit,
        (done, total) => post({ type: 'mcq-progress', done, total }));
      post({ type: 'mcq-done', tag: m.tag, result: JSON.parse(r) });
      break;
    }
    case 'adapter-gguf': {
      const bytes = await session.adapter_gguf();
      post({ type: 'adapter-gguf', bytes: bytes.buffer }, [bytes.buffer]);
      break;
    }
    case 'adapter': {
      const [config, weights] = await session.adapter();
      post({ type: 'adapter', config, weights: weights.buffer }, [weights.buffer]);
      break;
    }
  }
}

// Messages are handled one at a time, except 'stop', which must reach a running training.
let queue = Promise.resolve();
self.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'stop') { stopping = true; return; }
  queue = queue.then(() => handle(m)).catch((err) => fail(m.type, err));
};
