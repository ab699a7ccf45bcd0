// Page-side bootstrap of the in-browser homeserver. Include it as
//   <script type="module" src="/hearth.js"></script>
// It starts (or joins) the SharedWorker that runs the server, registers the service worker
// that answers same-origin `/_matrix/...` requests, and hands the service worker a
// MessagePort to the server whenever it needs one (first load, and after every restart of
// the service worker, which the browser does whenever it likes).
//
// window.hearth = {
//   ready: Promise<{serverName}>   resolves once fetch('/_matrix/client/versions') answers 200
//                                  through the service worker
//   status(): Promise<{serverName, version, storageBytes, users, rooms, relay, relayUrl,
//                      peers: [{server, rooms, queued, failures, retry_at}],
//                      instanceId, startedAt, ready, error}>
//   setRelay(url | null): Promise<status>   federate through the relay at `url` from now on
//                                  (kept across restarts); null: the relay that served the page
//   onerror: null | (error: {kind, message}) => void   storage and start-up problems
//   lastError: null | {kind, message}
//   fetch(input, init): Promise<Response>   window.fetch with a short cut: same-origin
//                                  `/_matrix/...` requests go straight to the server worker
//                                  over this page's port instead of through the service
//                                  worker (whose fetch interception alone costs ~1.5-2 ms per
//                                  request). Clients that take a fetch function use it
//                                  (matrix-js-sdk: `createClient({fetchFn: hearth.fetch})`);
//                                  everything else keeps working through the service worker.
// }
// Errors are also dispatched on window as a 'hearth-error' CustomEvent (detail = error).

const WORKER_URL = '/server-worker.js';
const WORKER_NAME = 'hearth-server';
const SW_URL = '/sw.js';
const STATUS_TIMEOUT_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const hearth = {
  ready: null,
  status,
  setRelay,
  fetch: hearthFetch,
  onerror: null,
  lastError: null,
};
window.hearth = hearth;

let worker = null;
let nextStatusId = 1;
const statusWaiters = new Map();
let nextRequestId = 1;
/** Requests sent over the page's port: id -> resolve(answer). */
const pendingRequests = new Map();

function reportError(error) {
  hearth.lastError = error;
  try {
    hearth.onerror?.(error);
  } finally {
    window.dispatchEvent(new CustomEvent('hearth-error', { detail: error }));
  }
}

function startWorker() {
  worker = new SharedWorker(WORKER_URL, { type: 'module', name: WORKER_NAME });
  worker.onerror = () => reportError({ kind: 'load', message: 'the server worker failed to load' });
  window.addEventListener('pagehide', () => worker.port.postMessage({ type: 'bye' }));
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) worker.port.postMessage({ type: 'back' });
  });
  worker.port.onmessage = (event) => {
    const message = event.data;
    if (message?.type === 'response') {
      pendingRequests.get(message.id)?.(message);
      pendingRequests.delete(message.id);
    } else if (message?.type === 'status') {
      statusWaiters.get(message.id)?.(message.status);
      statusWaiters.delete(message.id);
    } else if (message?.type === 'error') {
      reportError(message.error);
    } else if (message?.type === 'hello') {
      watchInstance(message.instanceId);
      if (message.error) reportError(message.error);
    } else if (message?.type === 'ready') {
      hearth.lastError = null;
    }
  };
}

/** Gives `target` (a service worker) a fresh channel to the server. */
function providePort(target) {
  if (!worker || !target) return;
  const { port1, port2 } = new MessageChannel();
  worker.port.postMessage({ type: 'attach-sw' }, [port1]);
  target.postMessage({ type: 'hearth-port' }, [port2]);
}

function status() {
  return askWorker({ type: 'status' });
}

function setRelay(url) {
  return askWorker({ type: 'set-relay', url: url || null });
}

/** Sends `message` to the server worker; resolves to the status it answers with. */
function askWorker(message) {
  if (!worker) return Promise.reject(new Error('the Hearth server worker is not running'));
  const id = nextStatusId++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      statusWaiters.delete(id);
      reject(new Error('the Hearth server did not answer'));
    }, STATUS_TIMEOUT_MS);
    statusWaiters.set(id, (s) => {
      clearTimeout(timer);
      if (s?.failed) reject(new Error(s.failed));
      else resolve(s);
    });
    worker.port.postMessage({ ...message, id });
  });
}

// The server holds 'hearth-instance-<id>' for its whole life: the lock is granted to us exactly
// when that instance has ended, and requests still waiting on it would otherwise wait forever.
function watchInstance(instanceId) {
  if (!instanceId) return;
  navigator.locks.request(`hearth-instance-${instanceId}`, () => {
    const gone = {
      status: 503,
      headers: [['content-type', 'application/json']],
      body: new TextEncoder().encode(JSON.stringify({
        errcode: 'M_UNKNOWN',
        error: 'the homeserver stopped while answering; retry',
        retry_after_ms: 1000,
      })).buffer,
    };
    for (const [id, resolve] of pendingRequests) {
      pendingRequests.delete(id);
      resolve(gone);
    }
  });
}

function servedHere(url) {
  return url.origin === location.origin
    && (url.pathname.startsWith('/_matrix/') || url.pathname === '/.well-known/matrix/client');
}

function abortError(signal) {
  return signal.reason ?? new DOMException('The operation was aborted.', 'AbortError');
}

async function hearthFetch(input, init) {
  const request = new Request(input, init);
  if (!worker || !servedHere(new URL(request.url))) return fetch(request);
  const { signal } = request;
  if (signal.aborted) throw abortError(signal);
  const body = request.method === 'GET' || request.method === 'HEAD'
    ? new ArrayBuffer(0)
    : await request.arrayBuffer();
  const id = nextRequestId++;
  const answer = await new Promise((resolve, reject) => {
    pendingRequests.set(id, resolve);
    // The server finishes what it started (a send stays sent); only the answer is dropped.
    signal.addEventListener('abort', () => {
      pendingRequests.delete(id);
      reject(abortError(signal));
    }, { once: true });
    worker.port.postMessage(
      { type: 'request', id, method: request.method, url: request.url, headers: [...request.headers], body },
      [body],
    );
  });
  // Null-body statuses must not carry a body, even an empty one.
  const nullBody = answer.status === 204 || answer.status === 205 || answer.status === 304;
  const payload = nullBody || !answer.body || answer.body.byteLength === 0 ? null : answer.body;
  return new Response(payload, { status: answer.status, headers: answer.headers });
}

function controllerChanged() {
  return new Promise((resolve) =>
    navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true }),
  );
}

async function boot() {
  if (!('serviceWorker' in navigator) || typeof SharedWorker === 'undefined' || !navigator.locks) {
    throw new Error('this browser lacks service workers, shared workers or Web Locks');
  }
  startWorker();

  const sw = navigator.serviceWorker;
  sw.addEventListener('message', (event) => {
    if (event.data?.type === 'hearth-need-port') providePort(event.source);
  });
  sw.startMessages();

  // A classic worker, as every client that registers /sw.js itself without options (Hydrogen)
  // asks for: a different type would make each such page install the worker again.
  const registration = await sw.register(SW_URL, { scope: '/' });
  await sw.ready;
  if (!sw.controller) {
    // First load: the worker claims us on activation. A hard reload bypasses the worker
    // altogether; ask it to claim us again.
    const changed = controllerChanged();
    registration.active?.postMessage({ type: 'hearth-claim' });
    await Promise.race([changed, sleep(5000)]);
    if (!sw.controller) throw new Error('the service worker did not take control of this page');
  }
  providePort(sw.controller);
  // A service-worker update replaces the controller; give the new one a port right away.
  sw.addEventListener('controllerchange', () => providePort(sw.controller));

  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch('/_matrix/client/versions', { cache: 'no-store' });
      if (response.ok) break;
    } catch {
      // The service worker restarting mid-request; try again.
    }
    await sleep(Math.min(50 * 2 ** attempt, 1000));
  }
  const s = await status();
  return { serverName: s.serverName };
}

hearth.ready = boot();
hearth.ready.catch((e) => reportError({ kind: 'boot', message: String(e?.message ?? e) }));
