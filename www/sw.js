// Hearth's service worker: a stateless proxy in front of the homeserver.
//
// Same-origin `/_matrix/...` and `/.well-known/matrix/client` requests are forwarded over a
// MessagePort to the SharedWorker that runs the server (www/server-worker.js); everything else
// goes to the network untouched. The browser may stop this worker at any moment (30 s after
// its last event): all it loses is the port, and the next request asks an open page for a new
// one. A request that cannot reach a server within PORT_WAIT_MS gets a retryable 503 Matrix
// error, never a hang.
//
// Module service worker rules: static imports only, no top-level await, no dynamic import().

const PORT_WAIT_MS = 3000;
const INSTANCE_LOCK_PREFIX = 'hearth-instance-';

/** The current channel to the server: {port, instanceId, alive}. */
let channel = null;
/** Resolvers of requests waiting for a channel. */
let channelWaiters = [];
/** Requests in flight: id -> {resolve, channel}. */
const pending = new Map();
let nextId = 1;
/** Server instances whose end we are already waiting for. */
const watched = new Set();

self.addEventListener('install', (event) => {
  event.waitUntil(self.skipWaiting());
});

self.addEventListener('activate', (event) => {
  // Control pages on their very first load too, so their fetches reach the server.
  event.waitUntil(self.clients.claim());
});

self.addEventListener('message', (event) => {
  const type = event.data?.type;
  if (type === 'hearth-port' && event.ports[0]) {
    adopt(event.ports[0]);
  } else if (type === 'hearth-claim') {
    // A page loaded without a controller (hard reload) asks to be taken over.
    event.waitUntil(self.clients.claim());
  }
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith('/_matrix/') && url.pathname !== '/.well-known/matrix/client') return;
  event.respondWith(forward(event.request));
});

function adopt(port) {
  const ch = { port, instanceId: null, alive: true };
  port.onmessage = (event) => onChannelMessage(ch, event.data);
  channel = ch;
  // A live server greets every new channel at once; silence means the port leads nowhere.
  setTimeout(() => {
    if (ch.instanceId === null) channelDead(ch, 'the homeserver did not answer; retry');
  }, PORT_WAIT_MS);
  const waiters = channelWaiters;
  channelWaiters = [];
  for (const resolve of waiters) resolve(ch);
}

function onChannelMessage(ch, message) {
  if (message?.type === 'hello') {
    ch.instanceId = message.instanceId;
    watchInstance(message.instanceId);
  } else if (message?.type === 'response') {
    const entry = pending.get(message.id);
    if (!entry) return;
    pending.delete(message.id);
    entry.resolve(message);
  }
}

// The server holds its instance lock for its whole life, so our request for it is granted
// exactly when that instance has ended (all tabs closed, crash): its port is dead from then on.
function watchInstance(instanceId) {
  if (watched.has(instanceId)) return;
  watched.add(instanceId);
  navigator.locks.request(INSTANCE_LOCK_PREFIX + instanceId, () => {
    watched.delete(instanceId);
    instanceGone(instanceId);
  });
}

function instanceGone(instanceId) {
  const dead = new Set([...pending.values()].map((e) => e.channel).filter((ch) => ch.instanceId === instanceId));
  if (channel?.instanceId === instanceId) dead.add(channel);
  for (const ch of dead) channelDead(ch, 'the homeserver stopped while answering; retry');
}

function channelDead(ch, why) {
  ch.alive = false;
  if (channel === ch) channel = null;
  for (const [id, entry] of pending) {
    if (entry.channel !== ch) continue;
    pending.delete(id);
    entry.resolve(unavailableAnswer(why));
  }
}

async function getChannel() {
  if (channel?.alive) return channel;
  const got = new Promise((resolve) => channelWaiters.push(resolve));
  askPagesForPort();
  let timer;
  const timeout = new Promise((resolve) => (timer = setTimeout(() => resolve(null), PORT_WAIT_MS)));
  const ch = await Promise.race([got, timeout]);
  clearTimeout(timer);
  return ch;
}

let lastAsk = 0;
async function askPagesForPort() {
  const now = Date.now();
  if (now - lastAsk < 250) return;
  lastAsk = now;
  const pages = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  for (const page of pages) page.postMessage({ type: 'hearth-need-port' });
}

function unavailableAnswer(message) {
  return {
    status: 503,
    headers: [['content-type', 'application/json'], ['access-control-allow-origin', '*']],
    body: new TextEncoder().encode(JSON.stringify({ errcode: 'M_UNKNOWN', error: message, retry_after_ms: 1000 })),
  };
}

async function forward(request) {
  const ch = await getChannel();
  if (!ch) {
    return toResponse(unavailableAnswer('the homeserver is not running: no open Hearth page is hosting it'));
  }
  const body = request.method === 'GET' || request.method === 'HEAD'
    ? new ArrayBuffer(0)
    : await request.arrayBuffer();
  const id = nextId++;
  const answer = await new Promise((resolve) => {
    pending.set(id, { resolve, channel: ch });
    ch.port.postMessage(
      { type: 'request', id, method: request.method, url: request.url, headers: [...request.headers], body },
      [body],
    );
  });
  return toResponse(answer);
}

function toResponse(answer) {
  // Null-body statuses must not carry a body, even an empty one.
  const nullBody = answer.status === 204 || answer.status === 205 || answer.status === 304;
  const body = nullBody || !answer.body || answer.body.byteLength === 0 ? null : answer.body;
  return new Response(body, { status: answer.status, headers: answer.headers });
}
