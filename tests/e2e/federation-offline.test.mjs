// A browser server that is away misses nothing: what is sent to it while its browser is closed
// waits in the relay's store-and-forward queue and arrives, in order and once, when it comes
// back; the queue (`--data`) outlives a graceful relay restart, and the pages reconnect to the
// restarted relay by themselves.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  Account,
  eventually,
  launchBrowser,
  launchPersistent,
  openPage,
  pageCall,
  relayConnected,
  relayMetric,
  startRelay,
  uniqueName,
} from './harness.mjs';

let relay;
let browser;
let data;
before(async () => {
  data = mkdtempSync(path.join(tmpdir(), 'hearth-relay-data-'));
  relay = await startRelay({ args: ['--data', data] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
  if (data) rmSync(data, { recursive: true, force: true });
});

const QUEUED = 'hearth_relay_requests_total{outcome="queued"}';

/**
 * Alice on a page of the shared browser, Bob on a browser of his own with a persistent
 * profile, in one room; resolves once each has seen the other's first message.
 */
async function pair(profile) {
  const ctxA = await browser.newContext();
  const a = await openPage(ctxA, relay.url);
  const alice = await Account.register(pageCall(a.page), uniqueName('alice'), 'alice');
  const ctxB = await launchPersistent(profile);
  const b = await openPage(ctxB, relay.url);
  const bob = await Account.register(pageCall(b.page), uniqueName('bob'), 'bob');
  await relayConnected(a.page);
  await relayConnected(b.page);
  const { room_id: room } = await alice.ok('POST', '/_matrix/client/v3/createRoom',
    { preset: 'private_chat', invite: [bob.userId] });
  await bob.acceptInvite(room);
  await bob.say(room, 'bob is here');
  await alice.waitForBodies(room, ['bob is here']);
  await alice.say(room, 'alice is here');
  await bob.waitForBodies(room, ['alice is here']);
  return { ctxA, a, alice, ctxB, b, bob, room };
}

/**
 * Sends `texts` as Alice while Bob is away, each only once the relay has stored the
 * transaction before it, so each is in the relay's queue before Bob returns.
 */
async function sendWhileAway(alice, room, texts) {
  let queued = await relayMetric(relay.url, QUEUED);
  for (const t of texts) {
    await alice.say(room, t);
    const was = queued;
    queued = await eventually(`the relay to store the transaction with "${t}"`, async () => {
      const n = await relayMetric(relay.url, QUEUED);
      return n > was ? n : null;
    }, { seen: () => `${was} queued`, every: 20 });
  }
}

/** Bob's browser again, on his profile; his session (token) still works there. */
async function reopenBob(profile, bob) {
  const ctxB = await launchPersistent(profile);
  const b = await openPage(ctxB, relay.url);
  bob.call = pageCall(b.page);
  const me = await bob.ok('GET', '/_matrix/client/v3/account/whoami');
  assert.equal(me.user_id, bob.userId);
  return { ctxB, b };
}

/** Bob's server has exactly `expected` as the room's messages, each event once. */
async function assertExactlyOnce(bob, room, expected) {
  await bob.waitForBodies(room, expected);
  const events = (await bob.timeline(room)).filter((e) => e.type === 'm.room.message');
  const ids = events.map((e) => e.event_id);
  assert.equal(new Set(ids).size, ids.length, 'no event twice');
  assert.deepEqual(events.map((e) => e.content.body), expected, 'every message once, in order');
}

test('twenty messages sent while the browser is closed arrive in order, once', async () => {
  const profile = mkdtempSync(path.join(tmpdir(), 'hearth-profile-'));
  let ctxs = [];
  try {
    const { ctxA, alice, ctxB, bob, room } = await pair(profile);
    ctxs = [ctxA];
    await ctxB.close();
    const texts = Array.from({ length: 20 }, (_, i) => `away ${i + 1}`);
    await sendWhileAway(alice, room, texts);
    assert.ok(await relayMetric(relay.url, 'hearth_relay_queued_transactions') >= texts.length, 'held by the relay');

    const { ctxB: again, b } = await reopenBob(profile, bob);
    ctxs.push(again);
    await assertExactlyOnce(bob, room, ['bob is here', 'alice is here', ...texts]);
    await eventually('the relay to hand over its queue', async () => (await relayMetric(relay.url, 'hearth_relay_queued_transactions')) === 0);
    // Alive both ways after the return.
    await bob.say(room, 'back');
    await alice.waitForBodies(room, ['back']);
    assert.deepEqual(b.page.errors, []);
  } finally {
    for (const c of ctxs) await c.close();
    rmSync(profile, { recursive: true, force: true });
  }
});

test('transactions queued for an absent server survive a relay restart', async () => {
  const profile = mkdtempSync(path.join(tmpdir(), 'hearth-profile-'));
  let ctxs = [];
  try {
    const { ctxA, a, alice, ctxB, bob, room } = await pair(profile);
    ctxs = [ctxA];
    await ctxB.close();
    const texts = Array.from({ length: 5 }, (_, i) => `before the restart ${i + 1}`);
    await sendWhileAway(alice, room, texts);
    const stored = await relayMetric(relay.url, 'hearth_relay_queued_transactions');
    assert.ok(stored >= texts.length, `held by the relay: ${stored}`);

    // Graceful stop, then the same port (the pages' origin) and the same data directory.
    await relay.stop();
    relay = await startRelay({ port: relay.port, args: ['--data', data] });
    assert.equal(await relayMetric(relay.url, 'hearth_relay_queued_transactions'), stored, 'the queue as it was');

    // Alice's page finds the relay again by itself (the only server there), and sends
    // through it.
    await eventually('alice\'s server to connect to the restarted relay',
      async () => (await relayMetric(relay.url, 'hearth_relay_connections')) === 1);
    await relayConnected(a.page);
    await alice.say(room, 'after the restart');

    const { ctxB: again } = await reopenBob(profile, bob);
    ctxs.push(again);
    await assertExactlyOnce(bob, room, ['bob is here', 'alice is here', ...texts, 'after the restart']);
    await bob.say(room, 'all here');
    await alice.waitForBodies(room, ['all here']);
  } finally {
    for (const c of ctxs) await c.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
