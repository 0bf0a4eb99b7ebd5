// The trainer's Web Worker: it owns the WASM module and the GPU device, so the page that uses
// the package never freezes. index.js is its only client; the protocol is private to the two.
//
// Requests: { id, op, ...arguments }. Replies carry the request's id:
//   { id, kind: 'event', name, ...fields }   progress while the request runs
//   { id, kind: 'done', value }              its result
//   { id, kind: 'error', message, lost }     its failure; `lost` says why the device was lost
// 'stop' and 'lose-device' reach a training in progress (they are not queued behind it).
import init, { WebSession } from './pkg/webqlora.js';

let session = null;
// The training requests queued or running (by id), those of them asked to stop, and whether a
// device loss is asked for. A stop for a request that has ended is dropped.
const trains = new Set();
const stops = new Set();
let losing = false;
// Where the run is: the last step done and the steps in all.
let at = { step: 0, steps: 0 };
const ready = init({ module_or_path: new URL('./pkg/webqlora_bg.wasm', import.meta.url) });

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const json = (text) => (text == null ? null : JSON.parse(text));

function checkpointOf(parts, step, steps) {
  const [state, config, weights, moments] = parts;
  return { step, steps, state, config, weights, moments };
}

async function handle(m, event) {
  await ready;
  const need = () => {
    if (!session) throw new Error('no model is open');
    return session;
  };
  switch (m.op) {
    case 'open': {
      const files = m.files.map(([name, buf]) => [name, new Uint8Array(buf)]);
      session = await WebSession.open(files);
      if (m.kernels) session.set_kernels(m.kernels);
      return json(session.info());
    }
    case 'info':
      return json(need().info());
    case 'fit':
      return json(need().fit(m.data, m.dataName, JSON.stringify(m.settings), m.budgetMiB));
    case 'prepare': {
      const summary = await need().prepare(m.data, m.dataName, JSON.stringify(m.settings),
        (done, total) => event('load', { done, total }), m.resume ? [m.resume.state,
          m.resume.config, m.resume.weights, m.resume.moments] : null);
      const out = json(summary);
      at = { step: out.step, steps: out.steps };
      return out;
    }
    case 'train': {
      // Steps until the last or a stop (after the step in progress), validation every
      // `evalEvery` steps and at the end, a checkpoint every `saveEvery` steps, at a stop and
      // at the end (as the CLI's --eval-every and --save-every).
      const s = need();
      const stopped = () => m.stopNow || stops.has(m.id);
      let stop = stopped();
      while (!stop) {
        const t0 = performance.now();
        const r = json(await s.step());
        r.seconds = (performance.now() - t0) / 1000;
        at = { step: r.step, steps: r.steps };
        event('step', r);
        const end = r.step >= r.steps;
        stop = stopped();
        if (m.validation && ((m.evalEvery > 0 && r.step % m.evalEvery === 0) || end)) {
          const v = json(await s.validate());
          if (v) event('validation', v);
        }
        if ((m.saveEvery > 0 && r.step % m.saveEvery === 0) || stop || end) {
          const c = checkpointOf(await s.checkpoint(), r.step, r.steps);
          event('checkpoint', c, [c.weights.buffer, c.moments.buffer]);
        }
        if (end) break;
        // A loss asked for (as a GPU reset would happen): the next step fails on it.
        if (losing) { losing = false; s.lose_device(); }
      }
      return { stopped: stop, step: at.step, steps: at.steps };
    }
    case 'validate':
      return json(await need().validate());
    case 'renew':
      await need().renew();
      return json(session.info());
    case 'set-kernels':
      need().set_kernels(m.kernels);
      return json(session.info());
    case 'lose-device':
      need().lose_device();
      throw new Error('the device was destroyed on request');
    case 'generate':
      return need().generate(m.prompt, m.maxNew, m.chat, m.adapter, (text) => event('text', { text }));
    case 'evaluate':
      return json(await need().evaluate(m.data, m.name, m.limit, m.adapter,
        (done, total) => event('progress', { done, total })));
    case 'checkpoint': {
      const c = checkpointOf(await need().checkpoint(), at.step, at.steps);
      return [c, [c.weights.buffer, c.moments.buffer]];
    }
    case 'adapter': {
      const [config, weights] = await need().adapter();
      return [{ config, weights }, [weights.buffer]];
    }
    case 'adapter-gguf': {
      const bytes = await need().adapter_gguf();
      return [bytes, [bytes.buffer]];
    }
    case 'merged-gguf': {
      const bytes = await need().merged_gguf(m.dtype, (done, total) => event('progress', { done, total }));
      return [bytes, [bytes.buffer]];
    }
    default:
      throw new Error(`unknown request '${m.op}'`);
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

// Requests run one at a time, in order.
let queue = Promise.resolve();
let training = false;
self.onmessage = (e) => {
  const m = e.data;
  if (m.op === 'stop') {
    if (trains.has(m.target)) stops.add(m.target);
    return;
  }
  if (m.op === 'lose-device' && training) { losing = true; return; }
  const event = (name, fields, transfer) => post({ id: m.id, kind: 'event', name, ...fields }, transfer);
  if (m.op === 'train') trains.add(m.id);
  queue = queue.then(async () => {
    training = m.op === 'train';
    try {
      const out = await handle(m, event);
      // A result with buffers to move comes as [value, transfer].
      if (['checkpoint', 'adapter', 'adapter-gguf', 'merged-gguf'].includes(m.op)) {
        post({ id: m.id, kind: 'done', value: out[0] }, out[1]);
      } else {
        post({ id: m.id, kind: 'done', value: out });
      }
    } catch (err) {
      const lost = m.op !== 'open' && m.op !== 'renew' ? await lostDevice() : null;
      post({ id: m.id, kind: 'error', message: String((err && err.message) || err), lost });
    } finally {
      training = false;
      trains.delete(m.id);
      stops.delete(m.id);
    }
  });
};
