// Shared harness of the end-to-end tests: a relay serving www/ on a free port, headless
// Chromium through playwright-core, and helpers that drive the page's UI or call the
// Client-Server API from inside a page (so requests go through the service worker, as any
// same-origin client's would).
//
// The page must be built first (`cargo xtask www`; `cargo xtask test` does it). Environment:
//   HEARTH_RELAY_BIN  relay binary (default target/debug/hearth-relay)
//   HEARTH_TESTHOST_BIN  native server binary (default target/debug/hearth-testhost)
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
export const TESTHOST_BIN = process.env.HEARTH_TESTHOST_BIN ?? path.join(ROOT, 'target/debug/hearth-testhost');
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

/**
 * How long any one wait may take. Every wait ends as soon as its condition holds, so a generous
 * deadline costs nothing when things work; it only has to outlast a 2-core machine busy with
 * other builds (where a page can take seconds to answer). HEARTH_E2E_TIMEOUT_MS overrides it.
 */
export const TIMEOUT_MS = Number(process.env.HEARTH_E2E_TIMEOUT_MS) || 60000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** What `seen` reports, as text for an error message; never throws. */
async function describe(seen) {
  if (!seen) return '(nothing recorded)';
  try {
    const v = await seen();
    return typeof v === 'string' ? v : JSON.stringify(v);
  } catch (e) {
    return `(could not look: ${e.message})`;
  }
}

/** The error for a wait that failed: what was awaited, for how long, and what was seen instead. */
async function waitError(cause, what, seen, timeout) {
  const why = cause?.name === 'TimeoutError' || cause === undefined ? `not within ${timeout / 1000} s` : cause.message.split('\n')[0];
  return new Error(`waiting for ${what}: ${why}; saw ${await describe(seen)}`, { cause });
}

/**
 * Waits until `fn(arg)`, run in the page, returns something truthy; resolves to its value.
 * On failure the error names `what` and what `seen()` reports then (default: the page's UI state).
 * It polls on a timer, not on animation frames: Chromium gives a page that is not the front
 * tab one or two frames a second.
 */
export async function until(page, what, fn, arg, { seen = () => uiState(page), timeout = TIMEOUT_MS } = {}) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue();
  } catch (e) {
    throw await waitError(e, what, seen, timeout);
  }
}

/** `page.waitForSelector` with the deadline and error message of `until`. */
export async function untilSelector(page, selector, { state = 'visible', what, seen = () => uiState(page), timeout = TIMEOUT_MS } = {}) {
  try {
    await page.waitForSelector(selector, { state, timeout });
  } catch (e) {
    throw await waitError(e, what ?? `${selector} to be ${state}`, seen, timeout);
  }
}

/**
 * Polls `check()` from Node until it returns something truthy; resolves to that value. Only for
 * conditions that stay true once reached (a counter, a recorded event): polling can miss a state
 * that comes and goes.
 */
export async function eventually(what, check, { seen, timeout = TIMEOUT_MS, every = 20 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw await waitError(undefined, what, seen, timeout);
    await sleep(every);
  }
}

/** Awaits `promise` (a page.evaluate of an in-page promise, say) with a deadline. */
export async function within(what, promise, { seen, timeout = TIMEOUT_MS } = {}) {
  const EXPIRED = Symbol('expired');
  let timer;
  const expired = new Promise((resolve) => (timer = setTimeout(() => resolve(EXPIRED), timeout)));
  try {
    const v = await Promise.race([promise, expired]);
    if (v === EXPIRED) throw await waitError(undefined, what, seen, timeout);
    return v;
  } finally {
    clearTimeout(timer);
  }
}

/** What the page's UI shows: the error message of a UI wait that failed. */
export function uiState(page) {
  return page.evaluate(() => {
    const $ = (id) => document.getElementById(id);
    const shown = (id) => $(id) && !$(id).hidden;
    return {
      section: ['boot', 'auth', 'chat'].filter(shown),
      banner: shown('banner') ? $('banner').textContent : undefined,
      toast: shown('toast') ? $('toast').textContent : undefined,
      authError: $('auth-error')?.textContent || undefined,
      dialog: [...document.querySelectorAll('dialog[open]')].map((d) => `${d.id}: ${d.querySelector('.error')?.textContent ?? ''}`),
      room: $('room-id')?.title || undefined,
      roomName: $('room-name')?.textContent || undefined,
      lastEvents: [...document.querySelectorAll('#events .event')].slice(-5).map((e) => e.textContent.trim().slice(0, 80)),
      hearthError: window.hearth?.lastError ?? undefined,
    };
  });
}

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

/**
 * Spawns `bin args` and resolves to `{ child, match, stderr() }` once a stdout line matches
 * `pattern` (`match` is the match); fails if the process exits first or takes too long.
 */
async function spawnUntilLine(what, bin, args, pattern) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines = createInterface({ input: child.stdout });
  const match = await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`waiting for ${what} to print its address: not within ${TIMEOUT_MS / 1000} s; stderr: ${stderr}`)),
      TIMEOUT_MS,
    );
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}): ${stderr}`));
    });
    lines.on('line', (line) => {
      const m = pattern.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
  return { child, match, stderr: () => stderr };
}

/** Ends `child` with SIGTERM (SIGKILL if it lingers) and waits for it to exit. */
async function terminate(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts the relay on a loopback port (`port`, or a free one); resolves to
 * `{ url, port, stop() }`. `args` are passed on (`['--data', dir]`). `stop()` is a graceful
 * shutdown (SIGTERM) and resolves when the process has exited, so the port can be bound again.
 */
export async function startRelay({ www = WWW, port = 0, args = [] } = {}) {
  checkBuilt(www);
  const { child, match } = await spawnUntilLine(
    'the relay',
    RELAY_BIN,
    ['--listen', `127.0.0.1:${port}`, '--www', www, ...args],
    /^hearth-relay listening on (http:\/\/\S+)$/,
  );
  const url = match[1];
  return { url, port: Number(new URL(url).port), stop: () => terminate(child) };
}

/**
 * Starts a native key-named server (`hearth-testhost`) federating through the relay at
 * `relayUrl`, its client API on a free loopback port; resolves to `{ url, serverName, stop() }`.
 */
export async function startTestHost(relayUrl, { bin = TESTHOST_BIN } = {}) {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: cargo build -p hearth-testhost`);
  const { child, match } = await spawnUntilLine(
    'hearth-testhost',
    bin,
    ['--listen', '127.0.0.1:0', '--relay', relayUrl],
    /^hearth-testhost listening on (http:\/\/\S+) server_name=(\S+)/,
  );
  return { url: match[1], serverName: match[2], stop: () => terminate(child) };
}

/** Calls a native server's Client-Server API from Node; resolves to `{ status, body }`. */
export async function nodeApi(base, method, pathAndQuery, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(base + pathAndQuery, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  let json = null;
  try {
    json = await r.json();
  } catch {
    json = null;
  }
  return { status: r.status, body: json };
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
  page.setDefaultTimeout(TIMEOUT_MS);
  page.setDefaultNavigationTimeout(TIMEOUT_MS);
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
  const { serverName } = await within('hearth.ready', page.evaluate(() => window.hearth.ready), {
    seen: async () => ({ pageErrors: page.errors, ui: await uiState(page) }),
  });
  return { page, serverName };
}

/** Calls the Client-Server API from inside the page; resolves to `{ status, body }`. */
export function api(page, method, pathAndQuery, body, token) {
  const call = page.evaluate(
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
  return within(`an answer to ${method} ${pathAndQuery}`, call);
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
  return registerWith((...a) => api(page, ...a), username, password);
}

/** `registerApi` through any `call(method, pathAndQuery, body, token)` → `{ status, body }`. */
export async function registerWith(call, username, password = PASSWORD) {
  const first = await call('POST', '/_matrix/client/v3/register', { username, password });
  if (first.status === 200) return first.body;
  if (first.status !== 401) throw new Error(`register ${username}: ${first.status} ${JSON.stringify(first.body)}`);
  const second = await call('POST', '/_matrix/client/v3/register', {
    username,
    password,
    auth: { type: 'm.login.dummy', session: first.body.session },
  });
  if (second.status !== 200) throw new Error(`register ${username}: ${second.status} ${JSON.stringify(second.body)}`);
  return second.body;
}

// ---------------------------------------------------------------------------------------------
// Federation scenarios: one account on one server, whether a browser page or a native testhost.

const enc = encodeURIComponent;

/** A `call` for `Account`: the Client-Server API from inside `page`. */
export function pageCall(page) {
  return (...a) => api(page, ...a);
}

/** A `call` for `Account`: a native server's Client-Server API at `base`, from Node. */
export function hostCall(base) {
  return (...a) => nodeApi(base, ...a);
}

/**
 * An account, called through `call(method, pathAndQuery, body, token)`: a page's `api` or
 * `nodeApi` on a testhost. `login` is the register/login answer.
 */
export class Account {
  constructor(call, login, label = login.user_id) {
    this.call = call;
    this.userId = login.user_id;
    this.token = login.access_token;
    this.label = label;
    this.since = undefined;
  }

  static async register(call, username, label) {
    return new Account(call, await registerWith(call, username), label);
  }

  req(method, pathAndQuery, body) {
    return this.call(method, pathAndQuery, body, this.token);
  }

  async ok(method, pathAndQuery, body) {
    const r = await this.req(method, pathAndQuery, body);
    if (r.status < 200 || r.status > 299) {
      throw new Error(`${this.label}: ${method} ${pathAndQuery} → ${r.status} ${JSON.stringify(r.body)}`);
    }
    return r.body;
  }

  /** Sends a text message; resolves to its event id. */
  async say(room, body) {
    const txn = `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
    const r = await this.ok('PUT', `/_matrix/client/v3/rooms/${enc(room)}/send/m.room.message/${txn}`, { msgtype: 'm.text', body });
    return r.event_id;
  }

  /** The room's events as this server has them (up to `limit`), oldest first. */
  async timeline(room, limit = 200) {
    const r = await this.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/messages?dir=b&limit=${limit}`);
    return r.chunk.reverse();
  }

  /** The bodies of the room's m.room.message events, oldest first. */
  async bodies(room) {
    return (await this.timeline(room)).filter((e) => e.type === 'm.room.message').map((e) => e.content.body);
  }

  /** Waits until the room's message bodies include every one of `texts`. */
  async waitForBodies(room, texts) {
    let seen = [];
    await eventually(`${this.label} to have ${texts.length} message(s) ending "${texts.at(-1)}"`, async () => {
      seen = await this.bodies(room);
      return texts.every((t) => seen.includes(t)) || null;
    }, { seen: () => seen, every: 100 });
    return seen;
  }

  /**
   * Runs incremental /sync (from where the last one ended) until `check(syncBody)` returns
   * something truthy; resolves to it. Every batch is checked once, so a change that comes and
   * goes (typing) is not missed between polls.
   */
  async syncUntil(what, check) {
    let last;
    return eventually(`${this.label}: ${what}`, async () => {
      const q = this.since ? `?since=${enc(this.since)}&timeout=500` : '?timeout=0';
      const r = await this.ok('GET', `/_matrix/client/v3/sync${q}`);
      this.since = r.next_batch;
      last = r;
      return check(r) || null;
    }, { seen: () => last, every: 0 });
  }

  /** Waits for the invite to `room`, then joins it. */
  async acceptInvite(room) {
    await this.syncUntil(`the invite to ${room}`, (s) => s.rooms?.invite?.[room]);
    await this.ok('POST', `/_matrix/client/v3/join/${enc(room)}`, {});
  }
}

/** Waits until the page's server is connected to the relay. */
export function relayConnected(page) {
  let status;
  return eventually('the server to connect to the relay', async () => {
    status = await page.evaluate(() => window.hearth.status());
    return status.relay === 'connected' || null;
  }, { seen: () => status, every: 50 });
}

/** One sample of the relay's /metrics (`name` or `name{labels}`), or 0 when it is absent. */
export async function relayMetric(relayUrl, sample) {
  const text = await (await fetch(`${relayUrl}/metrics`, { signal: AbortSignal.timeout(TIMEOUT_MS) })).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

/** A room's current state as `type|state_key → event_id`, sorted, for comparing servers. */
export async function stateIds(account, room) {
  const state = await account.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/state`);
  return Object.fromEntries(state.map((e) => [`${e.type}|${e.state_key}`, e.event_id]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

// ---------------------------------------------------------------------------------------------
// Driving the page's UI. Each helper first brings its page to the front, as a person switches
// to the window they type in: Chromium gives a page behind another one or two animation frames a
// second, and Playwright waits for an element to keep still over two frames before a click.

export async function registerUi(page, username, password = PASSWORD) {
  await page.bringToFront();
  await page.click('#tab-register');
  await page.fill('#auth-user', username);
  await page.fill('#auth-pass', password);
  await page.click('#auth-submit');
  await waitForSection(page, 'chat');
  await until(page, `the signed-in user to be @${username}`, (u) => document.getElementById('me-id').textContent.startsWith(`@${u}:`), username);
  return page.textContent('#me-id');
}

/** Waits until the page shows `section` ('boot', 'auth' or 'chat'). */
export function waitForSection(page, section) {
  return untilSelector(page, `#${section}:not([hidden])`, { what: `the ${section} screen` });
}

/** Waits until `roomId` is the open room. */
export function waitForRoom(page, roomId) {
  return until(page, `room ${roomId} to be open`, (id) => document.getElementById('room-id').title === id, roomId);
}

export async function loginUi(page, username, password = PASSWORD) {
  await page.bringToFront();
  await page.click('#tab-login');
  await page.fill('#auth-user', username);
  await page.fill('#auth-pass', password);
  await page.click('#auth-submit');
}

export async function createRoomUi(page, name, { alias, isPublic } = {}) {
  await page.bringToFront();
  await page.click('#btn-create');
  await page.fill('#create-name', name);
  if (alias) await page.fill('#create-alias', alias);
  if (isPublic) await page.check('#create-public');
  await page.click('#form-create button[value=ok]');
  await untilSelector(page, '#dlg-create', { state: 'hidden', what: `the create-room dialog to close (room ${name})` });
  await until(page, `the open room to be named ${name}`, (n) => document.getElementById('room-name').textContent === n, name);
  return page.evaluate(() => document.querySelector('#room-list .room-item.active')?.dataset.roomId);
}

export async function sendUi(page, text) {
  await page.bringToFront();
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Waits until the open room shows `text` as a delivered (not pending) message. */
export function waitForMessage(page, text, timeout = TIMEOUT_MS) {
  return until(
    page,
    `the message "${text}" delivered in the open room`,
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
  await page.bringToFront();
  await page.click(`#room-list li[data-room-id="${roomId}"] button`);
  await waitForRoom(page, roomId);
}

/** A unique, valid Matrix localpart for this run. */
export function uniqueName(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

export const HEX64 = /^[0-9a-f]{64}$/;
