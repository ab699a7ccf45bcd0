// Promise 1: an unmodified Matrix client on the page's origin works. matrix-js-sdk, bundled
// for the browser with esbuild, runs inside the page with the page's origin as its homeserver
// URL: every request it makes goes through the service worker to the in-browser server.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { PASSWORD, launchBrowser, openPage, startRelay } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
let relay;
let browser;
let bundle;
let buildDir;

before(async () => {
  buildDir = mkdtempSync(path.join(tmpdir(), 'hearth-jssdk-'));
  const entry = path.join(buildDir, 'entry.mjs');
  writeFileSync(entry, "import * as sdk from 'matrix-js-sdk';\nwindow.matrixcs = sdk;\n");
  const outfile = path.join(buildDir, 'matrix-js-sdk.js');
  await build({
    entryPoints: [entry],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'chrome120',
    outfile,
    nodePaths: [path.join(here, 'node_modules')],
    define: { global: 'globalThis', 'process.env.NODE_ENV': '"production"' },
    logLevel: 'error',
  });
  bundle = readFileSync(outfile, 'utf8');
  relay = await startRelay();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
  if (buildDir) rmSync(buildDir, { recursive: true, force: true });
});

/** Opens a page with the SDK loaded and `window.sdkHelpers` defined. */
async function sdkPage(ctx) {
  const { page, serverName } = await openPage(ctx, relay.url);
  await page.addScriptTag({ content: bundle });
  await page.evaluate((password) => {
    const sdk = window.matrixcs;
    for (const l of Object.values(sdk.logger?.getLoggers?.() ?? {})) l.setLevel?.('silent');
    window.sdkHelpers = {
      async register(username) {
        const anon = sdk.createClient({ baseUrl: location.origin });
        try {
          await anon.registerRequest({ username, password });
          throw new Error('registration without auth succeeded; expected a 401 with flows');
        } catch (e) {
          if (e.httpStatus !== 401 || !e.data?.session) throw e;
          return anon.registerRequest({ username, password, auth: { type: 'm.login.dummy', session: e.data.session } });
        }
      },
      async login(username) {
        const anon = sdk.createClient({ baseUrl: location.origin });
        const r = await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password });
        const client = sdk.createClient({
          baseUrl: location.origin,
          userId: r.user_id,
          deviceId: r.device_id,
          accessToken: r.access_token,
          store: new sdk.MemoryStore(),
        });
        await client.startClient({ initialSyncLimit: 20, pollTimeout: 30000 });
        await new Promise((resolve, reject) => {
          const check = (state, _prev, data) => {
            if (state === 'PREPARED' || state === 'SYNCING') resolve();
            if (state === 'ERROR') reject(new Error(`sync failed: ${data?.error?.message}`));
          };
          client.on(sdk.ClientEvent.Sync, check);
          check(client.getSyncState());
        });
        window.client = client;
        return r.user_id;
      },
      /** Resolves with the time a remote message with `body` arrives in the live timeline. */
      nextMessage(roomId, body) {
        const client = window.client;
        return new Promise((resolve) => {
          const listener = (event, room) => {
            if (room?.roomId === roomId && event.getContent()?.body === body && !event.isSending() && event.status === null) {
              client.off(sdk.RoomEvent.Timeline, listener);
              resolve({ at: performance.timeOrigin + performance.now(), sender: event.getSender() });
            }
          };
          client.on(sdk.RoomEvent.Timeline, listener);
        });
      },
      bodies(roomId) {
        return window.client
          .getRoom(roomId)
          .getLiveTimeline()
          .getEvents()
          .filter((e) => e.getType() === 'm.room.message' && e.status === null)
          .map((e) => e.getContent().body);
      },
    };
  }, PASSWORD);
  return { page, serverName };
}

test('matrix-js-sdk in the page: login, create room, send, sync wake-up, second user joins and replies', async () => {
  const ctx = await browser.newContext();
  try {
    const { page: a, serverName } = await sdkPage(ctx);
    const { page: b } = await sdkPage(ctx);
    const reg = await a.evaluate(() => window.sdkHelpers.register('alice'));
    assert.equal(reg.user_id, `@alice:${serverName}`);
    await b.evaluate(() => window.sdkHelpers.register('bob'));
    const alice = await a.evaluate(() => window.sdkHelpers.login('alice'));
    const bob = await b.evaluate(() => window.sdkHelpers.login('bob'));

    const roomId = await a.evaluate(async () => {
      const { room_id } = await window.client.createRoom({ name: 'sdk room', preset: 'private_chat' });
      await window.client.sendTextMessage(room_id, 'first from alice');
      return room_id;
    });
    assert.match(roomId, /^!/);

    // Bob is invited and joins; his client sees alice's earlier message.
    await a.evaluate(([r, u]) => window.client.invite(r, u), [roomId, bob]);
    await b.waitForFunction((r) => window.client.getRoom(r)?.getMyMembership() === 'invite', roomId, { timeout: 15000 });
    await b.evaluate((r) => window.client.joinRoom(r), roomId);
    await b.waitForFunction((r) => window.sdkHelpers.bodies(r).includes('first from alice'), roomId, { timeout: 15000 });

    // Sync wake-up: alice's long-poll (30 s timeout) returns as soon as bob replies.
    for (let i = 0; i < 3; i++) {
      const body = `reply ${i} from bob`;
      const arrival = a.evaluate(([r, t]) => window.sdkHelpers.nextMessage(r, t), [roomId, body]);
      await new Promise((r) => setTimeout(r, 300)); // let alice's /sync settle into its long-poll
      const sentAt = await b.evaluate(async ([r, t]) => {
        const at = performance.timeOrigin + performance.now();
        await window.client.sendTextMessage(r, t);
        return at;
      }, [roomId, body]);
      const got = await arrival;
      assert.equal(got.sender, bob);
      const latency = got.at - sentAt;
      assert.ok(latency < 2000, `alice's sync woke ${Math.round(latency)} ms after bob's send (poll timeout 30 s)`);
    }
    assert.deepEqual(await a.evaluate((r) => window.sdkHelpers.bodies(r), roomId), [
      'first from alice',
      'reply 0 from bob',
      'reply 1 from bob',
      'reply 2 from bob',
    ]);
    const members = await a.evaluate((r) => window.client.getRoom(r).getJoinedMembers().map((m) => m.userId).sort(), roomId);
    assert.deepEqual(members, [alice, bob].sort());
    await a.evaluate(() => window.client.stopClient());
    await b.evaluate(() => window.client.stopClient());
    assert.deepEqual(a.errors, []);
    assert.deepEqual(b.errors, []);
  } finally {
    await ctx.close();
  }
});
