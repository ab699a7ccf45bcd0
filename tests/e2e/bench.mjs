// Browser benchmark of the in-browser homeserver (not part of the test run).
//
//   cargo xtask www && node tests/e2e/bench.mjs [--rooms 50] [--events 200] [--sends 300] [--deliveries 200]
//
//   node tests/e2e/bench.mjs --no-devtools-only     (only the sends and delivery, without DevTools)
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
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CHROMIUM, CHROMIUM_ARGS, WWW, apiOk, copyWww, launchBrowser, openPage, registerApi, startRelay } from './harness.mjs';

const { values: opts } = parseArgs({
  options: {
    rooms: { type: 'string', default: '50' },
    events: { type: 'string', default: '200' },
    sends: { type: 'string', default: '300' },
    deliveries: { type: 'string', default: '200' },
    boots: { type: 'string', default: '5' },
    'no-devtools-only': { type: 'boolean', default: false },
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

const HERE = path.dirname(fileURLToPath(import.meta.url));
const rows = [];
const row = (what, value, note = '') => {
  rows.push([what, value, note]);
  console.error(`  ${what}: ${value} ${note}`);
};

/** Rows for one run of bench-page.js's `all()`. */
function report(m, how) {
  row(`baseline: one fetch [${how}]`, ms(m.baselineMs), `GET /healthz passed through the SW to the relay: ${(1000 / m.baselineMs).toFixed(0)}/s at most`);
  for (const [via, p] of Object.entries(m.paths)) {
    const label = via === 'fetch' ? 'through the SW' : 'hearth.fetch, no SW';
    const { rate, before, after } = p.sends;
    const per = (f) => (f(after) - f(before)) / SENDS;
    row(`sequential sends (${label}) [${how}]`, `${rate.toFixed(0)} /s`, `${SENDS} PUT /send, each durable in IndexedDB; ${ms(1000 / rate)} per send`);
    row('  of a send: in the server', ms(per((x) => x.handled.totalMs)), `the rest is the hops page → ${via === 'fetch' ? 'SW → ' : ''}server worker and back`);
    for (const op of ['get', 'scan', 'write']) {
      row(`  of a send: IndexedDB ${op}s`, ms(per((x) => x.storageOps[op].totalMs)), `${per((x) => x.storageOps[op].count).toFixed(2)} per send`);
    }
    row(`delivery latency p50 (${label}) [${how}]`, ms(median(p.latencies)), `${DELIVERIES} messages, send → other user's /sync returns`);
    row(`delivery latency p99 (${label}) [${how}]`, ms(quantile(p.latencies, 0.99)));
  }
}

/**
 * The same measurements in a Chromium with no DevTools client: Playwright's instrumentation of
 * service-worker fetches more than doubles their cost, which users never pay. The page
 * (bench.html, in a temporary copy of www/) logs its result to the console, which Chromium
 * prints on stderr.
 */
async function withoutDevtools() {
  const www = copyWww();
  const profile = mkdtempSync(path.join(tmpdir(), 'hearth-bench-profile-'));
  const relay = await startRelay({ www: www.dir });
  try {
    for (const f of ['bench.html', 'bench-page.js']) copyFileSync(path.join(HERE, f), path.join(www.dir, f));
    const url = `${relay.url}/bench.html?sends=${SENDS}&deliveries=${DELIVERIES}`;
    const chromium = spawn(CHROMIUM, ['--headless', ...CHROMIUM_ARGS, `--user-data-dir=${profile}`, '--enable-logging=stderr', '--v=0', url], { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      const lines = createInterface({ input: chromium.stderr });
      const found = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no result from bench.html in 600 s')), 600000);
        chromium.once('exit', (code) => reject(new Error(`chromium exited (${code}) before reporting`)));
        lines.on('line', (line) => {
          const m = /HEARTHBENCH (\{.*\})", source/.exec(line);
          if (!m) return;
          clearTimeout(timer);
          resolve(JSON.parse(m[1]));
        });
      });
      if (found.error) throw new Error(`bench.html: ${found.error}`);
      return found.ok;
    } finally {
      const exited = once(chromium, 'exit');
      chromium.kill('SIGTERM');
      await exited;
    }
  } finally {
    await relay.stop();
    www.remove();
    rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  }
}

if (opts['no-devtools-only']) {
  report(await withoutDevtools(), 'no DevTools');
  printTable();
  process.exit(0);
}

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
  // --- sends and delivery, with DevTools attached (Playwright) -----------------------------------
  await page.addScriptTag({ path: path.join(HERE, 'bench-page.js'), type: 'module' });
  await page.waitForFunction(() => window.hearthBench);
  const measured = await page.evaluate((o) => window.hearthBench.all(o), { sends: SENDS, deliveries: DELIVERIES });
  report(measured, 'Playwright');
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
report(await withoutDevtools(), 'no DevTools');
printTable();

function printTable() {
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), ['measure', 'value', 'note'][i].length));
  const line = (cells) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  console.log(line(['measure', 'value', 'note']));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(line(r));
}
