// Browser benchmark of the in-browser homeserver (not part of the test run).
//
//   cargo xtask www && node tests/e2e/bench.mjs [--rooms 50] [--events 200] [--sends 300] [--deliveries 200]
//
// Measures, in headless Chromium against the relay serving www/: cold boot (fresh profile)
// and warm boot (reload, service worker and IndexedDB in place) to `hearth.ready`; sequential
// message sends per second and delivery latency (send until another user's long-poll /sync
// returns it) through the service worker on IndexedDB; the wasm size raw and gzipped; and the
// initial /sync of a user in N rooms of M events. Prints a table.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { WWW, apiOk, launchBrowser, openPage, registerApi, startRelay } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    rooms: { type: 'string', default: '50' },
    events: { type: 'string', default: '200' },
    sends: { type: 'string', default: '300' },
    deliveries: { type: 'string', default: '200' },
    boots: { type: 'string', default: '5' },
  },
});
const ROOMS = Number(opts.rooms);
const EVENTS = Number(opts.events);
const SENDS = Number(opts.sends);
const DELIVERIES = Number(opts.deliveries);
const BOOTS = Number(opts.boots);

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const median = (xs) => quantile(xs, 0.5);
const ms = (x) => `${x.toFixed(1)} ms`;

const rows = [];
const row = (what, value, note = '') => {
  rows.push([what, value, note]);
  console.error(`  ${what}: ${value} ${note}`);
};

const relay = await startRelay();
const browser = await launchBrowser();
try {
  // --- wasm size ------------------------------------------------------------------------------
  const wasm = readFileSync(path.join(WWW, 'pkg/hearth_web_bg.wasm'));
  row('wasm size', `${(wasm.length / 1024).toFixed(0)} KiB raw`, `${(gzipSync(wasm, { level: 9 }).length / 1024).toFixed(0)} KiB gzipped`);

  // --- boot -----------------------------------------------------------------------------------
  const cold = [];
  for (let i = 0; i < BOOTS; i++) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const t0 = performance.now();
    await page.goto(relay.url + '/');
    await page.evaluate(() => window.hearth.ready);
    cold.push(performance.now() - t0);
    await ctx.close();
  }
  row('cold boot to hearth.ready', ms(median(cold)), `median of ${BOOTS}, fresh profile (SW install, key generation)`);

  const ctx = await browser.newContext();
  const { page } = await openPage(ctx, relay.url);
  const warm = [];
  for (let i = 0; i < BOOTS; i++) {
    const t0 = performance.now();
    await page.reload();
    await page.evaluate(() => window.hearth.ready);
    warm.push(performance.now() - t0);
  }
  row('warm boot to hearth.ready', ms(median(warm)), `median of ${BOOTS}, reload of the only tab (server restarts)`);
  const second = [];
  for (let i = 0; i < BOOTS; i++) {
    const t0 = performance.now();
    const p2 = await ctx.newPage();
    await p2.goto(relay.url + '/');
    await p2.evaluate(() => window.hearth.ready);
    second.push(performance.now() - t0);
    await p2.close();
  }
  row('second tab to hearth.ready', ms(median(second)), `median of ${BOOTS}, server already running`);

  // --- sequential sends -------------------------------------------------------------------------
  const alice = await registerApi(page, 'alice');
  const bob = await registerApi(page, 'bob');
  const { room_id: roomId } = await apiOk(page, 'POST', '/_matrix/client/v3/createRoom', { name: 'bench', preset: 'public_chat' }, alice.access_token);
  await apiOk(page, 'POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {}, bob.access_token);
  const statusNow = () => page.evaluate(() => window.hearth.status());
  const before = await statusNow();
  const sendRate = await page.evaluate(
    async ([roomId, token, n]) => {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) {
        const r = await fetch(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/seq${i}`, {
          method: 'PUT',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ msgtype: 'm.text', body: `message ${i}` }),
        });
        if (!r.ok) throw new Error(`send ${i}: ${r.status} ${await r.text()}`);
      }
      return (n / (performance.now() - t0)) * 1000;
    },
    [roomId, alice.access_token, SENDS],
  );
  row('sequential sends', `${sendRate.toFixed(0)} /s`, `${SENDS} PUT /send through the SW, each durable in IndexedDB`);
  // Where a send's time goes: inside the server (and of that, IndexedDB) versus the hops.
  const after = await statusNow();
  const per = (f) => (f(after) - f(before)) / SENDS;
  const inServer = per((s) => s.handled.totalMs);
  row('  of a send: in the server', ms(inServer), `of ${ms(1000 / sendRate)} per send; the rest is page → SW → SharedWorker and back`);
  for (const op of ['get', 'scan', 'write']) {
    row(`  of a send: IndexedDB ${op}s`, ms(per((s) => s.storageOps[op].totalMs)), `${per((s) => s.storageOps[op].count).toFixed(2)} per send`);
  }

  // --- delivery latency -------------------------------------------------------------------------
  // Bob long-polls /sync; alice sends; latency is send start until bob's /sync returns it.
  const latencies = await page.evaluate(
    async ([roomId, aliceToken, bobToken, n]) => {
      const get = async (url, token) => {
        const r = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
        if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
        return r.json();
      };
      const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 10 } }, presence: { not_types: ['*'] } }));
      let since = (await get(`/_matrix/client/v3/sync?timeout=0&filter=${filter}`, bobToken)).next_batch;
      const out = [];
      for (let i = 0; i < n; i++) {
        const body = `latency ${i}`;
        const poll = get(`/_matrix/client/v3/sync?timeout=30000&since=${since}&filter=${filter}`, bobToken);
        await new Promise((r) => setTimeout(r, 2)); // let the long-poll reach the server
        const t0 = performance.now();
        const send = fetch(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/lat${i}`, {
          method: 'PUT',
          headers: { Authorization: `Bearer ${aliceToken}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ msgtype: 'm.text', body }),
        });
        let res = await poll;
        // Any other wake-up (receipts, presence) is skipped until the message itself arrives.
        while (!(res.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e) => e.content?.body === body)) {
          since = res.next_batch;
          res = await get(`/_matrix/client/v3/sync?timeout=30000&since=${since}&filter=${filter}`, bobToken);
        }
        out.push(performance.now() - t0);
        since = res.next_batch;
        if (!(await send).ok) throw new Error(`send ${i} failed`);
      }
      return out;
    },
    [roomId, alice.access_token, bob.access_token, DELIVERIES],
  );
  row('delivery latency p50', ms(median(latencies)), `${DELIVERIES} messages, send → other user's /sync returns`);
  row('delivery latency p99', ms(quantile(latencies, 0.99)));

  // --- initial sync of a big account -------------------------------------------------------------
  const carol = await registerApi(page, 'carol');
  const setup0 = performance.now();
  await page.evaluate(
    async ([token, rooms, events]) => {
      const call = async (method, url, body) => {
        const r = await fetch(url, {
          method,
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
        });
        if (!r.ok) throw new Error(`${method} ${url}: ${r.status} ${await r.text()}`);
        return r.json();
      };
      for (let i = 0; i < rooms; i++) {
        const { room_id } = await call('POST', '/_matrix/client/v3/createRoom', { name: `room ${i}` });
        for (let j = 0; j < events; j++) {
          await call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room_id)}/send/m.room.message/r${i}e${j}`, { msgtype: 'm.text', body: `room ${i} event ${j}` });
        }
      }
    },
    [carol.access_token, ROOMS, EVENTS],
  );
  const setupSecs = (performance.now() - setup0) / 1000;
  const initial = await page.evaluate(
    async ([token, runs]) => {
      const out = [];
      let bytes = 0;
      let rooms = 0;
      for (let i = 0; i < runs; i++) {
        const t0 = performance.now();
        const r = await fetch('/_matrix/client/v3/sync?timeout=0', { headers: { Authorization: `Bearer ${token}` } });
        const text = await r.text();
        out.push(performance.now() - t0);
        if (!r.ok) throw new Error(`initial sync: ${r.status} ${text}`);
        bytes = text.length;
        rooms = Object.keys(JSON.parse(text).rooms?.join ?? {}).length;
      }
      return { out, bytes, rooms };
    },
    [carol.access_token, 3],
  );
  if (initial.rooms !== ROOMS) throw new Error(`initial sync returned ${initial.rooms} rooms, expected ${ROOMS}`);
  row(
    `initial /sync, ${ROOMS} rooms × ${EVENTS} events`,
    ms(median(initial.out)),
    `median of 3, ${(initial.bytes / 1024).toFixed(0)} KiB response (setup: ${(ROOMS * EVENTS / setupSecs).toFixed(0)} sends/s)`,
  );
  await ctx.close();
} finally {
  await browser.close();
  await relay.stop();
}

const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), ['measure', 'value', 'note'][i].length));
const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
console.log(line(['measure', 'value', 'note']));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of rows) console.log(line(r));
