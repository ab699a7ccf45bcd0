// Two browser servers in one room through the relay: messages (in order), display names,
// typing notifications and read receipts each cross both ways, as the other side's client
// sees them.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Account, launchBrowser, openPage, pageCall, relayConnected, startRelay } from './harness.mjs';

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

test('messages, display names, typing and receipts cross both ways, in order', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url);
    const b = await openPage(ctxB, relay.url);
    assert.notEqual(a.serverName, b.serverName);
    const alice = await Account.register(pageCall(a.page), 'alice', 'alice');
    const bob = await Account.register(pageCall(b.page), 'bob', 'bob');
    await relayConnected(a.page);
    await relayConnected(b.page);

    const { room_id: room } = await alice.ok('POST', '/_matrix/client/v3/createRoom',
      { preset: 'private_chat', name: 'Both ways', invite: [bob.userId] });
    await bob.acceptInvite(room);
    await alice.syncUntil('bob\'s join', (s) => s.rooms?.join?.[room]?.timeline?.events
      ?.some((e) => e.type === 'm.room.member' && e.state_key === bob.userId && e.content.membership === 'join'));

    // Messages: five each way, each side's after the other's arrived; both servers end with
    // the same order.
    const fromAlice = ['a1', 'a2', 'a3', 'a4', 'a5'];
    const fromBob = ['b1', 'b2', 'b3', 'b4', 'b5'];
    for (const t of fromAlice) await alice.say(room, t);
    await bob.waitForBodies(room, fromAlice);
    for (const t of fromBob) await bob.say(room, t);
    await alice.waitForBodies(room, fromBob);
    await bob.waitForBodies(room, fromBob);
    const expected = [...fromAlice, ...fromBob];
    assert.deepEqual(await alice.bodies(room), expected, 'alice\'s server, in order');
    assert.deepEqual(await bob.bodies(room), expected, 'bob\'s server, in order');

    // Display names: the profile change becomes a member event on the other server.
    const memberName = (account, user) => account
      .req('GET', `/_matrix/client/v3/rooms/${enc(room)}/state/m.room.member/${enc(user)}`)
      .then((r) => r.body?.displayname);
    await alice.ok('PUT', `/_matrix/client/v3/profile/${enc(alice.userId)}/displayname`, { displayname: 'Alice A.' });
    await bob.ok('PUT', `/_matrix/client/v3/profile/${enc(bob.userId)}/displayname`, { displayname: 'Bob B.' });
    await bob.syncUntil('alice\'s new display name in the timeline', (s) => s.rooms?.join?.[room]?.timeline?.events
      ?.some((e) => e.type === 'm.room.member' && e.sender === alice.userId && e.content.displayname === 'Alice A.'));
    await alice.syncUntil('bob\'s new display name in the timeline', (s) => s.rooms?.join?.[room]?.timeline?.events
      ?.some((e) => e.type === 'm.room.member' && e.sender === bob.userId && e.content.displayname === 'Bob B.'));
    assert.equal(await memberName(bob, alice.userId), 'Alice A.');
    assert.equal(await memberName(alice, bob.userId), 'Bob B.');
    const names = await bob.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`);
    assert.equal(names.joined[alice.userId]?.display_name, 'Alice A.');

    // Typing: on, seen on the other side; off, seen too.
    const typing = (s) => s.rooms?.join?.[room]?.ephemeral?.events?.find((e) => e.type === 'm.typing')?.content.user_ids;
    await alice.ok('PUT', `/_matrix/client/v3/rooms/${enc(room)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 30000 });
    await bob.syncUntil('alice typing', (s) => typing(s)?.includes(alice.userId));
    await alice.ok('PUT', `/_matrix/client/v3/rooms/${enc(room)}/typing/${enc(alice.userId)}`, { typing: false });
    await bob.syncUntil('alice no longer typing', (s) => typing(s) && !typing(s).includes(alice.userId));
    await bob.ok('PUT', `/_matrix/client/v3/rooms/${enc(room)}/typing/${enc(bob.userId)}`, { typing: true, timeout: 30000 });
    await alice.syncUntil('bob typing', (s) => typing(s)?.includes(bob.userId));

    // Read receipts: each reads the other's last message.
    const lastOf = async (account, sender) => (await account.timeline(room)).findLast((e) => e.sender === sender && e.type === 'm.room.message').event_id;
    const receipt = (s, eventId, user) => s.rooms?.join?.[room]?.ephemeral?.events
      ?.some((e) => e.type === 'm.receipt' && e.content[eventId]?.['m.read']?.[user]);
    const aliceLast = await lastOf(bob, alice.userId);
    await bob.ok('POST', `/_matrix/client/v3/rooms/${enc(room)}/receipt/m.read/${enc(aliceLast)}`, {});
    await alice.syncUntil('bob\'s read receipt', (s) => receipt(s, aliceLast, bob.userId));
    const bobLast = await lastOf(alice, bob.userId);
    await alice.ok('POST', `/_matrix/client/v3/rooms/${enc(room)}/receipt/m.read/${enc(bobLast)}`, {});
    await bob.syncUntil('alice\'s read receipt', (s) => receipt(s, bobLast, alice.userId));

    assert.deepEqual([...a.page.errors, ...b.page.errors], []);
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
