// The page's chat client, driven as a person would: register, rooms, messages, two users.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  apiOk,
  createRoomUi,
  launchBrowser,
  loginUi,
  messages,
  openPage,
  openRoomUi,
  registerUi,
  sendUi,
  startRelay,
  until,
  untilSelector,
  waitForMessage,
  waitForRoom,
  waitForSection,
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

async function withContext(options, body) {
  const ctx = await browser.newContext(options);
  try {
    await body(ctx);
  } finally {
    await ctx.close();
  }
}

const token = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('hearth.session')).accessToken);

test('register, create a room and send a message through the page UI', () =>
  withContext({ viewport: { width: 375, height: 740 } }, async (ctx) => {
    const { page, serverName } = await openPage(ctx, relay.url);
    const me = await registerUi(page, 'alice');
    assert.equal(me, `@alice:${serverName}`);
    const roomId = await createRoomUi(page, 'Lounge');
    assert.match(roomId, /^!/);
    await sendUi(page, 'hello from the page');
    await waitForMessage(page, 'hello from the page');
    // The message is on the server, not only in the page.
    const res = await apiOk(page, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=5`, undefined, await token(page));
    assert.ok(res.chunk.some((e) => e.content?.body === 'hello from the page'), JSON.stringify(res.chunk));
    // Phone width: the open room replaces the room list; back returns to it.
    assert.equal(await page.isVisible('#sidebar'), false);
    await page.click('#btn-back');
    assert.equal(await page.isVisible('#sidebar'), true);
    assert.match(await page.textContent(`#room-list li[data-room-id="${roomId}"]`), /Lounge/);
    const status = await page.evaluate(() => window.hearth.status());
    assert.equal(status.users, 1);
    assert.equal(status.rooms, 1);
    assert.deepEqual(page.errors, []);
  }));

test('a wrong password is refused and the right one logs back in', () =>
  withContext({}, async (ctx) => {
    const { page } = await openPage(ctx, relay.url);
    await registerUi(page, 'carol');
    const roomId = await createRoomUi(page, 'Notes');
    await sendUi(page, 'remember the milk');
    await waitForMessage(page, 'remember the milk');
    await page.click('#btn-logout');
    await waitForSection(page, 'auth');
    assert.equal(await page.evaluate(() => localStorage.getItem('hearth.session')), null);
    await loginUi(page, 'carol', 'not the password');
    await until(page, 'M_FORBIDDEN for a wrong password', () => document.getElementById('auth-error').textContent.includes('M_FORBIDDEN'));
    await loginUi(page, 'carol');
    await waitForSection(page, 'chat');
    await untilSelector(page, `#room-list li[data-room-id="${roomId}"]`, { what: `room ${roomId} in the room list` });
    await openRoomUi(page, roomId);
    await waitForMessage(page, 'remember the milk');
  }));

test('two users on one server chat in two pages, with invites, unread counts and members', () =>
  withContext({ viewport: { width: 1000, height: 760 } }, async (ctx) => {
    const { page: a, serverName } = await openPage(ctx, relay.url);
    const alice = await registerUi(a, 'alice');
    const { page: b } = await openPage(ctx, relay.url, { signedOut: true });
    const bob = await registerUi(b, 'bob');
    assert.equal(bob, `@bob:${serverName}`);

    const roomId = await createRoomUi(a, 'Kitchen');
    await a.click('#btn-invite');
    await a.fill('#invite-user', bob);
    await a.click('#form-invite button[value=ok]');
    await untilSelector(a, '#dlg-invite', { state: 'hidden', what: 'the invite dialog to close' });

    // Bob sees the invite live and accepts it.
    await untilSelector(b, `#invite-list li[data-room-id="${roomId}"]`, { what: `the invite to ${roomId}` });
    assert.match(await b.textContent(`#invite-list li[data-room-id="${roomId}"]`), /Kitchen/);
    await b.click(`#invite-list li[data-room-id="${roomId}"] button.primary`);
    await waitForRoom(b, roomId);

    await sendUi(b, 'hi alice, bob here');
    await waitForMessage(a, 'hi alice, bob here');
    await sendUi(a, 'welcome, bob');
    await waitForMessage(b, 'welcome, bob');
    await waitForMessage(a, 'welcome, bob');
    assert.deepEqual(await messages(b), ['hi alice, bob here', 'welcome, bob']);
    const senders = await a.$$eval('#events .msg:not(.pending)', (els) => els.map((e) => e.dataset.sender));
    assert.deepEqual(senders, [bob, alice]);

    // Member list.
    await a.click('#btn-members');
    const memberIds = () => a.$$eval('#member-list li', (els) => els.map((e) => e.dataset.userId));
    await until(a, 'two members in the member list', () => document.querySelectorAll('#member-list li').length === 2, undefined, { seen: memberIds });
    const members = await a.$$eval('#member-list li', (els) => els.map((e) => e.dataset.userId).sort());
    assert.deepEqual(members, [alice, bob].sort());
    await a.click('#btn-members-close');

    // Unread counts: alice looks at another room while bob writes.
    const otherRoom = await createRoomUi(a, 'Elsewhere');
    assert.notEqual(otherRoom, roomId);
    await sendUi(b, 'one');
    await sendUi(b, 'two');
    const badge = `#room-list li[data-room-id="${roomId}"] .badge`;
    const roomList = () => a.$$eval('#room-list li', (els) => els.map((e) => e.textContent));
    await until(a, 'an unread count of 2 on Kitchen', (sel) => document.querySelector(sel)?.textContent === '2', badge, { seen: roomList });
    await openRoomUi(a, roomId);
    await waitForMessage(a, 'two');
    await untilSelector(a, badge, { state: 'detached', what: 'the unread count to go once the room is open', seen: roomList });
    // The server agrees the room is read: the count stays at zero on the next sync.
    await sendUi(a, 'read them');
    await waitForMessage(b, 'read them');
    await waitForMessage(a, 'read them');
    assert.equal(await a.$(badge), null);
    assert.deepEqual(a.errors, []);
    assert.deepEqual(b.errors, []);
  }));

test('join a public room by alias and set a display name', () =>
  withContext({ viewport: { width: 1000, height: 760 } }, async (ctx) => {
    const { page: a, serverName } = await openPage(ctx, relay.url);
    await registerUi(a, 'alice');
    const roomId = await createRoomUi(a, 'Town square', { alias: 'square', isPublic: true });
    const { page: b } = await openPage(ctx, relay.url, { signedOut: true });
    const bob = await registerUi(b, 'bob');

    // Join errors stay in the dialog with the spec's errcode.
    await b.click('#btn-join');
    await b.fill('#join-target', `#nosuchroom:${serverName}`);
    await b.click('#form-join button[value=ok]');
    await until(b, 'M_NOT_FOUND for an unknown alias', () => document.querySelector('#form-join .error').textContent.includes('M_NOT_FOUND'));
    await b.fill('#join-target', `#square:${serverName}`);
    await b.click('#form-join button[value=ok]');
    await untilSelector(b, '#dlg-join', { state: 'hidden', what: 'the join dialog to close' });
    await waitForRoom(b, roomId);
    await until(b, 'the room name Town square', () => document.getElementById('room-name').textContent === 'Town square');

    await b.click('#btn-name');
    await b.fill('#name-input', 'Bobby Tables');
    await b.click('#form-name button[value=ok]');
    await untilSelector(b, '#dlg-name', { state: 'hidden', what: 'the display-name dialog to close' });
    assert.equal(await b.textContent('#me-name'), 'Bobby Tables');
    await sendUi(b, 'hello square');
    await waitForMessage(a, 'hello square');
    assert.equal(await a.textContent(`#events .msg[data-sender="${bob}"] .sender`), 'Bobby Tables');
    await a.click('#btn-members');
    await until(
      a,
      'Bobby Tables in the member list',
      (u) => document.querySelector(`#member-list li[data-user-id="${u}"] .member-name`)?.textContent === 'Bobby Tables',
      bob,
      { seen: () => a.$$eval('#member-list li', (els) => els.map((e) => e.textContent)) },
    );
  }));

test('scroll-back loads older messages in order', () =>
  withContext({ viewport: { width: 1000, height: 760 } }, async (ctx) => {
    const { page } = await openPage(ctx, relay.url);
    await registerUi(page, 'dave');
    const roomId = await createRoomUi(page, 'History');
    const tok = await token(page);
    const total = 75;
    for (let i = 0; i < total; i++) {
      await apiOk(page, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t${i}`, { msgtype: 'm.text', body: `line ${i}` }, tok);
    }
    // A fresh load gets only the newest page of the timeline.
    await page.reload();
    await waitForRoom(page, roomId);
    await waitForMessage(page, `line ${total - 1}`);
    const first = await messages(page);
    assert.ok(first.length < total, `initial sync returned all ${first.length} messages`);
    assert.ok(!first.includes('line 0'));
    const history = () =>
      page.evaluate(() => ({
        messages: document.querySelectorAll('#events .msg:not(.pending) .body').length,
        button: document.getElementById('load-older').hidden ? 'hidden' : document.getElementById('load-older').textContent,
        start: !document.getElementById('timeline-start').hidden,
      }));
    for (let clicks = 0; ; clicks++) {
      // The timeline also loads older messages by itself when scrolled near its top: decide on
      // a settled timeline, with no load in flight.
      await until(page, 'no history load in flight', () => document.getElementById('load-older').textContent !== 'Loading…', undefined, { seen: history });
      const shown = await messages(page);
      if (shown.includes('line 0')) break;
      assert.ok(clicks < 10, `line 0 not loaded after 10 clicks: ${JSON.stringify(await history())}`);
      // Clicking scrolls the button into view first, and that scroll may start the load (and the
      // last one hides the button before the click lands): what counts is that older messages
      // arrive, so the click is not awaited (a click left waiting fails when the page closes).
      page.click('#load-older').catch(() => {});
      await until(
        page,
        `more than ${shown.length} messages after clicking "Load older messages"`,
        (n) => document.querySelectorAll('#events .msg:not(.pending) .body').length > n,
        shown.length,
        { seen: history },
      );
    }
    const all = await messages(page);
    assert.deepEqual(all, Array.from({ length: total }, (_, i) => `line ${i}`));
    await untilSelector(page, '#timeline-start:not([hidden])', { what: 'the start of the timeline', seen: history });
    assert.equal(await page.isVisible('#load-older'), false);
  }));
