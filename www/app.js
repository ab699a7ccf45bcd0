// The page's own chat client. It speaks only the standard Client-Server API, to the page's
// own origin, where the in-browser homeserver (booted by /hearth.js) answers through the
// service worker: exactly what any other Matrix client on this origin would do.

const CS = '/_matrix/client/v3';
const SESSION_KEY = 'hearth.session';
const LAST_ROOM_KEY = 'hearth.lastRoom';
const SYNC_TIMEOUT_MS = 30000;
const STATUS_EVERY_MS = 5000;
// Small pages keep first paint fast; older history comes through /messages on demand.
const SYNC_FILTER = JSON.stringify({ room: { timeline: { limit: 30 } } });
const PAGE_SIZE = 30;

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

class MatrixError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.errcode = this.body.errcode || (status === 0 ? 'M_NETWORK' : 'M_UNKNOWN');
    this.retryAfterMs = this.body.retry_after_ms;
  }
  toString() {
    return `${this.message} (${this.errcode})`;
  }
}

const state = {
  serverName: null,
  session: null, // { userId, accessToken, deviceId, serverName }
  displayName: null,
  rooms: new Map(), // roomId -> Room
  invites: new Map(), // roomId -> { name, inviter }
  current: null, // roomId
  since: null,
  syncGen: 0,
  syncAbort: null,
  txnCounter: 0,
  membersOpen: false,
};

// ---------------------------------------------------------------------------------------------
// HTTP

async function api(method, path, body, opts = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.auth !== false && state.session) headers.Authorization = `Bearer ${state.session.accessToken}`;
  let resp;
  try {
    // hearth.fetch skips the service worker for our own server (same answers, less latency).
    resp = await (window.hearth?.fetch ?? fetch)(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: opts.signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new MatrixError(0, { errcode: 'M_NETWORK', error: `network error: ${e.message}` });
  }
  let json = {};
  try {
    json = await resp.json();
  } catch {
    // Empty or non-JSON body: the status code says enough.
  }
  if (!resp.ok) {
    const err = new MatrixError(resp.status, json);
    if (err.errcode === 'M_UNKNOWN_TOKEN' && opts.auth !== false && state.session) sessionLost();
    throw err;
  }
  return json;
}

// ---------------------------------------------------------------------------------------------
// Small UI helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

let toastTimer = null;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 4000);
}

function banner(text) {
  const b = $('banner');
  b.textContent = text || '';
  b.hidden = !text;
}

function show(section) {
  for (const id of ['boot', 'auth', 'chat']) $(id).hidden = id !== section;
}

function formatBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KB', 'MB', 'GB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function shortName(name) {
  return name && name.length > 16 ? `${name.slice(0, 8)}…${name.slice(-4)}` : name || '';
}

function localpart(userId) {
  return userId.startsWith('@') ? userId.slice(1).split(':')[0] : userId;
}

function timeOf(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// ---------------------------------------------------------------------------------------------
// Server status (from the host's JS API, not from Matrix)

function relayText(relay) {
  if (!relay) return 'not connected';
  if (typeof relay === 'string') return relay;
  if (typeof relay === 'object') {
    if (relay.state) return String(relay.state);
    if (relay.connected === true) return 'connected';
    if (relay.connected === false) return 'not connected';
  }
  return String(relay);
}

function renderPeers(peers) {
  $('st-peers-none').hidden = peers.length > 0;
  $('st-peers').replaceChildren(
    ...peers.map((p) => {
      let note = `${p.rooms} room${p.rooms === 1 ? '' : 's'}`;
      if (p.queued) note += ` · ${p.queued}${p.queued >= 1000 ? '+' : ''} waiting`;
      if (p.failures) note += ` · unreachable, retry ${timeOf(p.retry_at)}`;
      return el('li', { dataset: { server: p.server } }, el('code', { title: p.server }, shortName(p.server)), ` ${note}`);
    }),
  );
}

async function refreshStatus() {
  if (!window.hearth?.status) return;
  try {
    const s = await window.hearth.status();
    $('st-name').textContent = s.serverName ?? '—';
    $('st-version').textContent = s.version ?? '—';
    $('st-storage').textContent = formatBytes(s.storageBytes);
    $('st-users').textContent = s.users ?? '—';
    $('st-rooms').textContent = s.rooms ?? '—';
    $('st-relay').textContent = relayText(s.relay);
    $('st-relay-url').textContent = s.relayUrl ?? '';
    renderPeers(s.peers ?? []);
    const count = (n, word) => `${n ?? '?'} ${word}${n === 1 ? '' : 's'}`;
    $('status-summary').textContent =
      `${shortName(s.serverName)} · ${count(s.users, 'user')} · ${count(s.rooms, 'room')} · relay ${relayText(s.relay)}`;
    $('status-dot').className = 'dot dot-ok';
    if (s.error) banner(`Server problem: ${s.error.message ?? s.error}`);
  } catch (e) {
    $('status-dot').className = 'dot dot-bad';
    $('status-summary').textContent = 'server not answering';
  }
}

function initStatus() {
  $('status-toggle').addEventListener('click', () => {
    const open = $('status').hidden;
    $('status').hidden = !open;
    $('status-toggle').setAttribute('aria-expanded', String(open));
  });
  $('st-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('st-name').textContent);
      toast('Server name copied');
    } catch {
      toast('Copy failed: select the name instead');
    }
  });
  setInterval(() => {
    if (!document.hidden) refreshStatus();
  }, STATUS_EVERY_MS);
  const openRelay = dialog(
    'dlg-relay',
    async () => {
      const s = await window.hearth.status();
      $('relay-url').value = s.relayUrl && s.relayUrl !== location.origin ? s.relayUrl : '';
    },
    async () => {
      await window.hearth.setRelay($('relay-url').value.trim() || null);
      toast('Relay saved');
      refreshStatus();
    },
  );
  $('st-relay-change').addEventListener('click', openRelay);
}

// ---------------------------------------------------------------------------------------------
// Session

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    if (s && s.accessToken && s.userId && s.serverName === state.serverName) return s;
  } catch {
    // A corrupt entry is the same as none.
  }
  return null;
}

function saveSession(s) {
  state.session = s;
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

function sessionLost() {
  stopSync();
  saveSession(null);
  resetRooms();
  showAuth('Your session ended. Please log in again.');
}

let authMode = 'login';
function setAuthMode(mode) {
  authMode = mode;
  $('tab-login').setAttribute('aria-selected', String(mode === 'login'));
  $('tab-register').setAttribute('aria-selected', String(mode === 'register'));
  $('auth-submit').textContent = mode === 'login' ? 'Log in' : 'Create account';
  $('auth-pass').autocomplete = mode === 'login' ? 'current-password' : 'new-password';
  $('auth-error').textContent = '';
}

function showAuth(message) {
  show('auth');
  $('auth-server').textContent = state.serverName;
  $('auth-error').textContent = message || '';
  $('auth-user').focus();
}

async function register(username, password) {
  const body = { username, password, initial_device_display_name: 'Hearth page' };
  try {
    return await api('POST', `${CS}/register`, body, { auth: false });
  } catch (e) {
    // User-interactive auth: the first answer lists the flows; this server offers m.login.dummy.
    if (e.status === 401 && Array.isArray(e.body.flows)) {
      const auth = { type: 'm.login.dummy', session: e.body.session };
      return await api('POST', `${CS}/register`, { ...body, auth }, { auth: false });
    }
    throw e;
  }
}

async function login(user, password) {
  return api(
    'POST',
    `${CS}/login`,
    {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user },
      password,
      initial_device_display_name: 'Hearth page',
    },
    { auth: false },
  );
}

function initAuth() {
  $('tab-login').addEventListener('click', () => setAuthMode('login'));
  $('tab-register').addEventListener('click', () => setAuthMode('register'));
  $('auth-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const user = $('auth-user').value.trim();
    const pass = $('auth-pass').value;
    $('auth-error').textContent = '';
    $('auth-submit').disabled = true;
    try {
      if (authMode === 'register' && (user.startsWith('@') || user.includes(':'))) {
        throw new Error('Choose a username without "@" or ":" (just the local part).');
      }
      const res = authMode === 'login' ? await login(user, pass) : await register(user, pass);
      saveSession({
        userId: res.user_id,
        accessToken: res.access_token,
        deviceId: res.device_id,
        serverName: state.serverName,
      });
      $('auth-pass').value = '';
      await startChat();
    } catch (e) {
      $('auth-error').textContent = e instanceof MatrixError ? e.toString() : e.message;
    } finally {
      $('auth-submit').disabled = false;
    }
  });
  $('btn-logout').addEventListener('click', async () => {
    stopSync();
    try {
      await api('POST', `${CS}/logout`, {});
    } catch {
      // The token is forgotten locally either way.
    }
    saveSession(null);
    resetRooms();
    setAuthMode('login');
    showAuth('');
  });
}

// ---------------------------------------------------------------------------------------------
// Rooms model

function newRoom(id) {
  return {
    id,
    name: null,
    alias: null,
    topic: null,
    members: new Map(), // userId -> { membership, displayname }
    events: [],
    eventIds: new Set(),
    pending: new Map(), // txnId -> { body, eventId, failed }
    prevBatch: null,
    reachedStart: false,
    loadingOlder: false,
    unread: 0,
    highlight: 0,
    lastReceipt: null,
  };
}

function room(id) {
  let r = state.rooms.get(id);
  if (!r) {
    r = newRoom(id);
    state.rooms.set(id, r);
  }
  return r;
}

function resetRooms() {
  state.rooms.clear();
  state.invites.clear();
  state.current = null;
  state.since = null;
  state.membersOpen = false;
}

function applyState(r, ev) {
  if (typeof ev.state_key !== 'string' || !ev.content) return;
  switch (ev.type) {
    case 'm.room.member':
      r.members.set(ev.state_key, {
        membership: ev.content.membership,
        displayname: typeof ev.content.displayname === 'string' ? ev.content.displayname : null,
      });
      if (ev.state_key === state.session?.userId && ev.content.displayname) state.displayName = ev.content.displayname;
      break;
    case 'm.room.name':
      r.name = typeof ev.content.name === 'string' && ev.content.name ? ev.content.name : null;
      break;
    case 'm.room.canonical_alias':
      r.alias = typeof ev.content.alias === 'string' ? ev.content.alias : null;
      break;
    case 'm.room.topic':
      r.topic = typeof ev.content.topic === 'string' ? ev.content.topic : null;
      break;
  }
}

function displayName(r, userId) {
  return r?.members.get(userId)?.displayname || localpart(userId);
}

function roomName(r) {
  if (r.name) return r.name;
  if (r.alias) return r.alias;
  const me = state.session?.userId;
  const others = [...r.members.entries()]
    .filter(([id, m]) => id !== me && (m.membership === 'join' || m.membership === 'invite'))
    .map(([id]) => displayName(r, id));
  if (others.length) return others.slice(0, 3).join(', ') + (others.length > 3 ? ` and ${others.length - 3} more` : '');
  // Just joined or created: the room's state arrives with the next sync.
  if (r.members.size === 0) return r.id;
  return 'Empty room';
}

function addTimelineEvent(r, ev) {
  if (!ev.event_id || r.eventIds.has(ev.event_id)) return false;
  r.eventIds.add(ev.event_id);
  r.events.push(ev);
  const txn = ev.unsigned?.transaction_id;
  for (const [id, p] of r.pending) {
    if (id === txn || p.eventId === ev.event_id) r.pending.delete(id);
  }
  return true;
}

function applySync(res) {
  const rooms = res.rooms || {};
  let currentChanged = false;
  let membersChanged = false;
  for (const [roomId, data] of Object.entries(rooms.join || {})) {
    state.invites.delete(roomId);
    const r = room(roomId);
    for (const ev of data.state?.events || []) applyState(r, ev);
    const tl = data.timeline || {};
    if (tl.limited) {
      // A gap: drop what we had rather than show history with a hole in it.
      r.events = [];
      r.eventIds = new Set();
      r.reachedStart = false;
    }
    if (tl.limited || r.prevBatch === null) r.prevBatch = tl.prev_batch ?? r.prevBatch;
    for (const ev of tl.events || []) {
      applyState(r, ev);
      if (ev.type === 'm.room.member') membersChanged = true;
      if (addTimelineEvent(r, ev) && roomId === state.current) currentChanged = true;
      if (ev.type === 'm.room.create' && typeof ev.state_key === 'string') r.reachedStart = true;
    }
    if (tl.limited && roomId === state.current) currentChanged = true;
    const un = data.unread_notifications;
    if (un) {
      r.unread = un.notification_count ?? 0;
      r.highlight = un.highlight_count ?? 0;
    }
  }
  for (const [roomId, data] of Object.entries(rooms.invite || {})) {
    if (state.rooms.has(roomId)) continue;
    const stripped = newRoom(roomId);
    let inviter = null;
    for (const ev of data.invite_state?.events || []) {
      applyState(stripped, { ...ev, state_key: ev.state_key ?? '' });
      if (ev.type === 'm.room.member' && ev.state_key === state.session?.userId) inviter = ev.sender;
    }
    state.invites.set(roomId, { name: roomName(stripped), inviter });
  }
  for (const roomId of Object.keys(rooms.leave || {})) {
    state.rooms.delete(roomId);
    state.invites.delete(roomId);
    if (state.current === roomId) closeRoom();
  }
  renderRoomList();
  renderMe();
  if (state.current && state.rooms.has(state.current)) {
    renderRoomHeader();
    if (currentChanged) renderTimeline();
    if (membersChanged && state.membersOpen) loadMembers();
    markRead();
  }
}

// ---------------------------------------------------------------------------------------------
// Sync loop: long-poll /sync; each answer wakes the UI.

function stopSync() {
  state.syncGen++;
  state.syncAbort?.abort();
  state.syncAbort = null;
}

async function syncLoop() {
  const gen = ++state.syncGen;
  let backoff = 500;
  while (gen === state.syncGen) {
    const params = new URLSearchParams({ filter: SYNC_FILTER, timeout: state.since ? String(SYNC_TIMEOUT_MS) : '0' });
    if (state.since) params.set('since', state.since);
    const abort = new AbortController();
    state.syncAbort = abort;
    try {
      const res = await api('GET', `${CS}/sync?${params}`, undefined, { signal: abort.signal });
      if (gen !== state.syncGen) return;
      applySync(res);
      state.since = res.next_batch;
      backoff = 500;
      banner('');
    } catch (e) {
      if (e.name === 'AbortError' || gen !== state.syncGen) return;
      if (e.errcode === 'M_UNKNOWN_TOKEN') return;
      banner(`Sync failed: ${e}. Retrying…`);
      await new Promise((r) => setTimeout(r, e.retryAfterMs ?? backoff));
      backoff = Math.min(backoff * 2, 10000);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

function renderMe() {
  if (!state.session) return;
  $('me-name').textContent = state.displayName || localpart(state.session.userId);
  $('me-id').textContent = state.session.userId;
}

function renderRoomList() {
  const list = $('room-list');
  const rooms = [...state.rooms.values()].sort((a, b) => lastTs(b) - lastTs(a));
  list.replaceChildren(
    ...rooms.map((r) => {
      const badge = r.unread > 0 ? el('span', { class: r.highlight > 0 ? 'badge hl' : 'badge', 'aria-label': `${r.unread} unread` }, String(r.unread)) : null;
      const last = lastMessage(r);
      return el(
        'li',
        { class: r.id === state.current ? 'room-item active' : 'room-item', dataset: { roomId: r.id } },
        el(
          'button',
          { type: 'button', onclick: () => openRoom(r.id) },
          el('span', { class: 'room-item-name' }, roomName(r)),
          badge,
          el('small', { class: 'room-item-last' }, last),
        ),
      );
    }),
  );
  $('no-rooms').hidden = rooms.length > 0 || state.invites.size > 0;

  const invites = $('invite-list');
  invites.replaceChildren(
    ...[...state.invites.entries()].map(([id, inv]) =>
      el(
        'li',
        { class: 'invite-item', dataset: { roomId: id } },
        el('span', { class: 'room-item-name' }, inv.name === 'Empty room' ? id : inv.name),
        el('small', {}, inv.inviter ? `from ${inv.inviter}` : ''),
        el(
          'span',
          { class: 'invite-actions' },
          el('button', { type: 'button', class: 'primary', onclick: () => joinRoom(id) }, 'Accept'),
          el('button', { type: 'button', onclick: () => declineInvite(id) }, 'Decline'),
        ),
      ),
    ),
  );
  $('invites-title').hidden = state.invites.size === 0;
}

function lastTs(r) {
  const ev = r.events[r.events.length - 1];
  return ev?.origin_server_ts ?? 0;
}

function lastMessage(r) {
  for (let i = r.events.length - 1; i >= 0; i--) {
    const ev = r.events[i];
    if (ev.type === 'm.room.message' && typeof ev.content?.body === 'string') {
      return `${displayName(r, ev.sender)}: ${ev.content.body}`.slice(0, 80);
    }
  }
  return '';
}

function renderRoomHeader() {
  const r = state.rooms.get(state.current);
  if (!r) return;
  $('room-name').textContent = roomName(r);
  $('room-id').textContent = r.alias && r.alias !== roomName(r) ? r.alias : r.topic || r.id;
  $('room-id').title = r.id;
}

function describe(r, ev) {
  const who = displayName(r, ev.sender);
  const c = ev.content || {};
  switch (ev.type) {
    case 'm.room.message': {
      if (typeof c.body !== 'string') return { notice: `${who} deleted a message` };
      if (c.msgtype === 'm.emote') return { notice: `* ${who} ${c.body}` };
      return { body: c.body };
    }
    case 'm.room.encrypted':
      return { notice: `${who} sent an encrypted message` };
    case 'm.room.create':
      return { notice: `${who} created the room` };
    case 'm.room.name':
      return { notice: c.name ? `${who} named the room “${c.name}”` : `${who} removed the room name` };
    case 'm.room.topic':
      return { notice: `${who} set the topic: ${c.topic ?? ''}` };
    case 'm.room.member': {
      const target = c.displayname || localpart(ev.state_key || '');
      const prev = ev.unsigned?.prev_content || {};
      switch (c.membership) {
        case 'join':
          if (prev.membership === 'join') {
            return prev.displayname !== c.displayname
              ? { notice: `${prev.displayname || localpart(ev.state_key)} is now known as ${c.displayname || localpart(ev.state_key)}` }
              : null;
          }
          return { notice: `${target} joined` };
        case 'invite':
          return { notice: `${who} invited ${target}` };
        case 'leave':
          return ev.sender === ev.state_key
            ? { notice: `${displayName(r, ev.state_key)} left` }
            : { notice: `${who} removed ${displayName(r, ev.state_key)}` };
        case 'ban':
          return { notice: `${who} banned ${displayName(r, ev.state_key)}` };
        default:
          return null;
      }
    }
    default:
      return null;
  }
}

function eventItem(r, ev) {
  const d = describe(r, ev);
  if (!d) return null;
  if (d.notice) return el('li', { class: 'event notice', dataset: { eventId: ev.event_id } }, d.notice);
  const mine = ev.sender === state.session?.userId;
  return el(
    'li',
    { class: mine ? 'event msg mine' : 'event msg', dataset: { eventId: ev.event_id, sender: ev.sender } },
    el(
      'div',
      { class: 'meta' },
      el('span', { class: 'sender', title: ev.sender }, displayName(r, ev.sender)),
      el('time', { datetime: new Date(ev.origin_server_ts || 0).toISOString() }, timeOf(ev.origin_server_ts)),
    ),
    el('div', { class: 'body' }, d.body),
  );
}

function pendingItem(txn, p) {
  return el(
    'li',
    { class: p.failed ? 'event msg mine pending failed' : 'event msg mine pending', dataset: { txnId: txn } },
    el('div', { class: 'meta' }, el('span', { class: 'sender' }, state.displayName || localpart(state.session.userId)),
      el('span', { class: 'state' }, p.failed ? 'not sent' : 'sending…'),
      p.failed ? el('button', { type: 'button', class: 'link', onclick: () => retrySend(txn) }, 'retry') : null),
    el('div', { class: 'body' }, p.body),
  );
}

/// Re-renders the open room's timeline, keeping the reader where they were: at the bottom if
/// they were there, otherwise at the same distance from the bottom (for scroll-back).
function renderTimeline() {
  const r = state.rooms.get(state.current);
  if (!r) return;
  const box = $('timeline');
  const fromBottom = box.scrollHeight - box.scrollTop - box.clientHeight;
  const atBottom = fromBottom < 40;
  const items = r.events.map((ev) => eventItem(r, ev)).filter(Boolean);
  for (const [txn, p] of r.pending) items.push(pendingItem(txn, p));
  $('events').replaceChildren(...items);
  $('load-older').hidden = r.reachedStart || !r.prevBatch;
  $('timeline-start').hidden = !r.reachedStart;
  box.scrollTop = atBottom ? box.scrollHeight : box.scrollHeight - box.clientHeight - fromBottom;
}

// ---------------------------------------------------------------------------------------------
// Room actions

function openRoom(id) {
  if (!state.rooms.has(id)) room(id);
  state.current = id;
  localStorage.setItem(LAST_ROOM_KEY, id);
  document.body.classList.add('in-room');
  $('room-empty').hidden = true;
  $('room-header').hidden = false;
  $('timeline').hidden = false;
  $('composer').hidden = false;
  renderRoomHeader();
  renderRoomList();
  const box = $('timeline');
  $('events').replaceChildren();
  box.scrollTop = 0;
  renderTimeline();
  box.scrollTop = box.scrollHeight;
  if (state.membersOpen) loadMembers();
  markRead();
  if (window.matchMedia('(min-width: 700px)').matches) $('composer-input').focus();
}

function closeRoom() {
  state.current = null;
  document.body.classList.remove('in-room');
  $('room-empty').hidden = false;
  $('room-header').hidden = true;
  $('timeline').hidden = true;
  $('composer').hidden = true;
  setMembersOpen(false);
  renderRoomList();
}

/// Sends a read receipt for the newest event of the open room, so unread counts drop.
async function markRead() {
  const r = state.rooms.get(state.current);
  if (!r || document.hidden) return;
  const last = r.events[r.events.length - 1];
  if (!last || r.lastReceipt === last.event_id) return;
  r.lastReceipt = last.event_id;
  if (r.unread) {
    r.unread = 0;
    r.highlight = 0;
    renderRoomList();
  }
  try {
    await api('POST', `${CS}/rooms/${enc(r.id)}/receipt/m.read/${enc(last.event_id)}`, {});
  } catch (e) {
    r.lastReceipt = null;
    console.warn('read receipt failed', e);
  }
}

async function loadOlder() {
  const r = state.rooms.get(state.current);
  if (!r || r.loadingOlder || r.reachedStart || !r.prevBatch) return;
  r.loadingOlder = true;
  $('load-older').textContent = 'Loading…';
  try {
    const params = new URLSearchParams({ dir: 'b', from: r.prevBatch, limit: String(PAGE_SIZE) });
    const res = await api('GET', `${CS}/rooms/${enc(r.id)}/messages?${params}`);
    // Names of senders we have not seen yet; current membership stays as /sync said.
    for (const ev of res.state || []) {
      if (ev.type === 'm.room.member' && !r.members.has(ev.state_key)) applyState(r, ev);
    }
    const older = (res.chunk || []).filter((ev) => ev.event_id && !r.eventIds.has(ev.event_id)).reverse();
    for (const ev of older) r.eventIds.add(ev.event_id);
    r.events = older.concat(r.events);
    if (older.some((ev) => ev.type === 'm.room.create')) r.reachedStart = true;
    if (!res.end || (res.chunk || []).length === 0) r.reachedStart = true;
    r.prevBatch = res.end ?? null;
    if (r.id === state.current) renderTimeline();
  } catch (e) {
    toast(`Could not load history: ${e}`);
  } finally {
    r.loadingOlder = false;
    $('load-older').textContent = 'Load older messages';
  }
}

function sendText(body) {
  const r = state.rooms.get(state.current);
  if (!r) return;
  const txn = `hearth.${Date.now()}.${state.txnCounter++}`;
  r.pending.set(txn, { body, eventId: null, failed: false });
  renderTimeline();
  const box = $('timeline');
  box.scrollTop = box.scrollHeight;
  return deliver(r, txn);
}

async function deliver(r, txn) {
  const p = r.pending.get(txn);
  if (!p) return;
  try {
    const res = await api('PUT', `${CS}/rooms/${enc(r.id)}/send/m.room.message/${enc(txn)}`, { msgtype: 'm.text', body: p.body });
    p.eventId = res.event_id;
    // The sync may have delivered the event before this answer.
    if (r.eventIds.has(res.event_id)) r.pending.delete(txn);
  } catch (e) {
    p.failed = true;
    toast(`Message not sent: ${e}`);
  }
  if (r.id === state.current) renderTimeline();
}

function retrySend(txn) {
  const r = state.rooms.get(state.current);
  const p = r?.pending.get(txn);
  if (!p) return;
  p.failed = false;
  renderTimeline();
  deliver(r, txn);
}

async function joinRoom(target) {
  const res = await api('POST', `${CS}/join/${enc(target)}`, {});
  state.invites.delete(res.room_id);
  const r = room(res.room_id);
  if (target.startsWith('#')) r.alias ??= target;
  openRoom(res.room_id);
  return res.room_id;
}

async function declineInvite(id) {
  try {
    await api('POST', `${CS}/rooms/${enc(id)}/leave`, {});
    state.invites.delete(id);
    renderRoomList();
  } catch (e) {
    toast(`Could not decline: ${e}`);
  }
}

function setMembersOpen(open) {
  state.membersOpen = open;
  $('members').hidden = !open;
  $('btn-members').setAttribute('aria-expanded', String(open));
  if (open) loadMembers();
}

async function loadMembers() {
  const r = state.rooms.get(state.current);
  if (!r) return;
  try {
    const res = await api('GET', `${CS}/rooms/${enc(r.id)}/joined_members`);
    if (r.id !== state.current) return;
    const joined = Object.entries(res.joined || {}).map(([id, m]) => ({ id, name: m.display_name || localpart(id), note: '' }));
    const invited = [...r.members.entries()]
      .filter(([id, m]) => m.membership === 'invite' && !(res.joined || {})[id])
      .map(([id, m]) => ({ id, name: m.displayname || localpart(id), note: 'invited' }));
    const all = joined.sort((a, b) => a.name.localeCompare(b.name)).concat(invited);
    $('member-list').replaceChildren(
      ...all.map((m) =>
        el('li', { class: 'member', dataset: { userId: m.id } },
          el('span', { class: 'member-name' }, m.name),
          el('small', {}, m.note ? `${m.id} · ${m.note}` : m.id)),
      ),
    );
  } catch (e) {
    toast(`Could not load members: ${e}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Dialogs: each form's "ok" runs an action; errors stay in the dialog.

function dialog(id, onOpen, action) {
  const dlg = $(id);
  const form = dlg.querySelector('form');
  const err = form.querySelector('.error');
  // Cancel is a plain button, so that Enter in a text field submits the dialog: implicit
  // submission presses the form's first submit button.
  form.querySelector('[data-close]')?.addEventListener('click', () => dlg.close());
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const buttons = form.querySelectorAll('button');
    buttons.forEach((b) => (b.disabled = true));
    try {
      await action();
      dlg.close();
    } catch (e) {
      err.textContent = e instanceof MatrixError ? e.toString() : e.message;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  return () => {
    err.textContent = '';
    form.reset();
    onOpen?.();
    dlg.showModal();
  };
}

function initChat() {
  const openCreate = dialog('dlg-create', null, async () => {
    const name = $('create-name').value.trim();
    const alias = $('create-alias').value.trim().replace(/^#/, '').split(':')[0];
    const topic = $('create-topic').value.trim();
    const pub = $('create-public').checked;
    const body = { name, preset: pub ? 'public_chat' : 'private_chat', visibility: pub ? 'public' : 'private' };
    if (alias) body.room_alias_name = alias;
    if (topic) body.topic = topic;
    const res = await api('POST', `${CS}/createRoom`, body);
    const r = room(res.room_id);
    r.name ??= name;
    openRoom(res.room_id);
    refreshStatus();
  });
  const openJoin = dialog('dlg-join', null, async () => {
    const target = $('join-target').value.trim();
    if (!/^[!#]/.test(target)) throw new Error('A room id starts with "!", an alias with "#".');
    await joinRoom(target);
  });
  const openInvite = dialog(
    'dlg-invite',
    () => ($('invite-room-name').textContent = roomName(state.rooms.get(state.current))),
    async () => {
      const user = $('invite-user').value.trim();
      if (!/^@[^:]+:.+$/.test(user)) throw new Error('A user id looks like @name:server.');
      await api('POST', `${CS}/rooms/${enc(state.current)}/invite`, { user_id: user });
      toast(`Invited ${user}`);
    },
  );
  const openName = dialog(
    'dlg-name',
    () => ($('name-input').value = state.displayName || ''),
    async () => {
      const name = $('name-input').value.trim();
      await api('PUT', `${CS}/profile/${enc(state.session.userId)}/displayname`, { displayname: name });
      state.displayName = name || null;
      renderMe();
      toast('Display name saved');
    },
  );
  $('btn-create').addEventListener('click', openCreate);
  $('btn-join').addEventListener('click', openJoin);
  $('btn-invite').addEventListener('click', openInvite);
  $('btn-name').addEventListener('click', openName);
  $('btn-back').addEventListener('click', closeRoom);
  $('btn-members').addEventListener('click', () => setMembersOpen(!state.membersOpen));
  $('btn-members-close').addEventListener('click', () => setMembersOpen(false));
  $('load-older').addEventListener('click', loadOlder);
  $('timeline').addEventListener('scroll', () => {
    if ($('timeline').scrollTop < 60) loadOlder();
  });
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('composer-input');
    const body = input.value;
    if (!body.trim()) return;
    input.value = '';
    sendText(body);
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      markRead();
      refreshStatus();
    }
  });
}

async function startChat() {
  show('chat');
  resetRooms();
  renderMe();
  closeRoom();
  try {
    const p = await api('GET', `${CS}/profile/${enc(state.session.userId)}/displayname`);
    state.displayName = p.displayname || null;
  } catch {
    state.displayName = null;
  }
  renderMe();
  syncLoop();
  const last = localStorage.getItem(LAST_ROOM_KEY);
  if (last) {
    // Reopen the last room once the first sync says we are still in it.
    const wait = setInterval(() => {
      if (state.since) {
        clearInterval(wait);
        if (state.rooms.has(last) && !state.current) openRoom(last);
      }
    }, 50);
  }
  refreshStatus();
}

// ---------------------------------------------------------------------------------------------
// Boot

async function boot() {
  initStatus();
  initAuth();
  initChat();
  if (!window.hearth?.ready) {
    $('boot-text').textContent = 'The server host (/hearth.js) did not load, so there is no homeserver on this page.';
    $('status-dot').className = 'dot dot-bad';
    $('status-summary').textContent = 'no server';
    return;
  }
  const slow = setTimeout(() => ($('boot-text').textContent = 'Still starting your homeserver… (first start can take a few seconds)'), 5000);
  let ready;
  try {
    ready = await window.hearth.ready;
  } catch (e) {
    clearTimeout(slow);
    $('boot-text').textContent = `The homeserver failed to start: ${e?.message || e}`;
    $('status-dot').className = 'dot dot-bad';
    $('status-summary').textContent = 'failed';
    return;
  }
  clearTimeout(slow);
  // Storage and start-up problems of the host (quota, a database blocked by an old tab).
  window.addEventListener('hearth-error', (ev) => banner(`Server problem: ${ev.detail?.message ?? ev.detail}`));
  if (window.hearth.lastError) banner(`Server problem: ${window.hearth.lastError.message}`);
  state.serverName = ready.serverName;
  $('st-name').textContent = ready.serverName;
  await refreshStatus();
  state.session = loadSession();
  if (!state.session) {
    localStorage.removeItem(SESSION_KEY);
    setAuthMode('login');
    showAuth('');
    return;
  }
  try {
    const who = await api('GET', `${CS}/account/whoami`);
    if (who.user_id !== state.session.userId) throw new Error('token belongs to another user');
  } catch (e) {
    if (state.session) {
      saveSession(null);
      showAuth(`Please log in again (${e.message}).`);
    }
    return;
  }
  await startChat();
}

boot();
