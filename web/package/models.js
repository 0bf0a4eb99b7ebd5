// Ready models by name: the catalog (the package's models.json, the one the CLI's `--model
// NAME` reads, or any URL), downloads kept in the Origin Private File System (OPFS) that
// survive a closed tab and resume where they stopped (HTTP Range requests), each model's size
// and SHA-256 recorded when it completes (and checked against the catalog's where it gives
// one), and removal.
//
// OPFS layout: models/<id>/<file>.<NNNN> parts of `chunkBytes` (a part is committed when its
// writer closes, so a reload loses at most the part in flight), and models/<id>/meta.json
// ({ complete, chunk, files: [{ name, size, parts, sha256 }] }) written last, once every file
// is whole.

import { DownloadError, WebQloraError } from './errors.js';

/** The part size when none is given: 16 MiB. */
export const DEFAULT_CHUNK = 16 << 20;

/** The catalog the package ships (the CLI's too). */
export const defaultCatalogUrl = new URL('./models.json', import.meta.url).href;

async function modelsDir(create) {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle('models', { create });
}

async function entryDir(id, create) {
  return (await modelsDir(create)).getDirectoryHandle(id, { create });
}

const partName = (file, i) => `${file}.${String(i).padStart(4, '0')}`;

// The whole parts of `file` kept so far: [count, bytes]. A short part is the last one of a
// finished file, or what an interrupted download left (dropped before resuming).
async function keptParts(dir, file, CHUNK) {
  let count = 0, bytes = 0;
  for (;;) {
    let f;
    try { f = await (await dir.getFileHandle(partName(file, count))).getFile(); } catch (e) { break; }
    bytes += f.size;
    count += 1;
    if (f.size < CHUNK) break;
  }
  return [count, bytes];
}

async function readMeta(dir) {
  try {
    const f = await (await dir.getFileHandle('meta.json')).getFile();
    return JSON.parse(await f.text());
  } catch (e) { return null; }
}

async function writeText(dir, name, text) {
  const w = await (await dir.getFileHandle(name, { create: true })).createWritable();
  await w.write(text);
  await w.close();
}

// What this browser holds of `entry`: { complete, bytes, meta }.
export async function status(entry, chunkBytes = DEFAULT_CHUNK) {
  try {
    const dir = await entryDir(entry.id, false);
    const meta = await readMeta(dir);
    if (meta && meta.complete) {
      return { complete: true, bytes: meta.files.reduce((n, f) => n + f.size, 0), meta };
    }
    let bytes = 0;
    for (const f of entry.files) bytes += (await keptParts(dir, f.name, chunkBytes))[1];
    return { complete: false, bytes, meta: null };
  } catch (e) {
    return { complete: false, bytes: 0, meta: null };
  }
}

async function sha256(buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// The parts of `file` as one ArrayBuffer.
async function assemble(dir, file, parts) {
  const blobs = [];
  for (let i = 0; i < parts; i++) blobs.push(await (await dir.getFileHandle(partName(file, i))).getFile());
  return new Blob(blobs).arrayBuffer();
}

// Download `entry` (or what is missing of it), reporting progress(got, total, file). Every
// part goes to OPFS as it arrives; a file already partly there is asked for from its first
// missing byte (Range). `signal` pauses it. Returns the files' meta once all are whole.
export async function download(entry, progress, signal, CHUNK = DEFAULT_CHUNK) {
  const dir = await entryDir(entry.id, true);
  const done = [];
  const info = { resumedAt: [] };
  for (const file of entry.files) {
    let [parts, have] = await keptParts(dir, file.name, CHUNK);
    // A short last part may be an interrupted one: fetch it again whole.
    if (parts > 0 && have % CHUNK !== 0) {
      parts -= 1;
      have = parts * CHUNK;
      await dir.removeEntry(partName(file.name, parts)).catch(() => {});
    }
    let r;
    try {
      r = await fetch(file.url, { signal, headers: have > 0 ? { Range: `bytes=${have}-` } : {} });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new DownloadError(`${file.url}: ${e.message}`, file.url, 0);
    }
    let total;
    if (r.status === 206) {
      const range = /bytes (\d+)-\d+\/(\d+)/.exec(r.headers.get('content-range') || '');
      if (!range || Number(range[1]) !== have) throw new DownloadError(`${file.url}: the server resumed at the wrong byte (${r.headers.get('content-range')})`, file.url, r.status);
      total = Number(range[2]);
      info.resumedAt.push([file.name, have]);
    } else if (r.status === 416 && have > 0) {
      total = have;
    } else if (r.ok) {
      // No range support: the whole file again.
      for (let i = 0; i < parts; i++) await dir.removeEntry(partName(file.name, i)).catch(() => {});
      parts = 0;
      have = 0;
      total = Number(r.headers.get('content-length')) || 0;
    } else {
      throw new DownloadError(`${file.url}: HTTP ${r.status}`, file.url, r.status);
    }
    if (r.status !== 416) {
      const reader = r.body.getReader();
      let pending = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (!pendingBytes) return;
        const w = await (await dir.getFileHandle(partName(file.name, parts), { create: true })).createWritable();
        await w.write(new Blob(pending));
        await w.close();
        parts += 1;
        pending = [];
        pendingBytes = 0;
      };
      for (;;) {
        const { done: end, value } = await reader.read();
        if (end) break;
        let chunk = value;
        while (chunk.length) {
          const take = Math.min(chunk.length, CHUNK - pendingBytes);
          pending.push(chunk.subarray(0, take));
          pendingBytes += take;
          chunk = chunk.subarray(take);
          have += take;
          if (pendingBytes === CHUNK) await flush();
        }
        progress(have, total, file.name);
      }
      await flush();
    }
    if (total && have !== total) throw new DownloadError(`${file.url}: ${have} of ${total} bytes arrived`, file.url, r.status);
    const hash = await sha256(await assemble(dir, file.name, parts));
    if (file.sha256 && file.sha256.toLowerCase() !== hash) {
      for (let i = 0; i < parts; i++) await dir.removeEntry(partName(file.name, i)).catch(() => {});
      throw new DownloadError(`${file.name}: its SHA-256 is ${hash}, the catalog says ${file.sha256}; the download was removed`, file.url, r.status);
    }
    done.push({ name: file.name, size: have, parts, sha256: hash });
  }
  const meta = { complete: true, chunk: CHUNK, files: done, url: entry.files.map((f) => f.url), date: new Date().toISOString() };
  await writeText(dir, 'meta.json', JSON.stringify(meta));
  return { meta, info };
}

// The files of a downloaded `entry`: [[name, ArrayBuffer], ...].
export async function files(entry) {
  const dir = await entryDir(entry.id, false);
  const meta = await readMeta(dir);
  if (!meta || !meta.complete) throw new WebQloraError(`${entry.name} is not downloaded`, 'open');
  const out = [];
  for (const f of meta.files) out.push([f.name, await assemble(dir, f.name, f.parts)]);
  return out;
}

export async function remove(entry) {
  const dir = await modelsDir(true);
  await dir.removeEntry(entry.id, { recursive: true }).catch(() => {});
}

export async function catalog(url = defaultCatalogUrl) {
  const base = new URL(url, globalThis.location ? globalThis.location.href : undefined).href;
  let r;
  try { r = await fetch(base); } catch (e) { throw new DownloadError(`${base}: ${e.message}`, base, 0); }
  if (!r.ok) throw new DownloadError(`${base}: HTTP ${r.status}`, base, r.status);
  let list;
  try { list = (await r.json()).models; } catch (e) { throw new DownloadError(`${base}: not a catalog (${e.message})`, base, r.status); }
  if (!Array.isArray(list)) throw new DownloadError(`${base}: not a catalog (no "models" list)`, base, r.status);
  // File URLs relative to the catalog's own.
  for (const m of list) for (const f of m.files) f.url = new URL(f.url, base).href;
  return list;
}
