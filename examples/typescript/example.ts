// The package's API as a TypeScript app uses it; `cargo xtask test` type-checks it against the
// packed index.d.ts with `tsc --noEmit --strict` (xtask/src/package_test.rs).

import {
  Session, DeviceLostError, DownloadError, SettingsError, WebQloraError, catalog, cachedStatus,
  downloadModel, type Checkpoint, type FitReport, type StepReport, type TrainSettings,
} from 'webqlora';

export async function fineTune(input: HTMLInputElement, data: File): Promise<Blob> {
  const files = input.files ? [...input.files] : [];
  const session = await Session.open({ files }, { kernels: 'portable' });
  console.log(`${session.info.layers} layers on ${session.info.device}: base ${session.info.base} (${session.info.baseWhy})`);
  const settings: TrainSettings = {
    rank: 16, lr: 2e-4, maxSeqLen: 512, batch: 4, schedule: 'cosine', base: 'auto', epochs: 2,
    targetModules: ['q_proj', 'v_proj'], checkpointing: true,
  };
  const fit: FitReport = await session.fit(data, settings, { budgetMiB: 4096 });
  if (!fit.fits && fit.proposal) {
    settings.batch = fit.proposal.batch;
    settings.accumulation = fit.proposal.accumulation;
  }
  const stop = new AbortController();
  let last: Checkpoint | null = null;
  const run = await session.train(data, settings, {
    signal: stop.signal,
    saveEvery: 50,
    onStep: (s: StepReport) => console.log(s.step, s.steps, s.loss.toFixed(4), s.gradNorm),
    onCheckpoint: (c) => { last = c; },
    onDeviceLost: (loss) => console.warn(`device lost, resuming from step ${loss.resumeFrom}`),
  });
  if (run.stopped && last) await session.train(data, settings, { resume: last });
  const before = await session.evaluate(data, { adapter: false, limit: 100 });
  const after = await session.evaluate(data, { onProgress: (done, total) => console.log(done, total) });
  console.log(before.loss, after.loss, after.accuracy ?? 'no questions', after.accNorm);
  const text: string = await session.generate('Hi', { maxNewTokens: 32, onText: (t) => console.log(t) });
  console.log(text);
  const { config, weights } = await session.exportPeft();
  console.log(config.size, weights.size);
  const merged = await session.exportMergedGguf({ dtype: 'q8_0', onProgress: (d, t) => console.log(d, t) });
  session.close();
  return merged;
}

export async function byName(name: string): Promise<void> {
  const list = await catalog();
  const entry = list.find((m) => m.id === name);
  if (!entry) return;
  const kept = await cachedStatus(entry);
  if (!kept.complete) await downloadModel(entry, { onDownload: (p) => console.log(p.file, p.done, p.total) });
  try {
    const session = await Session.open({ catalog: name });
    await session.renew();
  } catch (e) {
    if (e instanceof DeviceLostError) console.error('device lost in', e.operation);
    else if (e instanceof DownloadError) console.error(e.url, e.status);
    else if (e instanceof SettingsError) console.error(e.key);
    else if (e instanceof WebQloraError) console.error(e.message);
    else throw e;
  }
}
