// Two browser servers (two browser contexts, each its own IndexedDB and SharedWorker) federate
// through the real relay: an invite across servers, the join, and messages both ways, as each page's client sees them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  HEX64,
  apiOk,
  api,
  eventually,
  launchBrowser,
  openPage,
  registerApi,
  startRelay,
} from './harness.mjs';

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

const enc = encodeURIComponent;

test('two browser servers share a room through the relay', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url, { signedOut: true });
    const b = await openPage(ctxB, relay.url, { signedOut: true });
    assert.match(a.serverName, HEX64);
    assert.match(b.serverName, HEX64);
    assert.notEqual(a.serverName, b.serverName);
    const alice = await registerApi(a.page, 'alice');
    const bob = await registerApi(b.page, 'bob');

    // Both servers must be connected to the relay before a request can cross it.
    for (const { page } of [a, b]) {
      await eventually('the server to connect to the relay', async () => {
        const s = await page.evaluate(() => window.hearth.status());
        return s.relay === 'connected' || null;
      });
    }

    const { room_id: room } = await apiOk(a.page, 'POST', '/_matrix/client/v3/createRoom',
      { preset: 'private_chat', name: 'Across', invite: [bob.user_id] }, alice.access_token);
    // The invite reaches b's server and shows in bob's sync.
    await eventually('bob to see the invite', async () => {
      const s = await apiOk(b.page, 'GET', '/_matrix/client/v3/sync?timeout=0', undefined, bob.access_token);
      return s.rooms?.invite?.[room] ? true : null;
    });
    await apiOk(b.page, 'POST', `/_matrix/client/v3/join/${enc(room)}`, {}, bob.access_token);

    await apiOk(a.page, 'PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/t1`,
      { msgtype: 'm.text', body: 'hello from browser a' }, alice.access_token);
    await eventually('bob to get alice\'s message', async () => {
      const r = await api(b.page, 'GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?dir=b&limit=20`, undefined, bob.access_token);
      return r.body?.chunk?.some((e) => e.content?.body === 'hello from browser a') || null;
    });
    await apiOk(b.page, 'PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/t2`,
      { msgtype: 'm.text', body: 'hello from browser b' }, bob.access_token);
    await eventually('alice to get bob\'s message', async () => {
      const r = await api(a.page, 'GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?dir=b&limit=20`, undefined, alice.access_token);
      return r.body?.chunk?.some((e) => e.content?.body === 'hello from browser b') || null;
    });
    const members = await apiOk(a.page, 'GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`, undefined, alice.access_token);
    assert.deepEqual(Object.keys(members.joined).sort(), [alice.user_id, bob.user_id].sort());
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
