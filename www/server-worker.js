// Hearth's server host: a module SharedWorker that runs the homeserver (wasm, IndexedDB).
//
// Pages start it as `new SharedWorker('/server-worker.js', {type: 'module', name: 'hearth-server'})`;
// the browser keeps exactly one instance per URL + name while any tab of the origin is open.
// The Web Lock 'hearth-server' makes it the only writer of IndexedDB even across the moments
// when two instances overlap (a reload of the only tab restarts it; the old one may still be
// finishing). A second lock, 'hearth-instance-<id>', is held for the worker's whole life so the
// service worker can learn, without polling, that the instance behind its port is gone.
//
// Messages (over a page's port or a service-worker channel):
//   {type: 'request', id, method, url, headers: [[k, v]...], body: ArrayBuffer}
//     -> {type: 'response', id, status, headers, body: ArrayBuffer}
//   {type: 'status', id} -> {type: 'status', id, status}
//   {type: 'set-relay', id, url} -> {type: 'status', id, status}: federate through the relay at
//     `url` (http(s), kept in the 'hearth-settings' database), or through the page's own
//     origin when `url` is null; an invalid URL answers {status: {failed: why}}
//   {type: 'bye'} / {type: 'back'}: the page is hidden away (closed, or into the back-forward
//     cache) / restored from it: stop / resume broadcasting to it.
//   {type: 'attach-sw'} with a MessagePort: that port becomes a request channel for the
//     service worker; it first receives {type: 'hello', instanceId}.
// Broadcast to pages: {type: 'ready', serverName}, {type: 'error', error: {kind, message}}.

import init, { HearthServer } from './pkg/hearth_web.js';

const DB_NAME = 'hearth';
// The server's own settings, apart from the homeserver's data so that either can be read
// without the other.
const SETTINGS_DB = 'hearth-settings';
const SERVER_LOCK = 'hearth-server';
const INSTANCE_LOCK_PREFIX = 'hearth-instance-';
// How long a request waits for the server to come up before it gets a retryable error.
const START_WAIT_MS = 3000;
// Retry back-off while the database is unavailable (blocked by an old tab, quota, ...). Each
// attempt leaves a pending open request behind while blocked, so attempts thin out.
const BOOT_RETRY_MS = 2000;
const BOOT_RETRY_MAX_MS = 30000;

const instanceId = crypto.randomUUID();
const startedAt = Date.now();
const pages = new Set();
let server = null;
let lastError = null;
// Time spent inside the server, to tell it apart from the hops around it.
const handled = { count: 0, totalMs: 0 };
// Where boot time goes: waiting for the lock, compiling the wasm, opening the database.
const bootTimings = { lockMs: null, initMs: null, startMs: null };
let markBooted;
const booted = new Promise((resolve) => (markBooted = resolve));

// Resolves once the instance lock is ours, so nobody can observe it free while we live.
const instanceLockHeld = new Promise((held) => {
  navigator.locks.request(INSTANCE_LOCK_PREFIX + instanceId, () => {
    held();
    return new Promise(() => {});
  });
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function broadcast(message) {
  for (const port of pages) port.postMessage(message);
}

function reportError(error) {
  lastError = { kind: error.kind ?? 'backend', message: String(error.message ?? error) };
  console.error('hearth server:', lastError.kind, lastError.message);
  broadcast({ type: 'error', error: lastError });
}

async function boot() {
  const asked = performance.now();
  await navigator.locks.request(SERVER_LOCK, async () => {
    const locked = performance.now();
    bootTimings.lockMs = locked - asked;
    try {
      await init();
      bootTimings.initMs = performance.now() - locked;
    } catch (e) {
      reportError({ kind: 'load', message: `the server's WebAssembly failed to load: ${e?.message ?? e}` });
      return;
    }
    for (let attempt = 0; ; attempt++) {
      const starting = performance.now();
      try {
        server = await HearthServer.start(DB_NAME);
        bootTimings.startMs = performance.now() - starting;
        // The relay that served this page carries federation for it, unless the settings
        // name another.
        server.connectRelay(await relayUrl());
        break;
      } catch (e) {
        reportError(e);
        await sleep(Math.min(BOOT_RETRY_MS * 2 ** attempt, BOOT_RETRY_MAX_MS));
      }
    }
    lastError = null;
    markBooted();
    broadcast({ type: 'ready', serverName: server.serverName() });
    // Hold the lock for as long as this worker lives: one writer, always.
    await new Promise(() => {});
  });
}

/** Runs `fn(store)` in one transaction of the settings database; resolves to its request's result. */
function settings(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(SETTINGS_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore('settings');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const tx = db.transaction('settings', mode);
      const req = fn(tx.objectStore('settings'));
      tx.oncomplete = () => {
        db.close();
        resolve(req.result);
      };
      tx.onerror = tx.onabort = () => {
        db.close();
        reject(tx.error);
      };
    };
  });
}

/** The relay this server federates through: the one named in the settings, else the page's origin. */
async function relayUrl() {
  try {
    return (await settings('readonly', (s) => s.get('relay'))) || self.location.origin;
  } catch {
    return self.location.origin;
  }
}

async function setRelay(url) {
  if (url !== null) {
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      return { failed: `not a URL: ${url}` };
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return { failed: 'a relay URL starts with http:// or https://' };
    url = parsed.origin;
  }
  await settings('readwrite', (s) => (url === null ? s.delete('relay') : s.put(url, 'relay')));
  if (server) server.connectRelay(url ?? self.location.origin);
  return status();
}

function unavailable(message) {
  const body = new TextEncoder().encode(
    JSON.stringify({ errcode: 'M_UNKNOWN', error: message, retry_after_ms: 1000 }),
  );
  return {
    status: 503,
    headers: [['content-type', 'application/json'], ['access-control-allow-origin', '*']],
    body,
  };
}

async function serve(message) {
  if (!server) await Promise.race([booted, sleep(START_WAIT_MS)]);
  if (!server) {
    const why = lastError ? lastError.message : 'it is still starting';
    return unavailable(`the homeserver is not running: ${why}`);
  }
  const began = performance.now();
  const answer = await server.handle(
    message.method,
    message.url,
    message.headers,
    new Uint8Array(message.body ?? new ArrayBuffer(0)),
  );
  handled.count += 1;
  handled.totalMs += performance.now() - began;
  const failure = server.takeStorageError();
  if (failure) reportError(failure);
  return answer;
}

async function status() {
  const base = { instanceId, startedAt, ready: Boolean(server), error: lastError?.message ?? null, handled: { ...handled }, bootTimings: { ...bootTimings } };
  if (!server) return { ...base, serverName: null, version: null, storageBytes: 0, users: 0, rooms: 0, relay: 'not connected' };
  const s = await server.status();
  const storageError = s.storageError;
  return { ...s, ...base, storageError, error: lastError?.message ?? storageError?.message ?? null };
}

function listen(port) {
  port.onmessage = async (event) => {
    const message = event.data;
    switch (message?.type) {
      case 'request': {
        let answer;
        try {
          answer = await serve(message);
        } catch (e) {
          // The server itself never rejects; this is the wasm trapping (a bug), reported as such.
          reportError({ kind: 'crash', message: `the server failed: ${e?.message ?? e}` });
          answer = unavailable(`the homeserver failed: ${e?.message ?? e}`);
        }
        const body = answer.body.buffer.byteLength === answer.body.byteLength
          ? answer.body.buffer
          : answer.body.slice().buffer;
        port.postMessage(
          { type: 'response', id: message.id, status: answer.status, headers: answer.headers, body },
          [body],
        );
        break;
      }
      case 'status': {
        let result;
        try {
          result = await status();
        } catch (e) {
          result = { instanceId, ready: Boolean(server), error: String(e?.message ?? e) };
        }
        port.postMessage({ type: 'status', id: message.id, status: result });
        break;
      }
      case 'set-relay': {
        let result;
        try {
          result = await setRelay(message.url);
        } catch (e) {
          result = { failed: String(e?.message ?? e) };
        }
        port.postMessage({ type: 'status', id: message.id, status: result });
        break;
      }
      case 'bye':
        pages.delete(port);
        break;
      case 'back':
        pages.add(port);
        break;
      case 'attach-sw': {
        const channel = event.ports[0];
        if (!channel) break;
        listen(channel);
        await instanceLockHeld;
        channel.postMessage({ type: 'hello', instanceId });
        break;
      }
      default:
        break;
    }
  };
}

self.onconnect = (event) => {
  const port = event.ports[0];
  pages.add(port);
  listen(port);
  port.postMessage({
    type: 'hello',
    instanceId,
    serverName: server ? server.serverName() : null,
    error: lastError,
  });
};

boot();
