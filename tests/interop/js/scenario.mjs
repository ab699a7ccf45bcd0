// Interop scenario: two matrix-js-sdk clients (memory store, no crypto) talk through a
// running hearth-testhost. Usage: node scenario.mjs <base url>   (or HEARTH_URL=...)
//
// Every step checks what the spec promises and fails with the failing request and answer.
// A step whose prerequisite failed is skipped, and a skip fails the run too. The last line
// is `js: N passed, M failed, K skipped`; the exit code is non-zero unless all passed.

import { isDeepStrictEqual } from "node:util";
import loglevel from "loglevel";
import * as sdk from "matrix-js-sdk";

const baseUrl = process.argv[2] ?? process.env.HEARTH_URL;
if (!baseUrl) {
    console.error("usage: node scenario.mjs <homeserver base url>");
    process.exit(2);
}
// The SDK's loggers (one per component, each set to debug when it is created, some as late as
// the first sync) would drown the step lines; quiet them at every step and after each start.
const sdkLogLevel = process.env.INTEROP_SDK_LOG ?? "silent";
const quietSdk = () => {
    for (const l of Object.values(loglevel.getLoggers())) l.setLevel(sdkLogLevel, false);
};
quietSdk();

const STEP_TIMEOUT_MS = 20_000;
const SYNC_TIMEOUT_MS = 30_000; // matrix-js-sdk's default pollTimeout
const WAKE_LIMIT_MS = 2_000; // "well before the timeout"
const PASSWORD = "interop correct horse battery staple";
const run = Math.random().toString(36).slice(2, 8);

// ---------------------------------------------------------------------------------------------
// A tiny step runner.

const passed = new Set();
const counts = { passed: 0, failed: 0, skipped: 0 };

class StepFailure extends Error {}

function check(cond, message) {
    if (!cond) throw new StepFailure(message);
}

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise.finally(() => clearTimeout(timer)),
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new StepFailure(`timed out after ${ms} ms: ${what}`)), ms);
        }),
    ]);
}

/** Polls `probe` until it returns something truthy. `what` may be a function, read at the end. */
async function until(probe, what, ms = STEP_TIMEOUT_MS - 2_000) {
    const deadline = performance.now() + ms;
    for (;;) {
        const v = probe();
        if (v) return v;
        if (performance.now() > deadline) {
            throw new StepFailure(`gave up after ${ms} ms waiting for: ${typeof what === "function" ? what() : what}`);
        }
        await new Promise((r) => setTimeout(r, 20));
    }
}

const http = []; // every HTTP exchange of every client, for failure reports

async function step(name, needs, body) {
    const missing = needs.filter((n) => !passed.has(n));
    if (missing.length > 0) {
        counts.skipped++;
        console.log(`SKIP ${name} (needs: ${missing.join(", ")})`);
        return;
    }
    quietSdk();
    const firstExchange = http.length;
    const started = performance.now();
    try {
        const note = await withTimeout(Promise.resolve().then(body), STEP_TIMEOUT_MS, name);
        passed.add(name);
        counts.passed++;
        const ms = (performance.now() - started).toFixed(0);
        console.log(`ok   ${name} (${ms} ms)${note ? ` - ${note}` : ""}`);
    } catch (e) {
        counts.failed++;
        console.log(`FAIL ${name}: ${describe(e)}`);
        // The step's last requests other than /sync polls, and every failed one.
        const calls = http.slice(firstExchange).filter((x) => !x.ok || !x.line.includes("/sync "));
        for (const x of calls.slice(-8)) console.log(`       ${x.ok ? " " : "!"} ${x.who}: ${x.line}`);
    }
}

function describe(e) {
    if (e instanceof sdk.MatrixError) return `${e.httpStatus} ${e.errcode}: ${e.data?.error ?? e.message}`;
    if (e instanceof StepFailure) return e.message;
    return e?.stack ?? String(e);
}

// ---------------------------------------------------------------------------------------------
// Clients. Each one records its HTTP exchanges (and its /sync long-polls) through `fetchFn`.

function recordingFetch(who) {
    const syncs = [];
    const fetchFn = async (input, init) => {
        const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
        const method = init?.method ?? "GET";
        const isSync = url.pathname.endsWith("/sync");
        const rec = isSync
            ? { started: performance.now(), ended: null, timeout: url.searchParams.get("timeout") }
            : null;
        if (rec) syncs.push(rec);
        // Logged before the answer, so a request that never returns shows up as pending.
        const entry = { who, ok: true, line: `${method} ${url.pathname} -> (no answer yet)` };
        http.push(entry);
        try {
            const resp = await fetch(input, init);
            if (rec) rec.ended = performance.now();
            entry.ok = resp.ok;
            entry.line = `${method} ${url.pathname} -> ${resp.status}`;
            if (isSync && resp.ok) noteDeliveries(who, url.searchParams.get("since"), await resp.clone().json());
            if (!resp.ok) entry.line += ` ${(await resp.clone().text()).slice(0, 400)}`;
            return resp;
        } catch (e) {
            if (rec) rec.ended = performance.now();
            entry.ok = false;
            entry.line = `${method} ${url.pathname} -> network error: ${e}`;
            throw e;
        }
    };
    return { fetchFn, syncs };
}

// Every timeline event id each client's /sync delivered, to catch an event delivered twice.
const deliveries = new Map(); // "who event_id" -> [since tokens of the syncs that carried it]

function noteDeliveries(who, since, body) {
    for (const [roomId, room] of Object.entries(body?.rooms?.join ?? {})) {
        for (const e of room?.timeline?.events ?? []) {
            const key = `${who} ${roomId} ${e.event_id}`;
            deliveries.set(key, [...(deliveries.get(key) ?? []), since ?? "(initial)"]);
        }
    }
}

function anonymousClient(who) {
    return sdk.createClient({ baseUrl, fetchFn: recordingFetch(who).fetchFn });
}

const users = {}; // name -> { userId, deviceId, accessToken, client, syncs }

async function startClient(name) {
    const u = users[name];
    const { fetchFn, syncs } = recordingFetch(name);
    u.syncs = syncs;
    u.client = sdk.createClient({
        baseUrl,
        fetchFn,
        userId: u.userId,
        deviceId: u.deviceId,
        accessToken: u.accessToken,
        store: new sdk.MemoryStore(),
    });
    quietSdk();
    let syncError = null;
    u.client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === sdk.SyncState.Error) syncError = data?.error ?? "unknown sync error";
    });
    await u.client.startClient({ initialSyncLimit: 50, pollTimeout: SYNC_TIMEOUT_MS });
    await until(() => {
        if (syncError) throw new StepFailure(`sync loop failed: ${describe(syncError)}`);
        const s = u.client.getSyncState();
        return s === sdk.SyncState.Prepared || s === sdk.SyncState.Syncing;
    }, `${name}'s first sync`);
}

/** Bodies of the room's messages as the server delivered them (local echoes left out). */
const timelineBodies = (room) =>
    room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message" && e.status === null)
        .map((e) => e.getContent().body);

/** Resolves with the first timeline event in `roomId` matching `pred`, already there or to come. */
function timelineEvent(client, roomId, pred) {
    return new Promise((resolve) => {
        const existing = client.getRoom(roomId)?.getLiveTimeline().getEvents().find((e) => pred(e));
        if (existing) return resolve({ event: existing, at: performance.now() });
        const listener = (event, room) => {
            if (room?.roomId === roomId && pred(event) && !event.isSending()) {
                client.off(sdk.RoomEvent.Timeline, listener);
                resolve({ event, at: performance.now() });
            }
        };
        client.on(sdk.RoomEvent.Timeline, listener);
    });
}

// ---------------------------------------------------------------------------------------------
// The scenario.

let roomId;
const alice = () => users.alice;
const bob = () => users.bob;
const aliceRoom = () => alice().client.getRoom(roomId);
const bobRoom = () => bob().client.getRoom(roomId);

for (const name of ["alice", "bob"]) {
    const localpart = `js${name}${run}`;
    await step(`register ${name} (user-interactive auth, m.login.dummy)`, [], async () => {
        const anon = anonymousClient(name);
        // First call without `auth`: the spec requires 401 with the flows and a session.
        let session;
        try {
            await anon.registerRequest({ username: localpart, password: PASSWORD });
            throw new StepFailure("register without auth succeeded; the spec requires a 401 with auth flows");
        } catch (e) {
            if (e instanceof StepFailure) throw e;
            check(e.httpStatus === 401, `register without auth: expected 401, got ${describe(e)}`);
            const flows = e.data?.flows ?? [];
            check(
                flows.some((f) => f.stages?.length === 1 && f.stages[0] === "m.login.dummy"),
                `401 body offers no m.login.dummy flow: ${JSON.stringify(e.data)}`,
            );
            session = e.data?.session;
            check(typeof session === "string" && session.length > 0, `401 body has no session: ${JSON.stringify(e.data)}`);
        }
        const r = await anon.register(localpart, PASSWORD, session, { type: "m.login.dummy", session });
        check(r.user_id?.startsWith(`@${localpart}:`), `user_id ${r.user_id}`);
        check(typeof r.access_token === "string" && typeof r.device_id === "string", JSON.stringify(r));
        users[name] = { userId: r.user_id };
        return r.user_id;
    });

    await step(`login ${name} with password`, [`register ${name} (user-interactive auth, m.login.dummy)`], async () => {
        const anon = anonymousClient(name);
        const flows = await anon.loginFlows();
        check(
            flows.flows?.some((f) => f.type === "m.login.password"),
            `GET /login does not offer m.login.password: ${JSON.stringify(flows)}`,
        );
        const r = await anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: localpart },
            password: PASSWORD,
            initial_device_display_name: "interop js",
        });
        check(r.user_id === users[name].userId, `login user_id ${r.user_id}`);
        Object.assign(users[name], { deviceId: r.device_id, accessToken: r.access_token });
        // A wrong password must be refused with 403 M_FORBIDDEN.
        try {
            await anon.loginRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: localpart },
                password: "wrong",
            });
            throw new StepFailure("login with a wrong password succeeded");
        } catch (e) {
            if (e instanceof StepFailure) throw e;
            check(e.httpStatus === 403 && e.errcode === "M_FORBIDDEN", `wrong password: ${describe(e)}`);
        }
    });

    await step(`${name} starts syncing`, [`login ${name} with password`], async () => {
        await startClient(name);
        const who = await users[name].client.whoami();
        check(who.user_id === users[name].userId, `whoami user_id ${who.user_id}`);
        check(who.device_id === users[name].deviceId, `whoami device_id ${who.device_id}`);
    });
}

const BOTH_SYNCING = ["alice starts syncing", "bob starts syncing"];

await step("alice creates a room", ["alice starts syncing"], async () => {
    const r = await alice().client.createRoom({ name: `interop ${run}`, preset: "private_chat" });
    roomId = r.room_id;
    check(typeof roomId === "string" && roomId.startsWith("!"), `room_id ${roomId}`);
    const room = await until(() => aliceRoom(), "the new room in alice's sync");
    await until(() => room.getMyMembership() === "join", "alice joined in her own room");
    await until(() => room.name === `interop ${run}`, () => `room name in sync (have ${room.name})`);
    const create = room.currentState.getStateEvents("m.room.create", "");
    check(create?.getSender() === alice().userId, "m.room.create sender");
    check(room.getVersion() === "11", `room version ${room.getVersion()} (Hearth creates version 11)`);
    const pl = room.currentState.getStateEvents("m.room.power_levels", "")?.getContent();
    check(pl?.users?.[alice().userId] === 100, `creator's power level: ${JSON.stringify(pl)}`);
    return roomId;
});

await step("alice invites bob", ["alice creates a room", ...BOTH_SYNCING], async () => {
    await alice().client.invite(roomId, bob().userId);
    const room = await until(() => bobRoom(), "the invited room in bob's sync");
    await until(() => room.getMyMembership() === "invite", "bob's membership is invite");
    const inviteEvent = room.currentState.getStateEvents("m.room.member", bob().userId);
    check(inviteEvent?.getSender() === alice().userId, `invite sender ${inviteEvent?.getSender()}`);
    // Stripped state lets the invitee show the room's name before joining.
    check(room.name === `interop ${run}`, `invited room's name from invite_state: ${room.name}`);
});

await step("bob joins", ["alice invites bob"], async () => {
    await bob().client.joinRoom(roomId);
    await until(() => bobRoom()?.getMyMembership() === "join", "bob's own membership is join");
    await until(() => aliceRoom().getMember(bob().userId)?.membership === "join", "alice sees bob joined");
    check(aliceRoom().getJoinedMemberCount() === 2, `alice counts ${aliceRoom().getJoinedMemberCount()} joined`);
    await until(() => bobRoom().getJoinedMemberCount() === 2, "bob counts 2 joined members");
});

await step("messages both ways arrive in order", ["bob joins"], async () => {
    const expected = [];
    const a = alice().client;
    const b = bob().client;
    // A burst from alice: the SDK queues them; the server must keep their order.
    const burst = [1, 2, 3, 4, 5].map((i) => `alice ${run} #${i}`);
    const sends = burst.map((body) => a.sendTextMessage(roomId, body));
    const ids = (await Promise.all(sends)).map((r) => r.event_id);
    check(ids.every((id) => typeof id === "string" && id.startsWith("$")), `event ids ${ids}`);
    check(new Set(ids).size === ids.length, "event ids are unique");
    expected.push(...burst);
    await timelineEvent(b, roomId, (e) => e.getContent().body === burst.at(-1));
    // Then a conversation: each reply is sent after the other side saw the message before it.
    for (let i = 1; i <= 3; i++) {
        const ping = `bob ${run} ping ${i}`;
        await b.sendTextMessage(roomId, ping);
        await timelineEvent(a, roomId, (e) => e.getContent().body === ping);
        const pong = `alice ${run} pong ${i}`;
        await a.sendTextMessage(roomId, pong);
        await timelineEvent(b, roomId, (e) => e.getContent().body === pong);
        expected.push(ping, pong);
    }
    for (const [who, room] of [["alice", aliceRoom], ["bob", bobRoom]]) {
        await until(
            () => isDeepStrictEqual(timelineBodies(room()), expected),
            () => `${who}'s timeline to hold the ${expected.length} messages in send order; has ${JSON.stringify(timelineBodies(room()))}`,
            5_000,
        );
    }
    const sender = bobRoom().getLiveTimeline().getEvents().find((e) => e.getContent().body === burst[0])?.getSender();
    check(sender === alice().userId, `sender of alice's message as bob sees it: ${sender}`);
    return `${expected.length} messages`;
});

await step("a waiting /sync long-poll is woken by the other user's message", ["bob joins"], async () => {
    // Wait until bob's client has a /sync in flight that the server has held for a while:
    // that proves the server waits instead of answering an idle poll at once.
    const poll = await until(() => {
        const s = bob().syncs.at(-1);
        return s && s.ended === null && performance.now() - s.started >= 500 ? s : null;
    }, "bob's /sync being held open by the server for 500 ms");
    check(poll.timeout === String(SYNC_TIMEOUT_MS), `bob polls with timeout=${poll.timeout}`);
    const body = `wake up ${run}`;
    const arrived = timelineEvent(bob().client, roomId, (e) => e.getContent().body === body);
    const sentAt = performance.now();
    await alice().client.sendTextMessage(roomId, body);
    const { at } = await arrived;
    const latency = at - sentAt;
    check(poll.ended !== null && poll.ended >= sentAt, "the poll that was waiting returned after the send");
    check(latency < WAKE_LIMIT_MS, `delivered after ${latency.toFixed(0)} ms; limit ${WAKE_LIMIT_MS} ms`);
    return `delivered ${latency.toFixed(1)} ms after the send; the poll had waited ${(sentAt - poll.started).toFixed(0)} ms of its ${SYNC_TIMEOUT_MS} ms`;
});

await step("display name is set and seen in member events", ["bob joins"], async () => {
    const name = `Alice ${run}`;
    await alice().client.setDisplayName(name);
    const profile = await bob().client.getProfileInfo(alice().userId);
    check(profile.displayname === name, `GET profile displayname: ${JSON.stringify(profile)}`);
    // The spec propagates a profile change as an m.room.member (join) event to every joined room.
    const { event } = await timelineEvent(
        bob().client,
        roomId,
        (e) => e.getType() === "m.room.member" && e.getStateKey() === alice().userId && e.getContent().displayname === name,
    );
    check(event.getContent().membership === "join", `membership in the profile update: ${event.getContent().membership}`);
    await until(() => bobRoom().getMember(alice().userId)?.name === name, "bob's member list shows the new name");
});

await step("account data is set and read back through sync", ["alice starts syncing"], async () => {
    const type = "org.hearth.interop";
    const content = { run, n: 42 };
    await alice().client.setAccountData(type, content); // resolves once sync echoes it back
    const synced = alice().client.getAccountData(type)?.getContent();
    check(isDeepStrictEqual(synced, content), `global account data in sync: ${JSON.stringify(synced)}`);
    const fromServer = await alice().client.getAccountDataFromServer(type);
    check(isDeepStrictEqual(fromServer, content), `GET account data: ${JSON.stringify(fromServer)}`);
    if (!passed.has("alice creates a room")) return "global only (no room)";
    const roomType = "org.hearth.interop.room";
    await alice().client.setRoomAccountData(roomId, roomType, { run, room: true });
    await until(() => aliceRoom().getAccountData(roomType)?.getContent()?.run === run, "room account data in sync");
    // Account data is private: bob must not see alice's.
    check(!bob()?.client?.getAccountData(type), "bob sees alice's account data");
});

await step("typing notifications are seen by the other user", ["bob joins"], async () => {
    const member = () => bobRoom().getMember(alice().userId);
    await alice().client.sendTyping(roomId, true, 20_000);
    await until(() => member()?.typing === true, "bob sees alice typing");
    await alice().client.sendTyping(roomId, false, 0);
    await until(() => member()?.typing === false, "bob sees alice stop typing");
});

await step("read receipts are seen by the other user", ["messages both ways arrive in order"], async () => {
    const last = [...bobRoom().getLiveTimeline().getEvents()]
        .reverse()
        .find((e) => e.getType() === "m.room.message" && e.getSender() === alice().userId);
    check(last, "bob has a message from alice to acknowledge");
    await bob().client.sendReadReceipt(last, sdk.ReceiptType.Read);
    await until(
        () => aliceRoom().getEventReadUpTo(bob().userId) === last.getId(),
        () => `alice sees bob's m.read receipt on ${last.getId()} (has ${aliceRoom().getEventReadUpTo(bob().userId)})`,
    );
    const receipt = aliceRoom().getReadReceiptForUserId(bob().userId);
    check(receipt?.data?.ts > 0, `receipt timestamp: ${JSON.stringify(receipt)}`);
});

await step("bob leaves", ["bob joins"], async () => {
    await bob().client.leave(roomId);
    await until(() => aliceRoom().getMember(bob().userId)?.membership === "leave", "alice sees bob's leave", 5_000);
    await until(() => bobRoom()?.getMyMembership() === "leave", () => `bob's own membership is leave (is ${bobRoom()?.getMyMembership()})`, 5_000);
    check(aliceRoom().getJoinedMemberCount() === 1, `alice counts ${aliceRoom().getJoinedMemberCount()} joined`);
    // After leaving, bob must not receive the room's new messages.
    const body = `after bob left ${run}`;
    await alice().client.sendTextMessage(roomId, body);
    // The SDK updates the local echo in place when the server's copy arrives.
    await until(() => timelineBodies(aliceRoom()).includes(body), "alice's message to come back through her sync");
    await new Promise((r) => setTimeout(r, 1_000));
    check(!timelineBodies(bobRoom()).includes(body), "bob received a message sent after he left");
});

await step("no /sync delivers a timeline event twice", ["bob joins"], async () => {
    const twice = [...deliveries].filter(([, tokens]) => tokens.length > 1);
    const shown = twice.slice(0, 3).map(([k, t]) => `${k} (since ${t.join(", ")})`);
    check(twice.length === 0, `${twice.length} events delivered more than once, e.g. ${shown.join("; ")}`);
    return `${deliveries.size} deliveries checked`;
});

for (const u of Object.values(users)) u.client?.stopClient();
console.log(`js: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
process.exit(counts.failed === 0 && counts.skipped === 0 ? 0 : 1);
