// Three servers in one room through the relay: two browser servers and a native one
// (`hearth-testhost --relay`). After a message from each, all three hold the same room state.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  Account,
  eventually,
  hostCall,
  launchBrowser,
  openPage,
  pageCall,
  relayConnected,
  relayMetric,
  startRelay,
  startTestHost,
  stateIds,
} from './harness.mjs';

let relay;
let browser;
let host;
before(async () => {
  relay = await startRelay();
  browser = await launchBrowser();
  host = await startTestHost(relay.url);
});
after(async () => {
  await host?.stop();
  await browser?.close();
  await relay?.stop();
});

const enc = encodeURIComponent;

test('two browser servers and a native one agree on the room state', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url);
    const b = await openPage(ctxB, relay.url);
    const alice = await Account.register(pageCall(a.page), 'alice', 'alice');
    const bob = await Account.register(pageCall(b.page), 'bob', 'bob');
    const carol = await Account.register(hostCall(host.url), 'carol', 'carol (testhost)');
    assert.ok(carol.userId.endsWith(`:${host.serverName}`));
    await relayConnected(a.page);
    await relayConnected(b.page);
    await eventually('three servers on the relay', async () => (await relayMetric(relay.url, 'hearth_relay_connections')) === 3);

    const { room_id: room } = await alice.ok('POST', '/_matrix/client/v3/createRoom',
      { preset: 'private_chat', name: 'Three', invite: [bob.userId, carol.userId] });
    await bob.acceptInvite(room);
    await carol.acceptInvite(room);

    const all = [alice, bob, carol];
    for (const who of all) await who.say(room, `hello from ${who.label}`);
    const texts = all.map((who) => `hello from ${who.label}`);
    for (const who of all) await who.waitForBodies(room, texts);

    const everyone = [alice.userId, bob.userId, carol.userId].sort();
    let states = [];
    await eventually('the three servers to agree on the room state', async () => {
      states = await Promise.all(all.map((who) => stateIds(who, room)));
      const same = states.every((s) => JSON.stringify(s) === JSON.stringify(states[0]));
      const members = Object.keys(states[0]).filter((k) => k.startsWith('m.room.member|')).length;
      return (same && members === 3) || null;
    }, { seen: () => states, every: 100 });
    assert.equal(states[0]['m.room.name|'] !== undefined, true);
    for (const who of all) {
      const { joined } = await who.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`);
      assert.deepEqual(Object.keys(joined).sort(), everyone, `${who.label}'s joined members`);
    }
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
