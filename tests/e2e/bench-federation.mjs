// Federation benchmark of browser servers on the relay (not part of the test run).
//
//   cargo xtask www && cargo build --release -p hearth-testhost && cargo build -p hearth-relay
//   node tests/e2e/bench-federation.mjs [--n 200] [--catchup 5000] [--no-synapse]
//
// Measures, in headless Chromium against a real relay serving www/:
// - delivery latency between two browser servers (two browser contexts: two SharedWorkers, two
//   IndexedDBs), both ways: from just before the sender's PUT to the moment the receiver's
//   long-poll /sync (already waiting) returns the message; one message at a time;
// - the same between a browser server and a native hearth-testhost on the relay (release
//   build), both ways;
// - Synapse <-> Synapse on loopback in the same run, as the anchor
//   (bench/federation_latency.py --pair synapse-synapse, same N), unless --no-synapse;
// - catching up: a browser server whose browser is closed while a native server sends
//   --catchup messages into their room (the relay holds them); then the browser opens again
//   and the time runs from the page's navigation until the user's incremental /sync (since a
//   token taken before closing) has returned the last one. Then every message is checked
//   present once and in the sender's order.
// Prints one JSON document on stdout; progress goes to stderr.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  CHROMIUM_ARGS,
  ROOT,
  apiOk,
  eventually,
  launchBrowser,
  launchPersistent,
  openPage,
  registerApi,
  relayConnected as connected,
  relayMetric,
  startRelay,
  startTestHost,
} from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    n: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '10' },
    catchup: { type: 'string', default: '5000' },
    'no-synapse': { type: 'boolean', default: false },
    // The relay's --delivery-window (its default when absent).
    'delivery-window': { type: 'string' },
    // Writes a CPU profile (.cpuprofile, DevTools' format) of the browser server's SharedWorker
    // during the catch-up, and prints its heaviest functions by self time.
    'cpu-profile': { type: 'string' },
  },
});
const N = Number(opts.n);
const WARMUP = Number(opts.warmup);
const CATCHUP = Number(opts.catchup);
const TESTHOST = process.env.HEARTH_TESTHOST_BIN
  ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'release/hearth-testhost');
const enc = encodeURIComponent;
const log = (...a) => console.error('[bench]', ...a);

/**
 * Attaches to the browser's DevTools endpoint, waits for the SharedWorker to appear and starts
 * V8's sampling profiler in it; `stop(file)` writes the profile and logs the top self times.
 */
async function profileSharedWorker(userDataDir) {
  const WebSocketImpl = globalThis.WebSocket ?? createRequire(import.meta.url)('playwright-core/lib/utilsBundle').ws;
  // Chromium writes the port once it listens, which may be just after the launch resolves.
  let active = '';
  for (let i = 0; i < 100 && !active.includes('\n'); i++) {
    try {
      active = readFileSync(path.join(userDataDir, 'DevToolsActivePort'), 'utf8').trim();
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const [port, wsPath] = active.split('\n');
  const ws = new WebSocketImpl(`ws://127.0.0.1:${port}${wsPath}`);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  let nextId = 1;
  const waiting = new Map();
  let onTarget = null;
  ws.onmessage = (e) => {
    const m = JSON.parse(typeof e.data === 'string' ? e.data : e.data.toString());
    if (m.id && waiting.has(m.id)) {
      waiting.get(m.id)(m);
      waiting.delete(m.id);
    } else if (m.method === 'Target.targetCreated' && onTarget) onTarget(m.params.targetInfo);
  };
  const send = (method, params = {}, sessionId) => new Promise((resolve) => {
    const id = nextId++;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
  });
  const worker = new Promise((resolve) => { onTarget = (t) => t.type === 'shared_worker' && resolve(t); });
  await send('Target.setDiscoverTargets', { discover: true });
  const target = await worker;
  const { result } = await send('Target.attachToTarget', { targetId: target.targetId, flatten: true });
  const sessionId = result.sessionId;
  await send('Profiler.enable', {}, sessionId);
  await send('Profiler.setSamplingInterval', { interval: 200 }, sessionId);
  await send('Profiler.start', {}, sessionId);
  await send('Runtime.runIfWaitingForDebugger', {}, sessionId);
  return {
    async stop(file) {
      const r = await send('Profiler.stop', {}, sessionId);
      const profile = r.result.profile;
      writeFileSync(file, JSON.stringify(profile));
      const byId = new Map(profile.nodes.map((n) => [n.id, n]));
      const dt = new Map();
      profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
      const self = new Map();
      let total = 0;
      for (const [id, us] of dt) {
        const name = byId.get(id).callFrame.functionName || '(anonymous)';
        self.set(name, (self.get(name) ?? 0) + us);
        total += us;
      }
      const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 40);
      log(`cpu profile: ${(total / 1000).toFixed(0)} ms sampled; heaviest self times:`);
      for (const [name, us] of top) log(`  ${(us / 1000).toFixed(1).padStart(8)} ms  ${name.slice(0, 140)}`);
      ws.close();
    },
  };
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const summary = (xs) => ({ n: xs.length, p50_ms: +quantile(xs, 0.5).toFixed(2), p99_ms: +quantile(xs, 0.99).toFixed(2) });

/** A client endpoint: a page (requests through its service worker) or a native server's URL. */
function pageClient(page, token) {
  return {
    async call(method, p, body) {
      return apiOk(page, method, p, body, token);
    },
    /** Sends `body` and resolves to the wall-clock ms just before the request left. */
    send(room, body, txn) {
      return page.evaluate(async ([room, body, txn, token]) => {
        const t = performance.timeOrigin + performance.now();
        const r = await fetch(`/_matrix/client/v3/rooms/${encodeURIComponent(room)}/send/m.room.message/${txn}`, {
          method: 'PUT',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ msgtype: 'm.text', body }),
        });
        if (!r.ok) throw new Error(`send: ${r.status} ${await r.text()}`);
        return t;
      }, [room, body, txn, token]);
    },
    /** Starts a /sync loop in the page recording when each message body first arrives. */
    async startSync() {
      await page.evaluate(async (token) => {
        const arrived = (window.benchArrived = new Map());
        const get = (since) => fetch(`/_matrix/client/v3/sync?timeout=30000${since ? `&since=${since}` : ''}`, { headers: { Authorization: `Bearer ${token}` } });
        let since = (await (await get(null)).json()).next_batch;
        window.benchStop = false;
        (async () => {
          while (!window.benchStop) {
            const r = await get(since);
            const now = performance.timeOrigin + performance.now();
            if (!r.ok) continue;
            const s = await r.json();
            since = s.next_batch;
            for (const room of Object.values(s.rooms?.join ?? {})) {
              for (const e of room.timeline?.events ?? []) {
                if (typeof e.content?.body === 'string' && !arrived.has(e.content.body)) arrived.set(e.content.body, now);
              }
            }
          }
        })();
      }, token);
    },
    arrived(body) {
      return page.evaluate((b) => window.benchArrived.get(b) ?? null, body);
    },
    stopSync() {
      return page.evaluate(() => (window.benchStop = true));
    },
  };
}

function nativeClient(base, token) {
  const arrived = new Map();
  let stop = false;
  const call = async (method, p, body) => {
    const r = await fetch(base + p, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await r.json();
    if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(json)}`);
    return json;
  };
  return {
    call,
    async send(room, body, txn) {
      const t = performance.timeOrigin + performance.now();
      await call('PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/${txn}`, { msgtype: 'm.text', body });
      return t;
    },
    async startSync() {
      let since = (await call('GET', '/_matrix/client/v3/sync?timeout=0')).next_batch;
      (async () => {
        while (!stop) {
          let s;
          try {
            s = await call('GET', `/_matrix/client/v3/sync?timeout=30000&since=${since}`);
          } catch {
            continue;
          }
          const now = performance.timeOrigin + performance.now();
          since = s.next_batch;
          for (const room of Object.values(s.rooms?.join ?? {})) {
            for (const e of room.timeline?.events ?? []) {
              if (typeof e.content?.body === 'string' && !arrived.has(e.content.body)) arrived.set(e.content.body, now);
            }
          }
        }
      })();
    },
    async arrived(body) {
      return arrived.get(body) ?? null;
    },
    async stopSync() {
      stop = true;
    },
  };
}

async function registerNative(base, username) {
  const first = await fetch(`${base}/_matrix/client/v3/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password: 'bench password' }),
  });
  let body = await first.json();
  if (first.status === 401) {
    const second = await fetch(`${base}/_matrix/client/v3/register`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password: 'bench password', auth: { type: 'm.login.dummy', session: body.session } }),
    });
    body = await second.json();
  }
  if (!body.access_token) throw new Error(`register ${username}: ${JSON.stringify(body)}`);
  return body;
}

/** Makes a room on `owner`'s server, has `guest` join it, and waits until both see both. */
async function shareRoom(owner, ownerId, guest, guestId) {
  const { room_id: room } = await owner.call('POST', '/_matrix/client/v3/createRoom', { preset: 'private_chat', invite: [guestId] });
  await eventually(`${guestId} to see the invite`, async () => {
    const s = await guest.call('GET', '/_matrix/client/v3/sync?timeout=0');
    return s.rooms?.invite?.[room] || null;
  });
  await guest.call('POST', `/_matrix/client/v3/join/${enc(room)}`, {});
  await eventually(`${ownerId}'s server to see the join`, async () => {
    const m = await owner.call('GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`);
    return m.joined?.[guestId] || null;
  });
  return room;
}

/** One message at a time from `from` to `to`, each sent once the previous one arrived. */
async function latencies(label, from, to, room) {
  await to.startSync();
  const out = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const body = `${label} ${i} ${Math.random().toString(36).slice(2)}`;
    const sent = await from.send(room, body, `${label.replace(/\W/g, '')}${i}${Date.now()}`);
    const got = await eventually(`${label} message ${i} to arrive`, () => to.arrived(body), { every: 1 });
    if (i >= WARMUP) out.push(got - sent);
  }
  await to.stopSync();
  log(label, JSON.stringify(summary(out)));
  return summary(out);
}

const relayQueued = (relayUrl) => relayMetric(relayUrl, 'hearth_relay_queued_transactions');

const result = { n: N, warmup: WARMUP, machine: { cores: (await import('node:os')).cpus().length } };
const dataDir = mkdtempSync(path.join(tmpdir(), 'hearth-bench-relay-'));
const profileDir = mkdtempSync(path.join(tmpdir(), 'hearth-bench-profile-'));
const relay = await startRelay({ args: ['--data', dataDir, ...(opts['delivery-window'] ? ['--delivery-window', opts['delivery-window']] : [])] });
const browser = await launchBrowser();
const host = await startTestHost(relay.url, { bin: TESTHOST });
try {
  // --- browser <-> browser, browser <-> native -------------------------------------------------
  const a = await openPage(await browser.newContext(), relay.url, { signedOut: true });
  const b = await openPage(await browser.newContext(), relay.url, { signedOut: true });
  await Promise.all([connected(a.page), connected(b.page)]);
  const alice = await registerApi(a.page, 'alice');
  const bob = await registerApi(b.page, 'bob');
  const carol = await registerNative(host.url, 'carol');
  const A = pageClient(a.page, alice.access_token);
  const B = pageClient(b.page, bob.access_token);
  const C = nativeClient(host.url, carol.access_token);
  const ab = await shareRoom(A, alice.user_id, B, bob.user_id);
  result['browser->browser'] = await latencies('browser->browser', A, B, ab);
  result['browser<-browser'] = await latencies('browser<-browser', B, A, ab);
  const ac = await shareRoom(A, alice.user_id, C, carol.user_id);
  result['browser->native'] = await latencies('browser->native', A, C, ac);
  result['native->browser'] = await latencies('native->browser', C, A, ac);

  // --- catching up -----------------------------------------------------------------------------
  if (CATCHUP > 0) {
    let ctx = await launchPersistent(profileDir);
    let d = await openPage(ctx, relay.url, { signedOut: true });
    await connected(d.page);
    const dave = await registerApi(d.page, 'dave');
    const D = pageClient(d.page, dave.access_token);
    const room = await shareRoom(C, carol.user_id, D, dave.user_id);
    const since = (await D.call('GET', '/_matrix/client/v3/sync?timeout=0')).next_batch;
    await ctx.close();
    log(`dave's browser is closed; carol sends ${CATCHUP} messages`);
    const sendStart = Date.now();
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < CATCHUP) {
        const i = next++;
        await C.call('PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/c${i}`, { msgtype: 'm.text', body: `catchup ${i}` });
      }
    }));
    const sendS = (Date.now() - sendStart) / 1000;
    // The native server's queue drains into the relay; wait until the relay's count holds still.
    let last = -1;
    let stableSince = Date.now();
    for (;;) {
      const q = await relayQueued(relay.url);
      if (q !== last) {
        last = q;
        stableSince = Date.now();
      } else if (q > 0 && Date.now() - stableSince > 3000) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    log(`sent in ${sendS.toFixed(1)} s; the relay holds ${last} transactions for dave's server`);

    // The relay's deliveries from its queue, sampled while the browser catches up.
    const delivered = [];
    let sampling = true;
    const base = await relayMetric(relay.url, 'hearth_relay_queue_delivered_total');
    const retriesBefore = await relayMetric(relay.url, 'hearth_relay_queue_retries_total');
    const sampler = (async () => {
      while (sampling) {
        // A failure elsewhere stops the relay; that error, not this one, is the one to report.
        const n = await relayMetric(relay.url, 'hearth_relay_queue_delivered_total').catch(() => null);
        if (n === null) break;
        delivered.push([Date.now(), n - base]);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const t0 = Date.now();
    ctx = await launchPersistent(profileDir, opts['cpu-profile'] ? { args: [...CHROMIUM_ARGS, '--remote-debugging-port=0'] } : {});
    // The worker appears with the page: attach while navigating.
    const profiling = opts['cpu-profile'] ? profileSharedWorker(profileDir) : null;
    const page = await ctx.newPage();
    await page.goto(relay.url + '/');
    const profiler = await profiling;
    const tNav = Date.now();
    await page.evaluate(() => window.hearth.ready);
    const tReady = Date.now();
    const opsBefore = (await page.evaluate(() => window.hearth.status())).storageOps;
    const lastBody = `catchup ${CATCHUP - 1}`;
    const seenAt = await page.evaluate(async ([token, since, lastBody]) => {
      let count = 0;
      for (;;) {
        const r = await fetch(`/_matrix/client/v3/sync?timeout=30000&since=${since}`, { headers: { Authorization: `Bearer ${token}` } });
        if (!r.ok) continue;
        const s = await r.json();
        since = s.next_batch;
        for (const room of Object.values(s.rooms?.join ?? {})) {
          for (const e of room.timeline?.events ?? []) {
            if (typeof e.content?.body === 'string' && e.content.body.startsWith('catchup ')) count++;
            if (e.content?.body === lastBody) return { at: Date.now(), syncedEvents: count };
          }
        }
      }
    }, [dave.access_token, since, lastBody]);
    const opsAfter = (await page.evaluate(() => window.hearth.status())).storageOps;
    if (profiler) await profiler.stop(opts['cpu-profile']);
    const ops = {};
    for (const k of ['get', 'getMany', 'scan', 'write']) {
      ops[k] = { count: opsAfter[k].count - opsBefore[k].count, total_ms: +(opsAfter[k].totalMs - opsBefore[k].totalMs).toFixed(1) };
    }
    ops.cache_misses = opsAfter.cacheMisses - opsBefore.cacheMisses;
    ops.cache_misses_by_tree = {};
    for (const [tree, n] of Object.entries(opsAfter.cacheMissesByTree ?? {})) {
      const d = n - (opsBefore.cacheMissesByTree?.[tree] ?? 0);
      if (d > 0) ops.cache_misses_by_tree[tree] = d;
    }
    // The index follows the timeline: the first search right after the catch-up indexes all
    // of it (the background indexer waits for writes to go quiet first); the next one does not.
    const searchMs = [];
    for (let i = 0; i < 2; i++) {
      const t = Date.now();
      const found = await pageClient(page, dave.access_token).call('POST', '/_matrix/client/v3/search', { search_categories: { room_events: { search_term: lastBody } } });
      searchMs.push(Date.now() - t);
      if (!found.search_categories.room_events.results.some((r) => r.result.content.body === lastBody)) throw new Error(`search did not find ${lastBody}`);
    }
    sampling = false;
    await sampler;
    const retries = (await relayMetric(relay.url, 'hearth_relay_queue_retries_total')) - retriesBefore;
    const firstDelivery = delivered.find(([, n]) => n > 0)?.[0];
    const lastDelivery = delivered.find(([, n]) => n >= last)?.[0];
    // Every message once, in carol's order.
    const order = async (client) => {
      const out = [];
      let from = '';
      for (;;) {
        const r = await client.call('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?dir=b&limit=1000${from}`);
        for (const e of r.chunk) if (e.content?.body?.startsWith('catchup ')) out.push(e.content.body);
        if (!r.end || r.chunk.length === 0) break;
        from = `&from=${r.end}`;
      }
      return out.reverse();
    };
    const mine = await order(pageClient(page, dave.access_token));
    const theirs = await order(C);
    if (mine.length !== CATCHUP || new Set(mine).size !== CATCHUP) throw new Error(`dave has ${mine.length} messages, ${new Set(mine).size} distinct`);
    if (mine.join('\n') !== theirs.join('\n')) throw new Error('dave\'s order differs from carol\'s');
    result.catchup = {
      events: CATCHUP,
      relay_transactions: last,
      relay_delivery_retries: retries,
      sender_s: +sendS.toFixed(2),
      launch_to_navigated_ms: tNav - t0,
      navigated_to_ready_ms: tReady - tNav,
      ready_to_last_in_sync_ms: seenAt.at - tReady,
      navigated_to_last_in_sync_ms: seenAt.at - tNav,
      navigated_to_first_delivery_ms: firstDelivery ? firstDelivery - tNav : null,
      first_to_last_delivery_ms: firstDelivery && lastDelivery ? lastDelivery - firstDelivery : null,
      events_in_sync_timelines: seenAt.syncedEvents,
      storage_ops: ops,
      first_search_ms: searchMs[0],
      next_search_ms: searchMs[1],
    };
    log('catchup', JSON.stringify(result.catchup));
    await ctx.close();
  }
} finally {
  await host.stop();
  await browser.close();
  await relay.stop();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(profileDir, { recursive: true, force: true });
}

// --- the anchor ----------------------------------------------------------------------------------
if (!opts['no-synapse']) {
  log('synapse <-> synapse (bench/federation_latency.py)');
  const out = execFileSync('python3', [path.join(ROOT, 'bench/federation_latency.py'), '--pair', 'synapse-synapse', '-n', String(N), '--warmup', String(WARMUP)], { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
  const s = JSON.parse(out.toString());
  result['synapse<->synapse'] = { p50_ms: s.anchor.p50_ms, p99_ms: s.anchor.p99_ms, synapse: s.synapse };
  for (const k of ['browser->browser', 'browser<-browser', 'browser->native', 'native->browser']) {
    result[k].p50_vs_synapse = +(result[k].p50_ms / s.anchor.p50_ms).toFixed(3);
    result[k].p99_vs_synapse = +(result[k].p99_ms / s.anchor.p99_ms).toFixed(3);
  }
}
console.log(JSON.stringify(result, null, 1));
