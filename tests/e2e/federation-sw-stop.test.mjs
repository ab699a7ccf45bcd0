// Federation lives in the server's SharedWorker, not in the service worker: with Bob's service
// worker stopped (CDP), a message Alice sends still reaches his server, and Bob can send after.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Account, eventually, launchBrowser, openPage, pageCall, relayConnected, startRelay } from './harness.mjs';

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

test('a stopped service worker does not stop federation', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url);
    const b = await openPage(ctxB, relay.url);
    const alice = await Account.register(pageCall(a.page), 'alice', 'alice');
    const bob = await Account.register(pageCall(b.page), 'bob', 'bob');
    await relayConnected(a.page);
    await relayConnected(b.page);
    const { room_id: room } = await alice.ok('POST', '/_matrix/client/v3/createRoom',
      { preset: 'private_chat', invite: [bob.userId] });
    await bob.acceptInvite(room);
    await bob.say(room, 'before the stop');
    await alice.waitForBodies(room, ['before the stop']);

    // Stop Bob's service worker, as the browser does to an idle one.
    const cdp = await ctxB.newCDPSession(b.page);
    const running = new Map(); // versionId -> runningStatus
    cdp.on('ServiceWorker.workerVersionUpdated', ({ versions }) => {
      for (const v of versions) running.set(v.versionId, v.runningStatus);
    });
    await cdp.send('ServiceWorker.enable');
    await eventually('the browser to report bob\'s service worker', () => running.size > 0, { seen: () => [...running] });
    await cdp.send('ServiceWorker.stopAllWorkers');
    const allStopped = () => [...running.values()].every((s) => s === 'stopped');
    await eventually('bob\'s service worker to stop', allStopped, { seen: () => [...running] });

    // Alice's message reaches Bob's server while nothing runs the service worker: ask the
    // server worker directly (hearth.fetch), which does not wake it.
    await alice.say(room, 'while it sleeps');
    let bodies = [];
    await eventually('bob\'s server to get the message', async () => {
      bodies = await b.page.evaluate(async ([room, token]) => {
        const r = await window.hearth.fetch(`/_matrix/client/v3/rooms/${room}/messages?dir=b&limit=50`,
          { headers: { Authorization: `Bearer ${token}` } });
        return (await r.json()).chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body).reverse();
      }, [enc(room), bob.token]);
      return bodies.includes('while it sleeps') || null;
    }, { seen: () => bodies, every: 100 });
    assert.ok(allStopped(), 'the message came while the service worker was stopped');
    assert.equal((await b.page.evaluate(() => window.hearth.status())).relay, 'connected');

    // Bob's next request goes through the service worker (which restarts), and so does his reply.
    await bob.say(room, 'awake again');
    await alice.waitForBodies(room, ['awake again']);
    assert.deepEqual(await alice.bodies(room), ['before the stop', 'while it sleeps', 'awake again']);
    assert.ok(!allStopped(), 'the service worker restarted for the request');
    await cdp.detach();
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
