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
import { PASSWORD, launchBrowser, openPage, startRelay, until, within } from './harness.mjs';

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
        // The page's own fetch, counting the /sync long-polls in flight, so the test can tell
        // when the client waits in one.
        window.sdkPolls = 0;
        const fetchFn = (input, init) => {
          const url = typeof input === 'string' ? input : (input.url ?? String(input));
          if (!/\/sync\?/.test(url) || !/[?&]since=/.test(url) || /[?&]timeout=0(&|$)/.test(url)) return fetch(input, init);
          window.sdkPolls++;
          return fetch(input, init).finally(() => window.sdkPolls--);
        };
        const client = sdk.createClient({
          baseUrl: location.origin,
          fetchFn,
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
    const inPage = (page, what, fn, arg) => within(what, page.evaluate(fn, arg));
    const reg = await inPage(a, 'alice to register', () => window.sdkHelpers.register('alice'));
    assert.equal(reg.user_id, `@alice:${serverName}`);
    await inPage(b, 'bob to register', () => window.sdkHelpers.register('bob'));
    const alice = await inPage(a, "alice's client to log in and sync", () => window.sdkHelpers.login('alice'));
    const bob = await inPage(b, "bob's client to log in and sync", () => window.sdkHelpers.login('bob'));

    const roomId = await inPage(a, 'alice to create a room and write in it', async () => {
      const { room_id } = await window.client.createRoom({ name: 'sdk room', preset: 'private_chat' });
      await window.client.sendTextMessage(room_id, 'first from alice');
      return room_id;
    });
    assert.match(roomId, /^!/);

    // Bob is invited and joins; his client sees alice's earlier message.
    await inPage(a, 'alice to invite bob', ([r, u]) => window.client.invite(r, u), [roomId, bob]);
    await until(b, "the invite in bob's client", (r) => window.client.getRoom(r)?.getMyMembership() === 'invite', roomId, {
      seen: () => b.evaluate((r) => window.client.getRoom(r)?.getMyMembership() ?? 'no such room', roomId),
    });
    await inPage(b, 'bob to join', (r) => window.client.joinRoom(r), roomId);
    await until(b, "alice's first message in bob's client", (r) => window.sdkHelpers.bodies(r).includes('first from alice'), roomId, {
      seen: () => b.evaluate((r) => window.sdkHelpers.bodies(r), roomId),
    });

    // Sync wake-up: alice's long-poll (30 s timeout) returns as soon as bob replies.
    const aliceSync = () => a.evaluate((r) => ({ polls: window.sdkPolls, state: window.client.getSyncState(), bodies: window.sdkHelpers.bodies(r) }), roomId);
    for (let i = 0; i < 3; i++) {
      const body = `reply ${i} from bob`;
      await a.evaluate(([r, t]) => {
        window.arrival = window.sdkHelpers.nextMessage(r, t);
      }, [roomId, body]);
      // Bob sends once alice's client waits in its long-poll (it starts the next one when it
      // has handled the last answer).
      await until(a, "alice's client to wait in a /sync long-poll", () => window.sdkPolls > 0, undefined, { seen: aliceSync });
      const sentAt = await inPage(b, `bob to send "${body}"`, async ([r, t]) => {
        const at = performance.timeOrigin + performance.now();
        await window.client.sendTextMessage(r, t);
        return at;
      }, [roomId, body]);
      const got = await within(`"${body}" in alice's client`, a.evaluate(() => window.arrival), { seen: aliceSync });
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
