// Nothing acknowledged is lost: a reload and a browser restarted on the same profile keep the
// server's identity, accounts, the page's session, rooms and messages.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  createRoomUi,
  launchBrowser,
  launchPersistent,
  loginUi,
  messages,
  openPage,
  openRoomUi,
  registerUi,
  sendUi,
  startRelay,
  untilSelector,
  waitForMessage,
  waitForRoom,
  waitForSection,
  within,
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

test('a reload keeps the server name, the session, rooms and messages', async () => {
  const ctx = await browser.newContext();
  try {
    const { page, serverName } = await openPage(ctx, relay.url);
    await registerUi(page, 'erin');
    const roomId = await createRoomUi(page, 'Diary');
    for (const text of ['monday', 'tuesday', 'wednesday']) {
      await sendUi(page, text);
      await waitForMessage(page, text);
    }
    await page.reload();
    const again = await within('hearth.ready after the reload', page.evaluate(() => window.hearth.ready));
    assert.equal(again.serverName, serverName);
    // Still logged in, and the last room reopens with its messages.
    await waitForSection(page, 'chat');
    await waitForRoom(page, roomId);
    await waitForMessage(page, 'wednesday');
    assert.deepEqual(await messages(page), ['monday', 'tuesday', 'wednesday']);
    // New writes continue after the old ones.
    await sendUi(page, 'thursday');
    await waitForMessage(page, 'thursday');
    assert.deepEqual(await messages(page), ['monday', 'tuesday', 'wednesday', 'thursday']);
  } finally {
    await ctx.close();
  }
});

test('a browser restarted on the same profile keeps everything', async () => {
  const profile = mkdtempSync(path.join(tmpdir(), 'hearth-profile-'));
  try {
    let serverName;
    let roomId;
    {
      const ctx = await launchPersistent(profile);
      const opened = await openPage(ctx, relay.url);
      serverName = opened.serverName;
      const page = opened.page;
      await registerUi(page, 'frank');
      roomId = await createRoomUi(page, 'Persistent');
      await sendUi(page, 'before the restart');
      await waitForMessage(page, 'before the restart');
      await ctx.close();
    }
    {
      const ctx = await launchPersistent(profile);
      try {
        const { page, serverName: after } = await openPage(ctx, relay.url);
        assert.equal(after, serverName, 'the server keeps its key and name');
        await waitForRoom(page, roomId);
        await waitForMessage(page, 'before the restart');
        await sendUi(page, 'after the restart');
        await waitForMessage(page, 'after the restart');
        assert.deepEqual(await messages(page), ['before the restart', 'after the restart']);
        // The account (password hash included) is in IndexedDB, not only the page's token.
        await page.click('#btn-logout');
        await waitForSection(page, 'auth');
        await loginUi(page, 'frank');
        await waitForSection(page, 'chat');
        await untilSelector(page, `#room-list li[data-room-id="${roomId}"]`, { what: `room ${roomId} in the room list` });
        await openRoomUi(page, roomId);
        await waitForMessage(page, 'after the restart');
        const status = await page.evaluate(() => window.hearth.status());
        assert.equal(status.users, 1);
        assert.equal(status.rooms, 1);
      } finally {
        await ctx.close();
      }
    }
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
});
