// Hearth's service worker: a stateless proxy in front of the homeserver.
//
// Same-origin `/_matrix/...` and `/.well-known/matrix/client` requests are forwarded over a
// MessagePort to the SharedWorker that runs the server (www/server-worker.js); everything else
// goes to the network untouched. The browser may stop this worker at any moment (30 s after
// its last event): all it loses is the port, and the next request asks an open page for a new
// one. A request that cannot reach a server within PORT_WAIT_MS gets a retryable 503 Matrix
// error, never a hang.
//
// It also speaks the message protocol hydrogen-view-sdk's page uses with Hydrogen's own service
// worker, and with it authenticates media requests the page makes with plain <img> and fetch
// (see docs/media-auth.md): a GET of this origin's /_matrix/client/v1/media/download|thumbnail/
// without an Authorization header asks the page that made it for its access token and adds it.
//
// A classic script (no imports): Hydrogen registers this same URL without options, and a
// registration whose type changed would install the worker again on every Hydrogen load.

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
  } else {
    onClientProtocolMessage(event);
  }
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin) return;
  if (!url.pathname.startsWith('/_matrix/') && url.pathname !== '/.well-known/matrix/client') return;
  event.respondWith(withMediaAuth(event.request, url, event.clientId).then((auth) => forward(event.request, auth)));
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

/** Forwards `request` to the server, with `authorization` (a header value) added if given. */
async function forward(request, authorization = null) {
  const ch = await getChannel();
  if (!ch) {
    return toResponse(unavailableAnswer('the homeserver is not running: no open Hearth page is hosting it'));
  }
  const body = request.method === 'GET' || request.method === 'HEAD'
    ? new ArrayBuffer(0)
    : await request.arrayBuffer();
  const headers = [...request.headers];
  if (authorization) headers.push(['authorization', authorization]);
  const id = nextId++;
  const answer = await new Promise((resolve) => {
    pending.set(id, { resolve, channel: ch });
    ch.port.postMessage(
      { type: 'request', id, method: request.method, url: request.url, headers, body },
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

// --- Authenticated media for pages that load it with plain requests -------------------------
//
// The pull half of Hydrogen's protocol: we post {type: 'getAuthInfo', id} to the one page whose
// request this is and it answers {replyTo: id, payload: {accessToken, homeserver}}. Nothing is
// stored here: each media request asks again, so a token change or a logout in the page takes
// effect at once, and a page that never answered gets nothing from another page's session.

/** Only these paths ever get a token added: media bytes, which <img> cannot authenticate. */
const AUTHENTICATED_MEDIA = /^\/_matrix\/client\/v1\/media\/(download|thumbnail)\//;
/** How long a page may take to answer before we treat it as one that does not speak the protocol. */
const CLIENT_REPLY_MS = 1000;
/** Pages that left a question unanswered (Hearth's own page, say): not asked again. */
const silentClients = new Set();
const SILENT_CLIENTS_KEPT = 256;
/** Our questions to pages: id -> {clientId, resolve}. */
const clientReplies = new Map();
let nextClientMessageId = 1;

/**
 * The Authorization header value to add to `request`, or null. Only for a same-origin (checked
 * by the caller) GET/HEAD of a media download or thumbnail that carries no Authorization of its
 * own, made by a window of this origin that, asked now, names this origin as its homeserver.
 */
async function withMediaAuth(request, url, clientId) {
  if (!clientId || (request.method !== 'GET' && request.method !== 'HEAD')) return null;
  if (!AUTHENTICATED_MEDIA.test(url.pathname) || request.headers.has('authorization')) return null;
  if (silentClients.has(clientId)) return null;
  const client = await self.clients.get(clientId);
  if (!client || client.type !== 'window') return null;
  const auth = await askClient(client, 'getAuthInfo', {});
  const token = auth?.accessToken;
  if (typeof token !== 'string' || !/^[\x21-\x7e]+$/.test(token)) return null;
  if (sameOrigin(auth.homeserver) !== true) return null;
  return `Bearer ${token}`;
}

function sameOrigin(homeserver) {
  try {
    return new URL(homeserver).origin === self.location.origin;
  } catch {
    return false;
  }
}

/** Posts {type, id, payload} to `client`; its reply's payload, or undefined on silence. */
function askClient(client, type, payload) {
  const id = nextClientMessageId++;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      clientReplies.delete(id);
      markSilent(client.id);
      resolve(undefined);
    }, CLIENT_REPLY_MS);
    clientReplies.set(id, {
      clientId: client.id,
      resolve: (value) => {
        clearTimeout(timer);
        resolve(value);
      },
    });
    client.postMessage({ type, id, payload });
  });
}

function markSilent(clientId) {
  silentClients.add(clientId);
  if (silentClients.size > SILENT_CLIENTS_KEPT) silentClients.delete(silentClients.values().next().value);
}

/** Replies to our questions, and the questions Hydrogen's page asks its service worker. */
function onClientProtocolMessage(event) {
  const data = event.data;
  const source = event.source;
  if (!data || typeof data !== 'object' || !source) return;
  if (data.replyTo) {
    const entry = clientReplies.get(data.replyTo);
    // Only the page we asked may answer for itself.
    if (entry && entry.clientId === source.id) {
      clientReplies.delete(data.replyTo);
      entry.resolve(data.payload);
    }
    return;
  }
  silentClients.delete(source.id);
  const reply = (payload) => source.postMessage({ replyTo: data.id, payload });
  switch (data.type) {
    case 'version':
      reply({ version: 'hearth', buildHash: 'hearth' });
      break;
    case 'skipWaiting':
      event.waitUntil(self.skipWaiting());
      break;
    case 'haltRequests':
      // Hydrogen's worker stops its network fetches before an update takes over; ours go to the
      // tab's server over a port, which the new worker asks for afresh, so nothing to halt.
      reply();
      break;
    case 'closeSession':
      // A page is about to open this session's storage: the others must close it first.
      event.waitUntil(closeSessionElsewhere(data.payload?.sessionId, source.id).finally(() => reply()));
      break;
  }
}

async function closeSessionElsewhere(sessionId, requester) {
  const pages = await self.clients.matchAll({ type: 'window' });
  await Promise.all(
    pages
      .filter((page) => page.id !== requester && !silentClients.has(page.id))
      .map((page) => askClient(page, 'closeSession', { sessionId })),
  );
}
