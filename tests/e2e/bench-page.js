// In-page half of the browser benchmark: runs inside a Hearth page, either injected by
// bench.mjs through Playwright or loaded by bench.html with no DevTools attached at all
// (`node bench.mjs --no-devtools`). Sets `window.hearthBench`.
//
// `via` is 'fetch' (through the service worker, as any client) or 'hearth.fetch' (the page's
// own short cut straight to the server worker).

const fetcher = (via) => (via === 'fetch' ? fetch.bind(window) : window.hearth.fetch);

async function call(via, method, url, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetcher(via)(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${url}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : {};
}

/** Registers two users in one public room; resolves to `{ roomId, alice, bob }` (tokens). */
async function setup(tag) {
  const register = (username) => call('fetch', 'POST', '/_matrix/client/v3/register', {
    username, password: 'correct horse battery staple', auth: { type: 'm.login.dummy' },
  });
  const alice = (await register(`alice${tag}`)).access_token;
  const bob = (await register(`bob${tag}`)).access_token;
  const { room_id: roomId } = await call('fetch', 'POST', '/_matrix/client/v3/createRoom', { name: 'bench', preset: 'public_chat' }, alice);
  await call('fetch', 'POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {}, bob);
  return { roomId, alice, bob };
}

/** Milliseconds per fetch of the cheapest thing there is: a tiny file passed to the network. */
async function baseline(n) {
  for (let i = 0; i < 20; i++) await (await fetch('/healthz')).text();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await (await fetch('/healthz')).text();
  return (performance.now() - t0) / n;
}

/** Sequential sends; resolves to `{ rate, before, after }` (server status around them). */
async function sends(via, { roomId, alice }, n, tag) {
  const before = await window.hearth.status();
  const f = fetcher(via);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const r = await f(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${tag}${i}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${alice}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ msgtype: 'm.text', body: `message ${i}` }),
    });
    if (!r.ok) throw new Error(`send ${i}: ${r.status} ${await r.text()}`);
  }
  const rate = (n / (performance.now() - t0)) * 1000;
  return { rate, before, after: await window.hearth.status() };
}

/** Bob long-polls /sync, alice sends: milliseconds from send start until bob's /sync returns. */
async function delivery(via, { roomId, alice, bob }, n, tag) {
  const f = fetcher(via);
  const get = async (url) => {
    const r = await f(url, { headers: { Authorization: `Bearer ${bob}` } });
    if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 10 } }, presence: { not_types: ['*'] } }));
  let since = (await get(`/_matrix/client/v3/sync?timeout=0&filter=${filter}`)).next_batch;
  const out = [];
  for (let i = 0; i < n; i++) {
    const body = `latency ${tag} ${i}`;
    const poll = get(`/_matrix/client/v3/sync?timeout=30000&since=${since}&filter=${filter}`);
    await new Promise((r) => setTimeout(r, 2)); // let the long-poll reach the server
    const t0 = performance.now();
    const send = f(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${tag}${i}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${alice}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ msgtype: 'm.text', body }),
    });
    let res = await poll;
    // Any other wake-up (receipts, presence) is skipped until the message itself arrives.
    while (!(res.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e) => e.content?.body === body)) {
      since = res.next_batch;
      res = await get(`/_matrix/client/v3/sync?timeout=30000&since=${since}&filter=${filter}`);
    }
    out.push(performance.now() - t0);
    since = res.next_batch;
    if (!(await send).ok) throw new Error(`send ${i} failed`);
  }
  return out;
}

/** Everything above for both paths; resolves to plain data. */
async function all({ sends: n, deliveries }) {
  const room = await setup(`${Date.now() % 100000}`);
  const result = { baselineMs: await baseline(n), paths: {} };
  for (const via of ['fetch', 'hearth.fetch']) {
    const tag = via === 'fetch' ? 'sw' : 'direct';
    result.paths[via] = {
      sends: await sends(via, room, n, tag),
      latencies: await delivery(via, room, deliveries, `lat${tag}`),
    };
  }
  return result;
}

window.hearthBench = { setup, baseline, sends, delivery, all };
