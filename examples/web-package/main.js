// A minimal web app on the webqlora package: open a model by URL, fine-tune it, evaluate and
// generate with and without the adapter, and hand the adapter on. The package's own test
// (`cargo xtask test`, xtask/src/package_test.rs) serves this page with the packed tarball's
// files under node_modules/ and compares the adapter with the native binary's.

import { Session, SettingsError, librarySettings } from 'webqlora';

const params = new URLSearchParams(location.search);
const log = (line) => { document.getElementById('log').textContent += line + '\n'; };
// POST a result to the test's server (?upload=URL); without it, the browser downloads it.
async function hand(name, blob) {
  const to = params.get('upload');
  if (to) {
    await fetch(`${to}/${name}`, { method: 'POST', body: blob });
  } else {
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: name });
    a.click();
  }
}

async function main() {
  const report = {};
  // Settings are typed: an unknown key is refused with the key named.
  try { librarySettings({ rnak: 4 }); } catch (e) { report.badSetting = [e instanceof SettingsError, e.key, e.message]; }

  const session = await Session.open({ url: params.get('model') }, { kernels: params.get('kernels') || undefined });
  log(`opened: ${session.info.layers} layers on ${session.info.device}, base ${session.info.base}`);
  const data = await (await fetch(params.get('data'))).text();
  const settings = { rank: 4, alpha: 8, lr: 0.01, steps: 6, maxSeqLen: 64, batch: 4, seed: 7 };
  report.fit = (await session.fit(data, settings, { budgetMiB: 1024 })).fits;
  // A value out of range is refused naming its key, as the CLI's flags are (never read as 1).
  try { await session.fit(data, { ...settings, batch: 0 }); } catch (e) { report.zeroBatch = [e.name, e.message]; }
  const losses = [];
  const run = await session.train(data, settings, {
    onStep: (s) => { losses.push(s.loss); log(`step ${s.step}/${s.steps}: loss ${s.loss.toFixed(4)}`); },
  });
  report.losses = losses;
  report.stopped = run.stopped;
  report.checkpointStep = run.checkpoint && run.checkpoint.step;
  report.evalBase = (await session.evaluate(data, { adapter: false })).loss;
  report.evalAdapter = (await session.evaluate(data)).loss;
  let streamed = 0;
  report.text = await session.generate('Hello', { maxNewTokens: 8, chat: false, onText: () => { streamed += 1; } });
  report.streamed = streamed;
  report.textBase = await session.generate('Hello', { maxNewTokens: 8, chat: false, adapter: false });
  const { config, weights } = await session.exportPeft();
  await hand('adapter_config.json', config);
  await hand('adapter_model.safetensors', weights);
  report.ggufLoraBytes = (await session.exportGgufLora()).size;
  session.close();
  log(JSON.stringify(report));
  await hand('report.json', new Blob([JSON.stringify(report)], { type: 'application/json' }));
}

main().catch(async (e) => {
  log(`${e.name}: ${e.message}`);
  await hand('report.json', new Blob([JSON.stringify({ error: `${e.name}: ${e.message}` })]));
});
