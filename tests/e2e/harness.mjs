// Shared harness of the end-to-end tests: a relay serving www/ on a free port, headless
// Chromium through playwright-core, and helpers that drive the page's UI or call the
// Client-Server API from inside a page (so requests go through the service worker, as any
// same-origin client's would).
//
// The page must be built first (`cargo xtask www`; `cargo xtask test` does it). Environment:
//   HEARTH_RELAY_BIN  relay binary (default target/debug/hearth-relay)
//   HEARTH_WWW        directory to serve (default www/)
//   CHROMIUM          browser binary (default /usr/bin/chromium)

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const WWW = process.env.HEARTH_WWW ?? path.join(ROOT, 'www');
export const RELAY_BIN = process.env.HEARTH_RELAY_BIN ?? path.join(ROOT, 'target/debug/hearth-relay');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
export const PASSWORD = 'correct horse battery staple';

/** Fails early, with the fix, when the page or the relay has not been built. */
export function checkBuilt(www = WWW) {
  for (const [file, fix] of [
    [path.join(www, 'pkg/hearth_web_bg.wasm'), 'cargo xtask www'],
    [path.join(www, 'hearth.js'), 'the web host (www/hearth.js) is missing'],
    [RELAY_BIN, 'cargo build -p hearth-relay'],
  ]) {
    if (!existsSync(file)) throw new Error(`${file} is missing: ${fix}`);
  }
}

/** A copy of www/ in a temp dir, for tests that change served files (service-worker update). */
export function copyWww() {
  const dir = mkdtempSync(path.join(tmpdir(), 'hearth-www-'));
  cpSync(WWW, dir, { recursive: true });
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Starts the relay on a free loopback port; resolves to `{ url, stop() }`. */
export async function startRelay({ www = WWW } = {}) {
  checkBuilt(www);
  const child = spawn(RELAY_BIN, ['--listen', '127.0.0.1:0', '--www', www], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start in 15 s: ${stderr}`)), 15000);
    child.once('exit', (code) => reject(new Error(`relay exited (${code}): ${stderr}`)));
    lines.on('line', (line) => {
      const m = /^hearth-relay listening on (http:\/\/\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  return {
    url,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

export function launchPersistent(userDataDir, options = {}) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 760 },
    ...options,
  });
}

/** Collects page errors so a test can assert none happened. */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return errors;
}

/**
 * Opens the page and waits for `hearth.ready`; resolves to `{ page, serverName }`.
 * `signedOut`: the page starts without the origin's stored session, as a second person
 * opening a tab would (logging out there instead would end the first tab's session too).
 */
export async function openPage(context, url, { path: p = '/', signedOut = false } = {}) {
  const page = await context.newPage();
  page.errors = watchErrors(page);
  if (signedOut) {
    await page.addInitScript(() => {
      if (!sessionStorage.getItem('e2e.signedOut')) {
        sessionStorage.setItem('e2e.signedOut', '1');
        localStorage.removeItem('hearth.session');
      }
    });
  }
  await page.goto(url + p);
  const { serverName } = await page.evaluate(() => window.hearth.ready);
  return { page, serverName };
}

/** Calls the Client-Server API from inside the page; resolves to `{ status, body }`. */
export function api(page, method, pathAndQuery, body, token) {
  return page.evaluate(
    async ([method, pathAndQuery, body, token]) => {
      const headers = { 'Content-Type': 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      const r = await fetch(pathAndQuery, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      let json = null;
      try {
        json = await r.json();
      } catch {
        json = null;
      }
      return { status: r.status, body: json };
    },
    [method, pathAndQuery, body ?? undefined, token ?? null],
  );
}

/** `api` that fails the test on a non-2xx answer and returns the body. */
export async function apiOk(page, method, pathAndQuery, body, token) {
  const r = await api(page, method, pathAndQuery, body, token);
  if (r.status < 200 || r.status > 299) {
    throw new Error(`${method} ${pathAndQuery} → ${r.status} ${JSON.stringify(r.body)}`);
  }
  return r.body;
}

/** Registers through the API (two-step user-interactive auth); resolves to the login answer. */
export async function registerApi(page, username, password = PASSWORD) {
  const first = await api(page, 'POST', '/_matrix/client/v3/register', { username, password });
  if (first.status === 200) return first.body;
  if (first.status !== 401) throw new Error(`register ${username}: ${first.status} ${JSON.stringify(first.body)}`);
  return apiOk(page, 'POST', '/_matrix/client/v3/register', {
    username,
    password,
    auth: { type: 'm.login.dummy', session: first.body.session },
  });
}

// ---------------------------------------------------------------------------------------------
// Driving the page's UI

export async function registerUi(page, username, password = PASSWORD) {
  await page.click('#tab-register');
  await page.fill('#auth-user', username);
  await page.fill('#auth-pass', password);
  await page.click('#auth-submit');
  await page.waitForSelector('#chat:not([hidden])');
  await page.waitForFunction((u) => document.getElementById('me-id').textContent.startsWith(`@${u}:`), username);
  return page.textContent('#me-id');
}

export async function loginUi(page, username, password = PASSWORD) {
  await page.click('#tab-login');
  await page.fill('#auth-user', username);
  await page.fill('#auth-pass', password);
  await page.click('#auth-submit');
}

export async function createRoomUi(page, name, { alias, isPublic } = {}) {
  await page.click('#btn-create');
  await page.fill('#create-name', name);
  if (alias) await page.fill('#create-alias', alias);
  if (isPublic) await page.check('#create-public');
  await page.click('#form-create button[value=ok]');
  await page.waitForSelector('#dlg-create', { state: 'hidden' });
  await page.waitForFunction((n) => document.getElementById('room-name').textContent === n, name);
  return page.evaluate(() => document.querySelector('#room-list .room-item.active')?.dataset.roomId);
}

export async function sendUi(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Waits until the open room shows `text` as a delivered (not pending) message. */
export function waitForMessage(page, text, timeout = 15000) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll('#events .msg:not(.pending) .body')].some((b) => b.textContent === t),
    text,
    { timeout },
  );
}

/** Bodies of the delivered messages in the open room, oldest first. */
export function messages(page) {
  return page.$$eval('#events .msg:not(.pending) .body', (els) => els.map((e) => e.textContent));
}

export async function openRoomUi(page, roomId) {
  await page.click(`#room-list li[data-room-id="${roomId}"] button`);
  await page.waitForFunction((id) => document.getElementById('room-id').title === id, roomId);
}

/** A unique, valid Matrix localpart for this run. */
export function uniqueName(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

export const HEX64 = /^[0-9a-f]{64}$/;
