// The host's promises, forced rather than waited for (DESIGN.md 3a). Promise 1, unmodified
// same-origin clients, is jssdk.test.mjs.
//   2. the browser stopping the service worker loses nothing, and the next request is answered;
//   3. exactly one server instance (one IndexedDB writer) across tabs, reloads and an update;
//   4. the server keeps running while any tab of the origin is open.

import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  TIMEOUT_MS,
  api,
  apiOk,
  copyWww,
  createRoomUi,
  eventually,
  launchBrowser,
  loginUi,
  openPage,
  openRoomUi,
  registerApi,
  registerUi,
  sendUi,
  startRelay,
  until,
  untilSelector,
  waitForMessage,
  within,
} from './harness.mjs';

let relay;
let browser;
let www;
before(async () => {
  // A private copy of www/, so the update test can change sw.js without touching the tree.
  www = copyWww();
  relay = await startRelay({ www: www.dir });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
  www?.remove();
});

const enc = encodeURIComponent;
const instanceId = (page) => page.evaluate(async () => (await window.hearth.status()).instanceId);

/** Who holds, and who waits for, the server's Web Lock, as seen from `page`. */
const serverLock = (page) =>
  page.evaluate(async () => {
    const q = await navigator.locks.query();
    return {
      held: q.held.filter((l) => l.name === 'hearth-server').length,
      pending: q.pending.filter((l) => l.name === 'hearth-server').length,
    };
  });

async function send(page, token, roomId, body, txn) {
  return api(page, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { msgtype: 'm.text', body }, token);
}

async function bodies(page, token, roomId) {
  const res = await apiOk(page, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=500`, undefined, token);
  return res.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body).reverse();
}

/**
 * A CDP handle on the context's service workers: their running states as the browser reports
 * them, and a stop button.
 */
async function serviceWorkers(ctx, page) {
  const cdp = await ctx.newCDPSession(page);
  const state = new Map(); // versionId -> runningStatus, as last reported
  const log = []; // every reported change, in order: [versionId, runningStatus]
  let stops = 0; // reported transitions into 'stopped'
  let starts = 0; // reported transitions into 'running'
  cdp.on('ServiceWorker.workerVersionUpdated', ({ versions }) => {
    for (const v of versions) {
      const was = state.get(v.versionId);
      if (was === v.runningStatus) continue;
      if (v.runningStatus === 'stopped' && was !== undefined) stops++;
      if (v.runningStatus === 'running' && was !== undefined) starts++;
      state.set(v.versionId, v.runningStatus);
      log.push([v.versionId, v.runningStatus]);
    }
  });
  const seen = () => ({ state: [...state], recent: log.slice(-12), stops, starts });
  // Enabling the domain reports every version's current state, but after the command's answer.
  await cdp.send('ServiceWorker.enable');
  await eventually('the browser to report the page\'s service worker', () => state.size > 0, { seen });
  const allStopped = () => [...state.values()].every((s) => s === 'stopped');
  return {
    /** Resolves once the browser has reported more than `since` restarts. */
    restarted: (since) => eventually('the service worker to restart', () => starts > since, { seen }),
    /**
     * Stops every service worker. Chromium answers the command once every running worker has
     * stopped, or at once when none was running (an earlier stop still holds). The browser's
     * reports must then agree, whichever it was: a stop reported since the request, or every
     * version reported stopped. A request may restart the worker right after, which is the
     * point. Resolves to the number of restarts reported so far, for `restarted`.
     */
    async stopAll() {
      const before = stops;
      await cdp.send('ServiceWorker.stopAllWorkers');
      await eventually('the browser to report the service worker stopped', () => stops > before || allStopped(), { seen });
      return starts;
    },
  };
}

test('promise 2: stopping the service worker mid-session loses nothing and the next request is answered', async () => {
  const ctx = await browser.newContext();
  try {
    const { page } = await openPage(ctx, relay.url);
    await registerUi(page, 'alice');
    const roomId = await createRoomUi(page, 'Resilient');
    const token = await page.evaluate(() => JSON.parse(localStorage.getItem('hearth.session')).accessToken);
    const server = await instanceId(page);
    const sw = await serviceWorkers(ctx, page);
    const acknowledged = [];
    for (let round = 0; round < 3; round++) {
      // A burst of sends races the stop: whatever was acknowledged must survive.
      const burst = Array.from({ length: 5 }, (_, i) => `round ${round} msg ${i}`);
      const sends = burst.map((body, i) => send(page, token, roomId, body, `r${round}m${i}`));
      await sw.stopAll();
      const results = await Promise.all(sends);
      results.forEach((r, i) => {
        if (r.status === 200) acknowledged.push(burst[i]);
        // A request caught by the stop may fail, but only with a clear, retryable Matrix error.
        else assert.ok(r.status === 503 && r.body?.errcode, `round ${round} send ${i}: ${r.status} ${JSON.stringify(r.body)}`);
      });
      // The worker is stopped (the burst may have restarted it: stop it again); the very next
      // request restarts it and is answered.
      const startsAtStop = await sw.stopAll();
      const next = await send(page, token, roomId, `after stop ${round}`, `after${round}`);
      assert.equal(next.status, 200, JSON.stringify(next.body));
      acknowledged.push(`after stop ${round}`);
      await sw.restarted(startsAtStop);
    }
    const stored = await bodies(page, token, roomId);
    for (const body of acknowledged) assert.ok(stored.includes(body), `acknowledged "${body}" was lost`);
    // The server itself never restarted: only its stateless proxy did.
    assert.equal(await instanceId(page), server);
    // The page's own client recovers too: its long-poll was cut by the stop.
    await sw.stopAll();
    await sendUi(page, 'the UI still works');
    await waitForMessage(page, 'the UI still works');
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close();
  }
});

test('promise 3: one server instance across tabs, reloads and a service-worker update', async () => {
  const ctx = await browser.newContext();
  try {
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push((await openPage(ctx, relay.url)).page);
    const first = await instanceId(tabs[0]);
    assert.ok(first, 'status() reports an instance id');
    for (const t of tabs) assert.equal(await instanceId(t), first);
    assert.deepEqual(await serverLock(tabs[1]), { held: 1, pending: 0 });

    const reg = await registerApi(tabs[0], 'alice');
    const { room_id: roomId } = await apiOk(tabs[0], 'POST', '/_matrix/client/v3/createRoom', { name: 'one writer' }, reg.access_token);
    assert.equal((await send(tabs[1], reg.access_token, roomId, 'before reload', 'a1')).status, 200);

    // Reloading a tab while others are open keeps the same server.
    await tabs[1].reload();
    await within('hearth.ready after the reload', tabs[1].evaluate(() => window.hearth.ready));
    assert.equal(await instanceId(tabs[1]), first);
    assert.deepEqual(await serverLock(tabs[2]), { held: 1, pending: 0 });

    // A service-worker update: a new sw.js replaces the old one in every tab. Every tab listens
    // before the update starts, so none can miss its controllerchange.
    for (const t of tabs) {
      await t.evaluate(() => {
        window.e2eControllerChanged = false;
        navigator.serviceWorker.addEventListener('controllerchange', () => (window.e2eControllerChanged = true), { once: true });
      });
    }
    appendFileSync(path.join(www.dir, 'sw.js'), `\n// e2e update ${Date.now()}\n`);
    await tabs[0].evaluate(async () => (await navigator.serviceWorker.getRegistration()).update());
    for (const [i, t] of tabs.entries()) {
      await until(t, `the updated service worker to take over tab ${i} (controllerchange)`, () => window.e2eControllerChanged, undefined, {
        seen: () =>
          t.evaluate(async () => {
            const r = await navigator.serviceWorker.getRegistration();
            return { active: r?.active?.state, waiting: r?.waiting?.state, installing: r?.installing?.state };
          }),
      });
    }
    for (const [i, t] of tabs.entries()) {
      const r = await send(t, reg.access_token, roomId, `after update ${i}`, `u${i}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(await instanceId(t), first);
    }
    assert.deepEqual(await serverLock(tabs[0]), { held: 1, pending: 0 });
    assert.deepEqual(await bodies(tabs[2], reg.access_token, roomId), ['before reload', 'after update 0', 'after update 1', 'after update 2']);
  } finally {
    await ctx.close();
  }
});

test('promise 4: the server keeps running while any tab is open', async () => {
  const ctx = await browser.newContext();
  try {
    const { page: a } = await openPage(ctx, relay.url);
    const { page: b } = await openPage(ctx, relay.url);
    await registerUi(a, 'alice');
    const roomId = await createRoomUi(a, 'Still here');
    await sendUi(a, 'from the first tab');
    await waitForMessage(a, 'from the first tab');
    const server = await instanceId(b);

    // The tab that started the server goes away; the other one keeps the same server.
    await a.close();
    assert.equal(await instanceId(b), server);
    const token = await b.evaluate(() => JSON.parse(localStorage.getItem('hearth.session')).accessToken);
    const r = await send(b, token, roomId, 'from the second tab', 'b1');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await bodies(b, token, roomId), ['from the first tab', 'from the second tab']);
    // b's page UI logs in and chats live on the same server. (No reload here: reloading the
    // only open tab restarts the server, which the last part of this test covers.)
    await loginUi(b, 'alice');
    await untilSelector(b, `#room-list li[data-room-id="${roomId}"]`, { what: `room ${roomId} in the room list` });
    await openRoomUi(b, roomId);
    await sendUi(b, 'live in the second tab');
    await waitForMessage(b, 'live in the second tab');
    assert.equal(await instanceId(b), server);

    // With the last tab closed the server stops; the next tab starts a new instance on the
    // same data.
    await b.close();
    const { page: c } = await openPage(ctx, relay.url);
    assert.notEqual(await instanceId(c), server);
    assert.deepEqual(await bodies(c, token, roomId), ['from the first tab', 'from the second tab', 'live in the second tab']);
    assert.deepEqual(await serverLock(c), { held: 1, pending: 0 });
  } finally {
    await ctx.close();
  }
});

test('promise 4: the server does not depend on any page running scripts (a background tab)', async () => {
  // Chromium throttles and then freezes background tabs. Headless Chromium under Playwright
  // keeps every page visible, so CDP's freeze does not take; a page whose main thread is
  // stalled stands in for it: it runs no task at all while the others are served.
  const ctx = await browser.newContext();
  try {
    const { page: a } = await openPage(ctx, relay.url);
    const alice = await registerApi(a, 'background-alice');
    const { room_id: roomId } = await apiOk(a, 'POST', '/_matrix/client/v3/createRoom', { name: 'background' }, alice.access_token);
    const server = await instanceId(a);
    const { page: b } = await openPage(ctx, relay.url);

    // The stalled tab announces its stall on a channel the other tab listens to (a message
    // posted before the loop is delivered while the loop runs); the stall lasts until the
    // checks are done, when the test ends it from outside (Runtime.terminateExecution), so
    // however slow the machine, every check runs while the first tab runs nothing.
    await b.evaluate(() => {
      window.e2eStall = new Promise((resolve) => {
        new BroadcastChannel('e2e-stall').onmessage = (e) => resolve(e.data);
      });
    });
    const cdpA = await ctx.newCDPSession(a);
    let stallOver = false;
    const stalled = a
      .evaluate((ms) => {
        new BroadcastChannel('e2e-stall').postMessage('stalling');
        const end = Date.now() + ms;
        while (Date.now() < end) {
          // The tab that started the server runs nothing else meanwhile.
        }
      }, TIMEOUT_MS)
      .then(
        () => 'ran its course',
        (e) => `ended: ${e.message}`,
      )
      .finally(() => (stallOver = true));
    await within('the first tab to start stalling', b.evaluate(() => window.e2eStall));

    // The other tab is served by the same instance, timers included (a long-poll times out).
    assert.equal(await instanceId(b), server);
    const r = await send(b, alice.access_token, roomId, 'while the first tab is stalled', 's1');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const polled = await b.evaluate(async (token) => {
      const get = async (q) => (await fetch(`/_matrix/client/v3/sync?${q}`, { headers: { Authorization: `Bearer ${token}` } })).json();
      const since = (await get('timeout=0')).next_batch;
      const started = performance.now();
      await get(`timeout=1000&since=${since}`);
      return performance.now() - started;
    }, alice.access_token);
    assert.ok(polled >= 900 && polled < 4000, `a 1000 ms long-poll took ${polled} ms`);

    // The stalled tab alone: the server outlives the last responsive tab.
    await b.close();
    const browserCdp = await browser.newBrowserCDPSession();
    const { targetInfos } = await browserCdp.send('Target.getTargets');
    await browserCdp.detach();
    if (stallOver) assert.fail(`the first tab stopped stalling before the checks were done (${await stalled})`);
    assert.ok(
      targetInfos.some((t) => t.type === 'shared_worker' && t.url.endsWith('/server-worker.js')),
      `no server worker among ${JSON.stringify(targetInfos.map((t) => [t.type, t.url]))}`,
    );
    await cdpA.send('Runtime.terminateExecution');
    assert.notEqual(await within('the stalled tab to stop stalling', stalled), 'ran its course');

    // Responsive again: the same instance, with what was written meanwhile.
    assert.equal(await instanceId(a), server);
    assert.deepEqual(await bodies(a, alice.access_token, roomId), ['while the first tab is stalled']);
    assert.deepEqual(await serverLock(a), { held: 1, pending: 0 });
  } finally {
    await ctx.close();
  }
});
