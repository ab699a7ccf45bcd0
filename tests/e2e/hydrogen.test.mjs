// Hydrogen (npm's hydrogen-view-sdk, its full app, unmodified) against the tab's Hearth server,
// talking to Hydrogen on another browser server through the relay: login, an invite across
// servers accepted in Hydrogen, messages both ways typed into Hydrogen, and a picture Bob sends
// with Hydrogen plus his avatar, which Alice's Hydrogen loads with plain <img> requests to
// /_matrix/client/v1/media/...: Hearth's service worker adds the page's access token
// (docs/media-auth.md), and Alice's server fetches the bytes from Bob's over federation.
//
// The page is www/hydrogen/, which `cargo xtask` builds from clients/hydrogen/.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  PASSWORD,
  WWW,
  api,
  apiOk,
  eventually,
  launchBrowser,
  openPage,
  registerApi,
  startRelay,
  until,
} from './harness.mjs';

let relay;
let browser;
before(async () => {
  const built = path.join(WWW, 'hydrogen/main.js');
  if (!existsSync(built)) throw new Error(`${built} is missing: node clients/hydrogen/build.mjs (cargo xtask www does it)`);
  relay = await startRelay();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await relay?.stop();
});

const enc = encodeURIComponent;

/** What Hydrogen's page shows, for the error message of a wait that failed. */
function hydrogenState(page) {
  return page.evaluate(() => ({
    url: location.hash,
    status: document.querySelector('.SessionLoadStatusView, .SessionStatusView:not(.hidden)')?.textContent || undefined,
    rooms: [...document.querySelectorAll('.RoomList li')].map((li) => li.textContent.trim()),
    messages: [...document.querySelectorAll('.Timeline_message')].slice(-6).map((m) => m.textContent.trim().slice(0, 80)),
    images: [...document.querySelectorAll('.Timeline img')].map((i) => ({ src: i.getAttribute('src'), w: i.naturalWidth })),
    errors: window.hearth?.lastError ?? undefined,
  }));
}

/** `until` with Hydrogen's state as what was seen. */
const hUntil = (page, what, fn, arg) => until(page, what, fn, arg, { seen: () => hydrogenState(page) });

/** A PNG of `w`×`h` in `color`, drawn in `page`; resolves to its bytes as base64. */
function pngBase64(page, w, h, color) {
  return page.evaluate(async ([w, h, color]) => {
    const canvas = new OffscreenCanvas(w, h);
    const g = canvas.getContext('2d');
    g.fillStyle = color;
    g.fillRect(0, 0, w, h);
    const bytes = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer());
    return btoa(String.fromCharCode(...bytes));
  }, [w, h, color]);
}

/** Uploads a PNG to the page's server through the API; resolves to its mxc URI. */
function uploadPng(page, token, base64) {
  return page.evaluate(async ([token, base64]) => {
    const body = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const r = await fetch('/_matrix/media/v3/upload?filename=avatar.png', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'image/png' },
      body,
    });
    if (!r.ok) throw new Error(`upload: ${r.status} ${await r.text()}`);
    return (await r.json()).content_uri;
  }, [token, base64]);
}

/** Signs `user` in with Hydrogen's own login screen (the homeserver field is the page's origin). */
async function hydrogenLogin(page, user) {
  await page.bringToFront();
  await page.fill('#username', user);
  await page.fill('#password', PASSWORD);
  await page.click('.PasswordLoginView button[type=submit]');
  await hUntil(page, `Hydrogen to show ${user}'s session`, () => !!document.querySelector('.SessionView .RoomList'));
  const session = await page.evaluate(() => /^#\/session\/[^/]+/.exec(location.hash)?.[0]);
  assert.ok(session, 'Hydrogen navigated to its session');
  return session;
}

/** Opens `room` in Hydrogen through its URL router, as a link to the room would. */
function hydrogenOpen(page, session, room) {
  return page.evaluate(([s, r]) => { location.hash = `${s}/room/${r}`; }, [session, room]);
}

async function hydrogenSend(page, text) {
  await page.bringToFront();
  await page.fill('.MessageComposer_input textarea', text);
  await page.press('.MessageComposer_input textarea', 'Enter');
}

/** Waits until Hydrogen's timeline shows `text` as a message sent to the server. */
function hydrogenSees(page, text) {
  return hUntil(page, `"${text}" in Hydrogen's timeline`, (t) =>
    [...document.querySelectorAll('.Timeline_message:not(.unsent) .Timeline_messageBody')].some((b) => b.textContent.includes(t)), text);
}

/** Waits until an <img> in Hydrogen's timeline matching `selector`, its URL's path starting with `prefix`, has loaded. */
function hydrogenImageLoaded(page, what, selector, prefix) {
  return hUntil(page, what, ([sel, p]) => {
    const img = [...document.querySelectorAll(sel)]
      .find((i) => new URL(i.src, location.href).pathname.startsWith(p) && i.complete && i.naturalWidth > 0);
    return img ? { w: img.naturalWidth, h: img.naturalHeight, src: img.src } : null;
  }, [selector, prefix]);
}

test('Hydrogen on one browser server talks to Hydrogen on another, images and avatars included', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url, { path: '/hydrogen/' });
    const b = await openPage(ctxB, relay.url, { path: '/hydrogen/' });
    assert.notEqual(a.serverName, b.serverName);
    for (const { page } of [a, b]) {
      await eventually('the server to connect to the relay', async () => {
        const s = await page.evaluate(() => window.hearth.status());
        return s.relay === 'connected' || null;
      });
    }
    const alice = await registerApi(a.page, 'alice');
    const bob = await registerApi(b.page, 'bob');

    // Bob's avatar lives on his server; Alice's Hydrogen shows it as a thumbnail.
    const avatar = await uploadPng(b.page, bob.access_token, await pngBase64(b.page, 96, 96, '#2a7'));
    await apiOk(b.page, 'PUT', `/_matrix/client/v3/profile/${enc(bob.user_id)}/avatar_url`,
      { avatar_url: avatar }, bob.access_token);

    const aliceSession = await hydrogenLogin(a.page, 'alice');
    const bobSession = await hydrogenLogin(b.page, 'bob');

    // Bob invites Alice across servers; Hydrogen lists the invite and Alice accepts it there.
    const { room_id: room } = await apiOk(b.page, 'POST', '/_matrix/client/v3/createRoom',
      { preset: 'private_chat', name: 'Hydrogen across', invite: [alice.user_id] }, bob.access_token);
    await hUntil(a.page, 'the invite in Hydrogen\'s room list',
      () => [...document.querySelectorAll('.RoomList li')].some((li) => li.textContent.includes('Hydrogen across')));
    await hydrogenOpen(a.page, aliceSession, room);
    await a.page.click('.InviteView button.primary');
    await hUntil(a.page, 'the room\'s timeline after accepting', () => !!document.querySelector('.RoomView .Timeline'));
    await eventually('alice\'s join to reach bob\'s server', async () => {
      const m = await api(b.page, 'GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`, undefined, bob.access_token);
      return m.body?.joined?.[alice.user_id] ? true : null;
    });
    await hydrogenOpen(b.page, bobSession, room);
    await hUntil(b.page, 'the room in bob\'s Hydrogen', () => !!document.querySelector('.RoomView .MessageComposer_input textarea'));

    // Text both ways, typed into Hydrogen's composer on each side.
    await hydrogenSend(b.page, 'hello from bob on server b');
    await hydrogenSees(a.page, 'hello from bob on server b');
    await hydrogenSend(a.page, 'hello from alice on server a');
    await hydrogenSees(b.page, 'hello from alice on server a');

    // Bob sends a picture with Hydrogen's attachment menu: Hydrogen uploads it to Bob's server.
    // Alice's Hydrogen shows it with an <img> whose request succeeds only with Alice's token,
    // and only because Alice's server fetches the bytes from Bob's over federation.
    await b.page.bringToFront();
    const chooser = b.page.waitForEvent('filechooser');
    await b.page.click('.MessageComposer_input .sendFile');
    await b.page.click('.menu button:has-text("Send picture")');
    await (await chooser).setFiles({
      name: 'red.png',
      mimeType: 'image/png',
      buffer: Buffer.from(await pngBase64(b.page, 120, 80, '#c33'), 'base64'),
    });
    const remoteThumbs = `/_matrix/client/v1/media/thumbnail/${b.serverName}/`;
    const loaded = await hydrogenImageLoaded(a.page, 'bob\'s picture to load in alice\'s Hydrogen',
      '.Timeline_message:not(.own) .Timeline_messageBody img', remoteThumbs);
    assert.ok(loaded.w > 0 && loaded.h > 0, `image loaded: ${JSON.stringify(loaded)}`);
    assert.equal(new URL(loaded.src).origin, relay.url, 'the image comes from the page\'s own origin');
    // Bob's own Hydrogen shows it too once sent, from his own server's media.
    await hydrogenImageLoaded(b.page, 'bob\'s picture in his own Hydrogen',
      '.Timeline_message:not(.unsent) .Timeline_messageBody img', remoteThumbs);

    // Bob's avatar beside his messages, loaded the same way.
    const avatarPath = `/_matrix/client/v1/media/thumbnail/${avatar.slice('mxc://'.length)}`;
    await hydrogenImageLoaded(a.page, 'bob\'s avatar in alice\'s Hydrogen', '.Timeline .avatar img', avatarPath);

    // The token is the page's own: the same URL from a page that does not answer the service
    // worker's question (Hearth's own page, same origin and server) gets no token added.
    const other = await ctxA.newPage();
    await other.goto(`${relay.url}/`);
    await other.evaluate(() => window.hearth.ready);
    const anonymous = await other.evaluate(async (u) => (await fetch(u)).status, new URL(loaded.src).pathname + new URL(loaded.src).search);
    assert.equal(anonymous, 401);
    await other.close();

    // And Hydrogen keeps working across a reload: the session comes back from its storage.
    await a.page.reload();
    await a.page.evaluate(() => window.hearth.ready);
    await hydrogenImageLoaded(a.page, 'the picture again after a reload', '.Timeline_messageBody img', remoteThumbs);
    await hydrogenSees(a.page, 'hello from bob on server b');
    assert.deepEqual(a.page.errors, []);
    assert.deepEqual(b.page.errors, []);
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
