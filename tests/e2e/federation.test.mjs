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
  registerUi,
  relayConnected as connected,
  relayMetric,
  sendUi,
  startRelay,
  until,
  untilSelector,
  waitForMessage,
  waitForRoom,
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

/** Fills a dialog's first text field and submits it with Enter, as a person would. */
async function submitWithEnter(page, field, value, dialogId) {
  await page.fill(field, value);
  await page.press(field, 'Enter');
  await untilSelector(page, `#${dialogId}`, { state: 'hidden', what: `the ${dialogId} dialog to close` });
}

test('the chat UI invites and joins across servers, and shows remote names', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url, { signedOut: true });
    const b = await openPage(ctxB, relay.url, { signedOut: true });
    const alice = await registerUi(a.page, 'alice');
    const bob = await registerUi(b.page, 'bob');
    assert.equal(alice, `@alice:${a.serverName}`);
    assert.equal(bob, `@bob:${b.serverName}`);
    await Promise.all([connected(a.page), connected(b.page)]);

    // Display names first, so each side's member event carries one.
    for (const [page, name] of [[a.page, 'Alice Liddell'], [b.page, 'Bob Tables']]) {
      await page.bringToFront();
      await page.click('#btn-name');
      await submitWithEnter(page, '#name-input', name, 'dlg-name');
    }

    // Enter in "New room" creates the room (it used to press Cancel).
    await a.page.bringToFront();
    await a.page.click('#btn-create');
    await a.page.fill('#create-name', 'Over the relay');
    await a.page.press('#create-name', 'Enter');
    await untilSelector(a.page, '#dlg-create', { state: 'hidden', what: 'the create-room dialog to close' });
    await until(a.page, 'the new room to open', () => document.getElementById('room-name').textContent === 'Over the relay');
    const roomId = await a.page.evaluate(() => document.getElementById('room-id').title);
    assert.match(roomId, /^!/);

    await a.page.click('#btn-invite');
    await submitWithEnter(a.page, '#invite-user', bob, 'dlg-invite');

    // Bob joins by id through the join dialog (the invite also shows; joining by id is the path
    // for a room one was told about).
    await untilSelector(b.page, `#invite-list li[data-room-id="${roomId}"]`, { what: `the invite to ${roomId}` });
    await b.page.bringToFront();
    await b.page.click('#btn-join');
    await submitWithEnter(b.page, '#join-target', roomId, 'dlg-join');
    await waitForRoom(b.page, roomId);

    await sendUi(b.page, 'hi from the other server');
    await a.page.bringToFront();
    await waitForMessage(a.page, 'hi from the other server');
    await until(
      a.page,
      "bob's message to be signed with his display name",
      (u) => [...document.querySelectorAll(`#events .msg[data-sender="${u}"] .sender`)].some((e) => e.textContent === 'Bob Tables'),
      bob,
    );
    await sendUi(a.page, 'and back');
    await b.page.bringToFront();
    await waitForMessage(b.page, 'and back');

    // Each side shows the other's display name, for a user on another server.
    for (const [page, other, name] of [[a.page, bob, 'Bob Tables'], [b.page, alice, 'Alice Liddell']]) {
      await page.bringToFront();
      await page.click('#btn-members');
      await until(
        page,
        `${name} in the member list`,
        ([u, n]) => document.querySelector(`#member-list li[data-user-id="${u}"] .member-name`)?.textContent === n,
        [other, name],
        { seen: () => page.$$eval('#member-list li', (els) => els.map((e) => e.textContent)) },
      );
      await page.click('#btn-members-close');
    }
    assert.deepEqual(a.page.errors, []);
    assert.deepEqual(b.page.errors, []);
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});

test('the status lists the servers this one federates with, and the page can name another relay', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const other = await startRelay();
  try {
    const a = await openPage(ctxA, relay.url, { signedOut: true });
    const b = await openPage(ctxB, relay.url, { signedOut: true });
    await Promise.all([connected(a.page), connected(b.page)]);
    const alice = await registerUi(a.page, 'alice');
    const bob = await registerApi(b.page, 'bob');
    const { accessToken: token } = await a.page.evaluate(() => JSON.parse(localStorage.getItem('hearth.session')));
    const { room_id: room } = await apiOk(a.page, 'POST', '/_matrix/client/v3/createRoom', { preset: 'public_chat' }, token);
    await apiOk(b.page, 'POST', `/_matrix/client/v3/join/${enc(room)}`, {}, bob.access_token);
    assert.ok(alice);

    // The status panel names b's server as a peer.
    await a.page.bringToFront();
    await a.page.click('#status-toggle');
    await untilSelector(a.page, `#st-peers li[data-server="${b.serverName}"]`, { what: "b's server in the status panel" });
    assert.match(await a.page.textContent(`#st-peers li[data-server="${b.serverName}"]`), /1 room/);

    // Another relay, named in the status panel's dialog (Enter submits): a connects there,
    // and stays there after a reload.
    const before = await relayMetric(other.url, 'hearth_relay_connections');
    await a.page.click('#st-relay-change');
    await submitWithEnter(a.page, '#relay-url', other.url, 'dlg-relay');
    await eventually('a to connect to the other relay', async () => {
      const s = await a.page.evaluate(() => window.hearth.status());
      return (s.relay === 'connected' && s.relayUrl === other.url && (await relayMetric(other.url, 'hearth_relay_connections')) === before + 1) || null;
    });
    await a.page.reload();
    await a.page.evaluate(() => window.hearth.ready);
    await eventually('a to be on the other relay after a reload', async () => {
      const s = await a.page.evaluate(() => window.hearth.status());
      return (s.relay === 'connected' && s.relayUrl === other.url) || null;
    });
    // An empty field goes back to the page's own relay.
    assert.equal((await a.page.evaluate(() => window.hearth.setRelay('ftp://nope').catch((e) => e.message))), 'a relay URL starts with http:// or https://');
    await a.page.evaluate(() => window.hearth.setRelay(null));
    await eventually('a to be back on the page\'s relay', async () => {
      const s = await a.page.evaluate(() => window.hearth.status());
      return (s.relay === 'connected' && s.relayUrl === relay.url && (await relayMetric(other.url, 'hearth_relay_connections')) === before) || null;
    });
  } finally {
    await ctxA.close();
    await ctxB.close();
    await other.stop();
  }
});
