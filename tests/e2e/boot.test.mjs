// The page boots a homeserver in the browser and shows its status.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HEX64, api, launchBrowser, openPage, startRelay } from './harness.mjs';

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
    await page.waitForSelector('#auth:not([hidden])');
    await page.click('#status-toggle');
    await page.waitForFunction((n) => document.getElementById('st-name').textContent === n, serverName);
    const status = await page.evaluate(() => window.hearth.status());
    assert.equal(await page.textContent('#st-version'), status.version);
    assert.equal(await page.textContent('#st-users'), String(status.users));
    assert.equal(await page.textContent('#st-rooms'), String(status.rooms));
    assert.match(await page.textContent('#st-storage'), /^\d+(\.\d)? (B|KB|MB|GB)$/);
    assert.equal(await page.textContent('#st-relay'), 'not connected');
    assert.equal(await page.textContent('#auth-server'), serverName);
    // Phone width: nothing overflows horizontally.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the viewport`);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctx.close();
  }
});
