// Hydrogen (npm's hydrogen-view-sdk, its full app, unmodified) against the tab's Hearth server,
// talking to a user on another browser server through the relay: login, an invite across
// servers accepted in Hydrogen, messages both ways, and an image and an avatar from the other
// server that Hydrogen loads with plain <img> requests to /_matrix/client/v1/media/...: Hearth's
// service worker adds the page's access token (docs/media-auth.md), and Alice's server fetches
// the bytes from Bob's over federation.
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

/** A PNG of `w`×`h` in `color`, uploaded to the page's server; resolves to its mxc URI. */
function uploadPng(page, token, w, h, color) {
  return page.evaluate(async ([token, w, h, color]) => {
    const canvas = new OffscreenCanvas(w, h);
    const g = canvas.getContext('2d');
    g.fillStyle = color;
    g.fillRect(0, 0, w, h);
    const blob = await canvas.convertToBlob({ type: 'image/png' });
    const r = await fetch('/_matrix/media/v3/upload?filename=pic.png', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'image/png' },
      body: blob,
    });
    if (!r.ok) throw new Error(`upload: ${r.status} ${await r.text()}`);
    return { mxc: (await r.json()).content_uri, size: blob.size };
  }, [token, w, h, color]);
}

test('Hydrogen on one browser server talks to a user on another, images and avatars included', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    const a = await openPage(ctxA, relay.url, { path: '/hydrogen/' });
    const b = await openPage(ctxB, relay.url, { signedOut: true });
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
    const avatar = await uploadPng(b.page, bob.access_token, 96, 96, '#2a7');
    await apiOk(b.page, 'PUT', `/_matrix/client/v3/profile/${enc(bob.user_id)}/avatar_url`,
      { avatar_url: avatar.mxc }, bob.access_token);

    // Alice signs in with Hydrogen's own login screen; its homeserver is the page's origin.
    const { page } = a;
    await page.bringToFront();
    await page.fill('#username', 'alice');
    await page.fill('#password', PASSWORD);
    await page.click('.PasswordLoginView button[type=submit]');
    await hUntil(page, 'Hydrogen to show the session', () => !!document.querySelector('.SessionView .RoomList'));
    const sessionHash = await page.evaluate(() => /^#\/session\/[^/]+/.exec(location.hash)?.[0]);
    assert.ok(sessionHash, 'Hydrogen navigated to its session');

    // Bob invites Alice across servers; Hydrogen lists the invite and Alice accepts it there.
    const { room_id: room } = await apiOk(b.page, 'POST', '/_matrix/client/v3/createRoom',
      { preset: 'private_chat', name: 'Hydrogen across', invite: [alice.user_id] }, bob.access_token);
    await hUntil(page, 'the invite in Hydrogen\'s room list',
      () => [...document.querySelectorAll('.RoomList li')].some((li) => li.textContent.includes('Hydrogen across')));
    await page.evaluate(([s, r]) => { location.hash = `${s}/room/${r}`; }, [sessionHash, room]);
    await page.click('.InviteView button.primary');
    await hUntil(page, 'the room\'s timeline after accepting', () => !!document.querySelector('.RoomView .Timeline'));
    await eventually('alice\'s join to reach bob\'s server', async () => {
      const m = await api(b.page, 'GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`, undefined, bob.access_token);
      return m.body?.joined?.[alice.user_id] ? true : null;
    });

    // Text both ways.
    await apiOk(b.page, 'PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/t1`,
      { msgtype: 'm.text', body: 'hello from bob on server b' }, bob.access_token);
    await hUntil(page, 'bob\'s message in Hydrogen\'s timeline',
      () => [...document.querySelectorAll('.Timeline_messageBody')].some((b) => b.textContent.includes('hello from bob on server b')));
    await page.bringToFront();
    await page.fill('.MessageComposer_input textarea', 'hello from alice in hydrogen');
    await page.press('.MessageComposer_input textarea', 'Enter');
    await eventually('bob to get alice\'s message', async () => {
      const r = await api(b.page, 'GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?dir=b&limit=20`, undefined, bob.access_token);
      return r.body?.chunk?.some((e) => e.sender === alice.user_id && e.content?.body === 'hello from alice in hydrogen') || null;
    }, { seen: () => hydrogenState(page) });

    // An image from Bob's media repository: Hydrogen shows its thumbnail with an <img> whose
    // request only succeeds with Alice's token, and only because Alice's server fetches it from
    // Bob's over federation.
    const image = await uploadPng(b.page, bob.access_token, 120, 80, '#c33');
    await apiOk(b.page, 'PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/t2`, {
      msgtype: 'm.image',
      body: 'red.png',
      url: image.mxc,
      info: { mimetype: 'image/png', w: 120, h: 80, size: image.size },
    }, bob.access_token);
    const [imageServer, imageId] = image.mxc.slice('mxc://'.length).split('/');
    const thumbPath = `/_matrix/client/v1/media/thumbnail/${imageServer}/${imageId}`;
    const loaded = await hUntil(page, 'bob\'s image to load in Hydrogen\'s timeline', (p) => {
      const img = [...document.querySelectorAll('.Timeline_messageBody img')]
        .find((i) => new URL(i.src, location.href).pathname === p);
      return img?.complete && img.naturalWidth > 0 ? { w: img.naturalWidth, h: img.naturalHeight, src: img.src } : null;
    }, thumbPath);
    assert.ok(loaded.w > 0 && loaded.h > 0, `image loaded: ${JSON.stringify(loaded)}`);
    assert.equal(new URL(loaded.src).origin, relay.url, 'the image comes from the page\'s own origin');

    // Bob's avatar beside his messages, loaded the same way.
    const [avatarServer, avatarId] = avatar.mxc.slice('mxc://'.length).split('/');
    const avatarPath = `/_matrix/client/v1/media/thumbnail/${avatarServer}/${avatarId}`;
    await hUntil(page, 'bob\'s avatar to load in Hydrogen\'s timeline', (p) =>
      [...document.querySelectorAll('.Timeline .avatar img')]
        .some((i) => new URL(i.src, location.href).pathname === p && i.complete && i.naturalWidth > 0), avatarPath);

    // The token is the page's own: the same URL from a page that does not answer the service
    // worker's question (Hearth's own page, same origin and server) gets no token added.
    const other = await ctxA.newPage();
    await other.goto(`${relay.url}/`);
    await other.evaluate(() => window.hearth.ready);
    const anonymous = await other.evaluate(async (u) => (await fetch(u)).status, `${thumbPath}?width=32&height=32&method=scale`);
    assert.equal(anonymous, 401);
    await other.close();

    // And Hydrogen keeps working across a reload: the session comes back from its storage.
    await page.reload();
    await page.evaluate(() => window.hearth.ready);
    await hUntil(page, 'the image again after a reload', (p) =>
      [...document.querySelectorAll('.Timeline_messageBody img')]
        .some((i) => new URL(i.src, location.href).pathname === p && i.complete && i.naturalWidth > 0), thumbPath);
    assert.deepEqual(page.errors, []);
  } finally {
    await ctxA.close();
    await ctxB.close();
  }
});
