// The page boots a homeserver in the browser and shows its status.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HEX64, api, launchBrowser, openPage, startRelay, until, waitForSection, within } from './harness.mjs';

let relay;
let browser;
before(async () => {
  relay = await startRelay();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
});

test('hearth.ready resolves with a 64-hex server name', async () => {
  const ctx = await browser.newContext();
  try {
    const { page, serverName } = await openPage(ctx, relay.url);
    assert.match(serverName, HEX64);
    const status = await page.evaluate(() => window.hearth.status());
    assert.equal(status.serverName, serverName);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close();
  }
});

test('same-origin /_matrix requests are answered by the in-browser server', async () => {
  const ctx = await browser.newContext();
  try {
    const { page, serverName } = await openPage(ctx, relay.url);
    const versions = await api(page, 'GET', '/_matrix/client/versions');
    assert.equal(versions.status, 200);
    assert.ok(versions.body.versions.includes('v1.1'), JSON.stringify(versions.body));
    // The relay itself has no /_matrix routes: a 200 here can only come from the service worker.
    const direct = await fetch(`${relay.url}/_matrix/client/versions`);
    assert.equal(direct.status, 404);
    const wellKnown = await api(page, 'GET', '/.well-known/matrix/client');
    assert.equal(wellKnown.status, 200);
    assert.ok(wellKnown.body['m.homeserver'].base_url, JSON.stringify(wellKnown.body));
    // Unknown endpoints get the spec's answer, not the relay's 404 page.
    const unknown = await api(page, 'GET', '/_matrix/client/v3/no/such/endpoint');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.errcode, 'M_UNRECOGNIZED');
    // Every server's name is its own key: a second browser context is a second server.
    const ctx2 = await browser.newContext();
    try {
      const other = await openPage(ctx2, relay.url);
      assert.match(other.serverName, HEX64);
      assert.notEqual(other.serverName, serverName);
    } finally {
      await ctx2.close();
    }
  } finally {
    await ctx.close();
  }
});

test('the status panel shows name, version, storage, users, rooms and relay state', async () => {
  const ctx = await browser.newContext({ viewport: { width: 375, height: 740 } });
  try {
    const { page, serverName } = await openPage(ctx, relay.url);
    await waitForSection(page, 'auth');
    await page.click('#status-toggle');
    await until(page, 'the server name in the status panel', (n) => document.getElementById('st-name').textContent === n, serverName, {
      seen: () => page.textContent('#st-name'),
    });
    const status = await page.evaluate(() => window.hearth.status());
    assert.equal(await page.textContent('#st-version'), status.version);
    assert.equal(await page.textContent('#st-users'), String(status.users));
    assert.equal(await page.textContent('#st-rooms'), String(status.rooms));
    assert.match(await page.textContent('#st-storage'), /^\d+(\.\d)? (B|KB|MB|GB)$/);
    // The page's server connects to the relay that served it, and the panel says so.
    await until(page, 'the relay state to be connected', () => document.getElementById('st-relay').textContent === 'connected', undefined, {
      seen: () => page.textContent('#st-relay'),
    });
    assert.equal(await page.textContent('#auth-server'), serverName);
    // Phone width: nothing overflows horizontally.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the viewport`);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close();
  }
});

test('hearth.fetch answers like the service worker does, without it, and honours abort', async () => {
  const ctx = await browser.newContext();
  try {
    const { page } = await openPage(ctx, relay.url);
    const checks = page.evaluate(async () => {
      const viaSw = async (path, init) => {
        const r = await fetch(path, init);
        return { status: r.status, body: await r.json() };
      };
      const direct = async (path, init) => {
        const r = await window.hearth.fetch(path, init);
        return { status: r.status, type: r.headers.get('content-type'), body: await r.json() };
      };
      const json = (method, body, token) => ({
        method,
        headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
      const reg = await direct('/_matrix/client/v3/register', json('POST', {
        username: 'direct', password: 'correct horse battery staple', auth: { type: 'm.login.dummy' },
      }));
      const token = reg.body.access_token;
      const auth = { headers: { Authorization: `Bearer ${token}` } };
      const room = await direct('/_matrix/client/v3/createRoom', json('POST', { name: 'direct' }, token));
      const sent = await direct(
        `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/send/m.room.message/t1`,
        json('PUT', { msgtype: 'm.text', body: 'hello' }, token),
      );
      // What one path wrote the other reads: one server behind both.
      const event = await viaSw(
        `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/event/${encodeURIComponent(sent.body.event_id)}`,
        auth,
      );
      const badJson = await direct('/_matrix/client/v3/createRoom', {
        method: 'POST', headers: { Authorization: `Bearer ${token}` }, body: '{not json',
      });
      const unknown = await direct('/_matrix/client/v3/no/such/endpoint');
      // A long-poll given up on by the client rejects with AbortError at once.
      const since = (await direct('/_matrix/client/v3/sync?timeout=0', auth)).body.next_batch;
      const controller = new AbortController();
      const t0 = performance.now();
      const poll = window.hearth.fetch(`/_matrix/client/v3/sync?timeout=20000&since=${since}`, { ...auth, signal: controller.signal });
      setTimeout(() => controller.abort(), 100);
      const aborted = await poll.then(() => 'resolved', (e) => e.name);
      // Anything not for the homeserver is plain fetch.
      const page = await window.hearth.fetch('/');
      return {
        reg: reg.status,
        type: reg.type,
        sent: sent.status,
        event: [event.status, event.body.content?.body],
        badJson: [badJson.status, badJson.body.errcode],
        unknown: [unknown.status, unknown.body.errcode],
        aborted,
        abortMs: performance.now() - t0,
        page: [page.status, page.headers.get('content-type')],
      };
    });
    const result = await within('the hearth.fetch checks in the page', checks);
    assert.equal(result.reg, 200);
    assert.match(result.type, /^application\/json/);
    assert.equal(result.sent, 200);
    assert.deepEqual(result.event, [200, 'hello']);
    assert.deepEqual(result.badJson, [400, 'M_NOT_JSON']);
    assert.deepEqual(result.unknown, [404, 'M_UNRECOGNIZED']);
    assert.equal(result.aborted, 'AbortError');
    assert.ok(result.abortMs < 5000, `abort took ${result.abortMs} ms`);
    assert.equal(result.page[0], 200);
    assert.match(result.page[1], /^text\/html/);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close();
  }
});
