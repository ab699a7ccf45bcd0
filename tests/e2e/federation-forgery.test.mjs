// Forgery through the relay. A WebSocket client that claims a server name without its key is
// refused by the relay (close 4001, docs/relay-protocol.md). A properly authenticated server
// (a key made here, in Node) that is a member of a browser server's room gets a correctly
// signed message in, and the same message with a bad signature refused: an error in the
// transaction's per-PDU results, and no such event for the room's users.

import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import {
  Account,
  eventually,
  launchBrowser,
  openPage,
  pageCall,
  relayConnected,
  relayMetric,
  startRelay,
  within,
} from './harness.mjs';

// Node 22 has a global WebSocket; Node 20 has the `ws` package playwright-core bundles.
const WebSocketImpl = globalThis.WebSocket ?? createRequire(import.meta.url)('playwright-core/lib/utilsBundle').ws;

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

// ---------------------------------------------------------------------------------------------
// Matrix signing, as much as this test needs (room version 11).

/** Canonical JSON: keys sorted by code point, no insignificant whitespace. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new Error(`not a canonical JSON number: ${v}`);
  return JSON.stringify(v);
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64').replace(/=+$/, '');
const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
const sha256 = (text) => createHash('sha256').update(text).digest();

const without = (obj, ...keys) => Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));

/** The redaction algorithm of room version 11, for the event types made here. */
function redact(event) {
  const top = ['event_id', 'type', 'room_id', 'sender', 'state_key', 'content', 'hashes', 'signatures',
    'depth', 'prev_events', 'auth_events', 'origin_server_ts'];
  const out = Object.fromEntries(Object.entries(event).filter(([k]) => top.includes(k)));
  const keep = event.type === 'm.room.member' ? ['membership', 'join_authorised_via_users_server'] : [];
  out.content = Object.fromEntries(Object.entries(event.content ?? {}).filter(([k]) => keep.includes(k)));
  return out;
}

/** A server identity: an ed25519 key and the name it spells. */
function makeServer() {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
  const name = raw.toString('hex');
  return { name, keyId: `ed25519:${name.slice(0, 8)}`, sign: (bytes) => sign(null, Buffer.from(bytes), privateKey) };
}

/** `event` with its content hash and `server`'s signature; and its id (v11: reference hash). */
function hashAndSign(server, event) {
  const hashed = { ...event, hashes: { sha256: b64(sha256(canonical(without(event, 'unsigned', 'signatures', 'hashes')))) } };
  const sig = server.sign(canonical(without(redact(hashed), 'signatures', 'unsigned')));
  const signed = { ...hashed, signatures: { [server.name]: { [server.keyId]: b64(sig) } } };
  const id = `$${b64url(sha256(canonical(without(redact(signed), 'signatures', 'unsigned'))))}`;
  return { pdu: signed, id };
}

/** The `Authorization: X-Matrix` header for a request from `server` to `destination`. */
function xMatrix(server, destination, method, uri, content) {
  const request = { method, uri, origin: server.name, destination };
  if (content !== undefined) request.content = content;
  const sig = b64(server.sign(canonical(request)));
  return `X-Matrix origin="${server.name}",destination="${destination}",key="${server.keyId}",sig="${sig}"`;
}

// ---------------------------------------------------------------------------------------------
// The relay protocol, from the server's side (docs/relay-protocol.md).

class Writer {
  constructor() {
    this.parts = [];
  }
  u8(n) {
    this.parts.push(Buffer.from([n]));
    return this;
  }
  u16(n) {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    this.parts.push(b);
    return this;
  }
  u32(n) {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    this.parts.push(b);
    return this;
  }
  bytes(b) {
    this.parts.push(Buffer.from(b));
    return this;
  }
  str8(s) {
    return this.u8(Buffer.byteLength(s)).bytes(Buffer.from(s));
  }
  str16(s) {
    return this.u16(Buffer.byteLength(s)).bytes(Buffer.from(s));
  }
  headers(h) {
    const entries = Object.entries(h);
    this.u16(entries.length);
    for (const [k, v] of entries) this.str16(k).str16(v);
    return this;
  }
  done() {
    return Buffer.concat(this.parts);
  }
}

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.at = 0;
  }
  u8() {
    return this.buf.readUInt8(this.at++);
  }
  u16() {
    const v = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  u32() {
    const v = this.buf.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  bytes(n) {
    const v = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  str8() {
    return this.bytes(this.u8()).toString();
  }
  str16() {
    return this.bytes(this.u16()).toString();
  }
  headers() {
    const h = {};
    for (let n = this.u16(); n > 0; n--) h[this.str16().toLowerCase()] = this.str16();
    return h;
  }
  rest() {
    return this.bytes(this.buf.length - this.at);
  }
}

/**
 * A connection to the relay as `server` (signing the challenge with `signer`, the server's own
 * key unless a test forges it). Resolves to the connection once the socket is open; `welcome`
 * settles with the welcome, or fails with the close code and reason.
 */
async function connectAs(server, { signer = server } = {}) {
  const origin = relay.url;
  const ws = new WebSocketImpl(`${relay.url.replace(/^http/, 'ws')}/_hearth/relay`);
  ws.binaryType = 'arraybuffer';
  const conn = { ws, nextId: 1, waiting: new Map(), requests: [] };
  let welcomed;
  let refused;
  conn.welcome = new Promise((resolve, reject) => {
    welcomed = resolve;
    refused = reject;
  });
  conn.closed = new Promise((resolve) => ws.addEventListener('close', (e) => {
    resolve({ code: e.code, reason: e.reason });
    refused(Object.assign(new Error(`closed ${e.code} ${e.reason}`), { code: e.code, reason: e.reason }));
    for (const w of conn.waiting.values()) w.reject(new Error(`closed ${e.code} ${e.reason}`));
  }));
  conn.welcome.catch(() => {});
  ws.addEventListener('message', (e) => {
    const r = new Reader(Buffer.from(e.data));
    const type = r.u8();
    if (type === 0x01) {
      const version = r.u8();
      const nonce = r.bytes(32);
      const signed = Buffer.concat([Buffer.from('hearth-relay-auth-v1'), Buffer.from([0]), Buffer.from(origin), Buffer.from([0]), nonce]);
      ws.send(new Writer().u8(0x02).u8(version).str8(server.name).str16(origin).bytes(signer.sign(signed)).done());
    } else if (type === 0x03) {
      welcomed({ name: r.str8(), queued: r.u32() });
    } else if (type === 0x10) {
      // Another server's request: this server answers transactions, and nothing else.
      const id = r.u32();
      const peer = r.str8();
      const method = r.str8();
      const path = r.str16();
      conn.requests.push({ peer, method, path });
      const isTxn = method === 'PUT' && path.startsWith('/_matrix/federation/v1/send/');
      const body = isTxn ? { pdus: {} } : { errcode: 'M_UNRECOGNIZED', error: 'not here' };
      ws.send(new Writer().u8(0x11).u32(id).u16(isTxn ? 200 : 404).headers({ 'content-type': 'application/json' })
        .bytes(JSON.stringify(body)).done());
    } else if (type === 0x11) {
      const id = r.u32();
      const status = r.u16();
      const headers = r.headers();
      const body = r.rest().toString();
      conn.waiting.get(id)?.resolve({ status, headers, body: body ? JSON.parse(body) : null });
      conn.waiting.delete(id);
    }
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve);
    ws.addEventListener('error', () => reject(new Error('the relay socket did not open')));
  });

  /** A signed federation request to `destination`; resolves to `{ status, headers, body }`. */
  conn.request = (destination, method, uri, content) => {
    const id = conn.nextId++;
    const headers = { authorization: xMatrix(server, destination, method, uri, content) };
    if (content !== undefined) headers['content-type'] = 'application/json';
    const frame = new Writer().u8(0x10).u32(id).str8(destination).str8(method).str16(uri).headers(headers)
      .bytes(content === undefined ? Buffer.alloc(0) : JSON.stringify(content)).done();
    const answer = new Promise((resolve, reject) => conn.waiting.set(id, { resolve, reject }));
    ws.send(frame);
    return within(`an answer to ${method} ${uri}`, answer);
  };
  conn.close = () => ws.close();
  return conn;
}

// ---------------------------------------------------------------------------------------------

test('the relay refuses a server name proved with another key', async () => {
  const claimed = makeServer();
  const impostor = makeServer();
  const refusedBefore = await relayMetric(relay.url, 'hearth_relay_handshakes_total{result="refused"}');
  const conn = await connectAs(claimed, { signer: impostor });
  const closed = await within('the relay to close the impostor\'s socket', conn.closed);
  assert.equal(closed.code, 4001, `close code (reason: ${closed.reason})`);
  assert.match(closed.reason, /signature/i);
  await assert.rejects(conn.welcome, /closed 4001/);
  assert.equal(await relayMetric(relay.url, 'hearth_relay_handshakes_total{result="refused"}'), refusedBefore + 1);

  // The same name with its own key is let in: the refusal was the key's doing.
  const honest = await connectAs(claimed);
  const welcome = await within('the relay to welcome the key\'s owner', honest.welcome);
  assert.equal(welcome.name, claimed.name);
  honest.close();
});

test('a PDU with a bad signature, relayed to a browser server, is refused', async () => {
  const ctx = await browser.newContext();
  const mallory = makeServer();
  let conn;
  try {
    const a = await openPage(ctx, relay.url);
    const alice = await Account.register(pageCall(a.page), 'alice', 'alice');
    await relayConnected(a.page);
    const { room_id: room } = await alice.ok('POST', '/_matrix/client/v3/createRoom', { preset: 'public_chat', name: 'Open' });

    conn = await connectAs(mallory);
    await within('the relay to welcome the Node server', conn.welcome);
    const user = `@mallory:${mallory.name}`;

    // Mallory's server joins over federation, as any server would.
    const template = await conn.request(a.serverName, 'GET',
      `/_matrix/federation/v1/make_join/${enc(room)}/${enc(user)}?ver=11`);
    assert.equal(template.status, 200, `make_join: ${JSON.stringify(template.body)}`);
    const join = hashAndSign(mallory, { ...template.body.event, origin_server_ts: Date.now() });
    const joined = await conn.request(a.serverName, 'PUT', `/_matrix/federation/v2/send_join/${enc(room)}/${enc(join.id)}`, join.pdu);
    assert.equal(joined.status, 200, `send_join: ${JSON.stringify(joined.body)}`);
    await eventually('alice to see mallory joined', async () => {
      const r = await alice.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/joined_members`);
      return r.joined[user] ?? null;
    });

    // A message from mallory, its auth events those the auth rules ask for.
    const state = await alice.ok('GET', `/_matrix/client/v3/rooms/${enc(room)}/state`);
    const stateId = (type, key = '') => state.find((e) => e.type === type && e.state_key === key).event_id;
    const message = (body) => ({
      type: 'm.room.message',
      room_id: room,
      sender: user,
      content: { msgtype: 'm.text', body },
      origin_server_ts: Date.now(),
      depth: join.pdu.depth + 1,
      prev_events: [join.id],
      auth_events: [stateId('m.room.create'), stateId('m.room.power_levels'), join.id],
    });
    let txn = 0;
    const send = (pdu) => conn.request(a.serverName, 'PUT', `/_matrix/federation/v1/send/${Date.now()}-${++txn}`, {
      origin: mallory.name,
      origin_server_ts: Date.now(),
      pdus: [pdu],
    });
    const visible = (id) => alice.req('GET', `/_matrix/client/v3/rooms/${enc(room)}/event/${enc(id)}`);

    // Signed as it should be: accepted, and alice sees it.
    const good = hashAndSign(mallory, message('signed properly'));
    const accepted = await send(good.pdu);
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.deepEqual(accepted.body.pdus, { [good.id]: {} });
    assert.equal((await visible(good.id)).body?.content?.body, 'signed properly');

    // The same kind of event with a signature that does not verify: refused by the server.
    const forged = hashAndSign(mallory, message('forged'));
    const sig = Buffer.from(forged.pdu.signatures[mallory.name][mallory.keyId], 'base64');
    sig[10] ^= 0x01;
    forged.pdu.signatures[mallory.name][mallory.keyId] = b64(sig);
    const refused = await send(forged.pdu);
    assert.equal(refused.status, 200, JSON.stringify(refused.body));
    assert.deepEqual(Object.keys(refused.body.pdus), [forged.id], 'answered by the event\'s id');
    assert.match(refused.body.pdus[forged.id].error ?? '', /signature/i);
    assert.equal((await visible(forged.id)).status, 404);
    assert.ok(!(await alice.bodies(room)).includes('forged'), 'not in the timeline');

    // Random bytes for a signature are refused as well.
    const garbage = hashAndSign(mallory, message('garbage'));
    garbage.pdu.signatures = { [mallory.name]: { [mallory.keyId]: b64(randomBytes(64)) } };
    const refusedToo = await send(garbage.pdu);
    assert.ok(refusedToo.body.pdus[garbage.id]?.error, JSON.stringify(refusedToo.body));
    assert.equal((await visible(garbage.id)).status, 404);
    assert.deepEqual(a.page.errors, []);
  } finally {
    conn?.close();
    await ctx.close();
  }
});
