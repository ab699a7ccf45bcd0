"""Interop scenario: two matrix-nio clients talk through a running hearth-testhost.

Usage: .venv/bin/python scenario.py <base url>   (or HEARTH_URL=...)

matrix-nio validates every response against its own JSON schemas, so a response of the wrong
shape fails here even when the status is 200. A step whose prerequisite failed is skipped, and a
skip fails the run too. The last line is `nio: N passed, M failed, K skipped`; the exit code is
non-zero unless all passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinResponse,
    LoginInfoResponse,
    LoginResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomLeaveResponse,
    RoomMemberEvent,
    RoomMessageText,
    RoomMessagesResponse,
    RoomReadMarkersResponse,
    RoomSendResponse,
    RoomTypingResponse,
    SyncResponse,
    TypingNoticeEvent,
    UnknownAccountDataEvent,
    UpdateReceiptMarkerResponse,
    WhoamiResponse,
)
from nio.api import Api
from nio.events.account_data import FullyReadEvent

STEP_TIMEOUT_S = 20.0
SYNC_TIMEOUT_MS = 30_000
WAKE_LIMIT_S = 2.0  # "well before the timeout"
PASSWORD = "interop correct horse battery staple"
RUN = secrets.token_hex(3)

# nio warns whenever an error answer (which some steps provoke on purpose) fails its success
# schema; keep those out of the step lines unless asked for.
logging.getLogger("nio").setLevel(os.environ.get("INTEROP_NIO_LOG", "ERROR"))


class StepFailure(Exception):
    pass


def check(cond: Any, message: str) -> None:
    if not cond:
        raise StepFailure(message)


def ok(resp: Any, expected: type, what: str) -> Any:
    """The response, if nio parsed it as `expected`; otherwise a failure naming the server's answer."""
    if isinstance(resp, expected):
        return resp
    if isinstance(resp, ErrorResponse):
        status = getattr(resp.transport_response, "status", "?")
        raise StepFailure(f"{what}: HTTP {status} {resp.status_code}: {resp.message}")
    raise StepFailure(f"{what}: expected {expected.__name__}, got {type(resp).__name__}: {resp}")


# ---------------------------------------------------------------------------------------------
# Step runner

passed: set[str] = set()
counts = {"passed": 0, "failed": 0, "skipped": 0}


async def step(name: str, needs: list[str], body: Callable[[], Awaitable[str | None]]) -> None:
    missing = [n for n in needs if n not in passed]
    if missing:
        counts["skipped"] += 1
        print(f"SKIP {name} (needs: {', '.join(missing)})", flush=True)
        return
    started = time.monotonic()
    try:
        note = await asyncio.wait_for(body(), STEP_TIMEOUT_S)
    except StepFailure as e:
        counts["failed"] += 1
        print(f"FAIL {name}: {e}", flush=True)
        return
    except asyncio.TimeoutError:
        counts["failed"] += 1
        print(f"FAIL {name}: timed out after {STEP_TIMEOUT_S:.0f} s", flush=True)
        return
    except Exception:  # noqa: BLE001 - any crash is a failed step, reported in full
        counts["failed"] += 1
        print(f"FAIL {name}: {traceback.format_exc()}", flush=True)
        return
    passed.add(name)
    counts["passed"] += 1
    ms = (time.monotonic() - started) * 1000
    print(f"ok   {name} ({ms:.0f} ms){' - ' + note if note else ''}", flush=True)


# ---------------------------------------------------------------------------------------------
# Users and sync helpers


class User:
    def __init__(self, base_url: str, name: str) -> None:
        self.name = name
        self.localpart = f"nio{name}{RUN}"
        config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=False)
        self.client = AsyncClient(base_url, self.localpart, config=config)
        self.user_id = ""
        # (room, event id) -> `since` tokens of the syncs whose timeline carried it.
        self.deliveries: dict[tuple[str, str], list[str]] = {}

    async def sync(self, timeout: int, **kwargs: Any) -> SyncResponse:
        """One /sync from the client's last token, noting each timeline event it delivers."""
        since = self.client.next_batch or "(initial)"
        resp = ok(await self.client.sync(timeout=timeout, **kwargs), SyncResponse, f"{self.name}'s /sync")
        for room_id, info in resp.rooms.join.items():
            for e in info.timeline.events:
                if getattr(e, "event_id", None):
                    self.deliveries.setdefault((room_id, e.event_id), []).append(since)
        return resp

    async def sync_until(self, probe: Callable[[SyncResponse], Any], what: str, limit_s: float = 15.0) -> Any:
        """Incremental syncs (short long-polls) until `probe` finds what it looks for."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            found = probe(await self.sync(timeout=1000))
            if found:
                return found
        raise StepFailure(f"{self.name} never saw {what} within {limit_s:.0f} s")


def joined_timeline(resp: SyncResponse, room_id: str) -> list:
    info = resp.rooms.join.get(room_id)
    return info.timeline.events if info else []


def ephemeral(resp: SyncResponse, room_id: str) -> list:
    info = resp.rooms.join.get(room_id)
    return info.ephemeral if info else []


# ---------------------------------------------------------------------------------------------
# The scenario


async def main(base_url: str) -> int:
    alice, bob = User(base_url, "alice"), User(base_url, "bob")
    room: dict[str, str] = {}
    conversation: list[str] = []

    for u in (alice, bob):

        async def register(u: User = u) -> str:
            r = ok(await u.client.register(u.localpart, PASSWORD, device_name="interop nio"), RegisterResponse, "register")
            check(r.user_id.startswith(f"@{u.localpart}:"), f"user_id {r.user_id}")
            u.user_id = r.user_id
            # The same name again: 400 M_USER_IN_USE.
            other = User(base_url, u.name)
            again = await other.client.register(u.localpart, PASSWORD)
            await other.client.close()
            check(isinstance(again, ErrorResponse), f"second registration of {u.localpart} succeeded")
            check(again.status_code == "M_USER_IN_USE", f"second registration: {again.status_code} {again.message}")
            return r.user_id

        await step(f"register {u.name} (m.login.dummy)", [], register)

        async def login(u: User = u) -> None:
            info = ok(await u.client.login_info(), LoginInfoResponse, "GET /login")
            check("m.login.password" in info.flows, f"login flows {info.flows}")
            r = ok(await u.client.login(PASSWORD, device_name="interop nio"), LoginResponse, "login")
            check(r.user_id == u.user_id, f"login user_id {r.user_id}")
            who = ok(await u.client.whoami(), WhoamiResponse, "whoami")
            check(who.user_id == u.user_id and who.device_id == r.device_id, f"whoami {who}")
            # The first sync: no `since`, gives the starting point for every later one.
            first = await u.sync(timeout=0, full_state=True)
            check(first.next_batch, "initial sync has no next_batch")

        await step(f"login {u.name} with password", [f"register {u.name} (m.login.dummy)"], login)

        async def wrong_password(u: User = u) -> None:
            other = User(base_url, u.name)
            r = await other.client.login("not the password")
            check(isinstance(r, ErrorResponse), "login with a wrong password succeeded")
            check(r.status_code == "M_FORBIDDEN", f"wrong password: {r.status_code} {r.message}")
            check(getattr(r.transport_response, "status", None) == 403, "wrong password: HTTP status is not 403")
            await other.client.close()

        await step(f"{u.name}'s wrong password is refused", [f"register {u.name} (m.login.dummy)"], wrong_password)

    both = ["login alice with password", "login bob with password"]

    async def create_room() -> str:
        r = ok(await alice.client.room_create(name=f"interop {RUN}"), RoomCreateResponse, "createRoom")
        check(r.room_id.startswith("!"), f"room_id {r.room_id}")
        room["id"] = r.room_id

        def created(resp: SyncResponse) -> bool:
            return r.room_id in resp.rooms.join

        await alice.sync_until(created, "the new room in her sync")
        state = alice.client.rooms[r.room_id]
        check(state.name == f"interop {RUN}", f"room name {state.name}")
        check(state.room_version == "11", f"room version {state.room_version} (Hearth creates version 11)")
        check(state.power_levels.get_user_level(alice.user_id) == 100, "creator is not at power level 100")
        return r.room_id

    await step("alice creates a room", ["login alice with password"], create_room)

    async def invite() -> None:
        ok(await alice.client.room_invite(room["id"], bob.user_id), RoomInviteResponse, "invite")

        def invited(resp: SyncResponse) -> Any:
            return resp.rooms.invite.get(room["id"])

        info = await bob.sync_until(invited, "the invite")
        members = [e for e in info.invite_state if getattr(e, "state_key", None) == bob.user_id]
        check(members and members[0].membership == "invite", f"invite_state for bob: {info.invite_state}")
        check(members[0].sender == alice.user_id, f"invite sender {members[0].sender}")

    await step("alice invites bob", ["alice creates a room", *both], invite)

    async def join() -> None:
        ok(await bob.client.join(room["id"]), JoinResponse, "join")
        await bob.sync_until(lambda r: room["id"] in r.rooms.join, "the room among his joined rooms")

        def bob_joined(resp: SyncResponse) -> bool:
            return any(
                isinstance(e, RoomMemberEvent) and e.state_key == bob.user_id and e.membership == "join"
                for e in joined_timeline(resp, room["id"])
            )

        await alice.sync_until(bob_joined, "bob's join event")
        check(alice.client.rooms[room["id"]].joined_count == 2, "alice does not count 2 joined members")

    await step("bob joins", ["alice invites bob"], join)

    async def messages() -> str:
        rid = room["id"]
        # Alternate turns; each message is sent after the sender saw the one before it.
        for i in range(1, 4):
            for sender, receiver in ((alice, bob), (bob, alice)):
                text = f"{sender.name} {RUN} turn {i}"
                sent = ok(
                    await sender.client.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": text}),
                    RoomSendResponse,
                    "send",
                )
                check(sent.event_id.startswith("$"), f"event_id {sent.event_id}")

                def got(resp: SyncResponse, text: str = text) -> Any:
                    return next(
                        (e for e in joined_timeline(resp, rid) if isinstance(e, RoomMessageText) and e.body == text),
                        None,
                    )

                ev = await receiver.sync_until(got, f"'{text}'")
                check(ev.sender == sender.user_id, f"sender {ev.sender}")
                check(ev.event_id == sent.event_id, f"event id {ev.event_id} != {sent.event_id}")
                conversation.append(text)
        # Both see the same order in the room's history (/messages, newest first).
        for u in (alice, bob):
            hist = ok(await u.client.room_messages(rid, limit=50), RoomMessagesResponse, "/messages")
            bodies = [e.body for e in reversed(hist.chunk) if isinstance(e, RoomMessageText)]
            check(bodies == conversation, f"{u.name}'s /messages order: {bodies}")
        return f"{len(conversation)} messages"

    await step("messages both ways arrive in order", ["bob joins"], messages)

    async def long_poll() -> str:
        rid = room["id"]
        text = f"wake up {RUN}"
        # Catch up first (bob's own last message is still ahead of his token), so the poll below is idle.
        await bob.sync(timeout=0)
        started = time.monotonic()
        poll = asyncio.create_task(bob.sync(timeout=SYNC_TIMEOUT_MS))
        await asyncio.sleep(0.5)
        if poll.done():
            raise StepFailure(f"the server answered an idle /sync at once instead of holding it: {poll.result()}")
        sent_at = time.monotonic()
        ok(
            await alice.client.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": text}),
            RoomSendResponse,
            "send",
        )
        resp = await poll
        latency = time.monotonic() - sent_at
        events = [e for e in joined_timeline(resp, rid) if isinstance(e, RoomMessageText) and e.body == text]
        check(events, f"the woken poll did not carry the message; timeline: {joined_timeline(resp, rid)}")
        check(latency < WAKE_LIMIT_S, f"delivered after {latency * 1000:.0f} ms; limit {WAKE_LIMIT_S * 1000:.0f} ms")
        return f"delivered {latency * 1000:.1f} ms after the send; the poll had waited {(sent_at - started) * 1000:.0f} ms of its {SYNC_TIMEOUT_MS} ms"

    await step("a waiting /sync long-poll is woken by the other user's message", ["bob joins"], long_poll)

    async def display_name() -> None:
        name = f"Alice {RUN}"
        ok(await alice.client.set_displayname(name), ProfileSetDisplayNameResponse, "set displayname")
        got = ok(await bob.client.get_displayname(alice.user_id), ProfileGetDisplayNameResponse, "get displayname")
        check(got.displayname == name, f"GET displayname {got.displayname}")

        def renamed(resp: SyncResponse) -> Any:
            return next(
                (
                    e
                    for e in joined_timeline(resp, room["id"])
                    if isinstance(e, RoomMemberEvent) and e.state_key == alice.user_id and e.content.get("displayname") == name
                ),
                None,
            )

        ev = await bob.sync_until(renamed, "alice's m.room.member event with her new display name")
        check(ev.membership == "join", f"membership in the profile update: {ev.membership}")
        check(bob.client.rooms[room["id"]].user_name(alice.user_id) == name, "bob's room member list has the old name")

    await step("display name is set and seen in member events", ["bob joins"], display_name)

    async def account_data() -> None:
        # matrix-nio has no setter for arbitrary account data; its generic `send` does the PUT.
        kind = "org.hearth.interop"
        content = {"run": RUN, "n": 7}
        path = Api._build_path(["user", alice.user_id, "account_data", kind])
        put = await alice.client.send(
            "PUT", path, json.dumps(content), headers={"Authorization": f"Bearer {alice.client.access_token}"}
        )
        check(put.status == 200, f"PUT account data: {put.status} {await put.text()}")

        def seen(resp: SyncResponse) -> Any:
            return next(
                (e for e in resp.account_data_events if isinstance(e, UnknownAccountDataEvent) and e.type == kind),
                None,
            )

        ev = await alice.sync_until(seen, "her account data")
        check(ev.content == content, f"account data content {ev.content}")

    await step("account data is set and read back through sync", ["login alice with password"], account_data)

    async def typing() -> None:
        rid = room["id"]
        ok(await alice.client.room_typing(rid, True, 20_000), RoomTypingResponse, "typing on")

        def typing_users(resp: SyncResponse) -> list[list[str]]:
            return [e.users for e in ephemeral(resp, rid) if isinstance(e, TypingNoticeEvent)]

        await bob.sync_until(lambda r: any(alice.user_id in u for u in typing_users(r)), "alice typing")
        ok(await alice.client.room_typing(rid, False), RoomTypingResponse, "typing off")
        await bob.sync_until(lambda r: any(alice.user_id not in u for u in typing_users(r)), "alice stop typing")

    await step("typing notifications are seen by the other user", ["bob joins"], typing)

    async def receipts() -> None:
        rid = room["id"]
        sent = ok(
            await alice.client.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": f"read me {RUN}"}),
            RoomSendResponse,
            "send",
        )
        await bob.sync_until(
            lambda r: any(getattr(e, "event_id", None) == sent.event_id for e in joined_timeline(r, rid)), "the message"
        )
        ok(await bob.client.update_receipt_marker(rid, sent.event_id), UpdateReceiptMarkerResponse, "receipt")

        def receipt(resp: SyncResponse) -> Any:
            for e in ephemeral(resp, rid):
                if isinstance(e, ReceiptEvent):
                    for r in e.receipts:
                        if r.user_id == bob.user_id and r.event_id == sent.event_id and r.receipt_type == "m.read":
                            return r
            return None

        r = await alice.sync_until(receipt, "bob's m.read receipt")
        check(r.timestamp > 0, f"receipt ts {r.timestamp}")
        # /read_markers: the fully-read marker is room account data of the reader only.
        ok(await bob.client.room_read_markers(rid, sent.event_id, sent.event_id), RoomReadMarkersResponse, "read_markers")

        def fully_read(resp: SyncResponse) -> Any:
            info = resp.rooms.join.get(rid)
            return next((e for e in (info.account_data if info else []) if isinstance(e, FullyReadEvent)), None)

        marker = await bob.sync_until(fully_read, "his m.fully_read marker")
        check(marker.event_id == sent.event_id, f"m.fully_read at {marker.event_id}")

    await step("read receipts are seen by the other user", ["bob joins"], receipts)

    async def leave() -> None:
        rid = room["id"]
        ok(await bob.client.room_leave(rid), RoomLeaveResponse, "leave")
        await bob.sync_until(lambda r: rid in r.rooms.leave, "the room among his left rooms")

        def bob_left(resp: SyncResponse) -> bool:
            return any(
                isinstance(e, RoomMemberEvent) and e.state_key == bob.user_id and e.membership == "leave"
                for e in joined_timeline(resp, rid)
            )

        await alice.sync_until(bob_left, "bob's leave event")
        text = f"after bob left {RUN}"
        ok(
            await alice.client.room_send(rid, "m.room.message", {"msgtype": "m.text", "body": text}),
            RoomSendResponse,
            "send",
        )
        resp = await bob.sync(timeout=1000)
        leaked = [
            e
            for info in (*resp.rooms.join.values(), *resp.rooms.leave.values())
            for e in info.timeline.events
            if isinstance(e, RoomMessageText) and e.body == text
        ]
        check(not leaked, "bob received a message sent after he left")

    await step("bob leaves", ["bob joins"], leave)

    async def no_duplicates() -> str:
        twice = [
            f"{u.name}: {event_id} in {room_id} (since {', '.join(tokens)})"
            for u in (alice, bob)
            for (room_id, event_id), tokens in u.deliveries.items()
            if len(tokens) > 1
        ]
        check(not twice, f"{len(twice)} events delivered more than once, e.g. {'; '.join(twice[:3])}")
        return f"{sum(len(u.deliveries) for u in (alice, bob))} deliveries checked"

    await step("no /sync delivers a timeline event twice", ["bob joins"], no_duplicates)

    for u in (alice, bob):
        await u.client.close()
    print(f"nio: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped", flush=True)
    return 0 if counts["failed"] == 0 and counts["skipped"] == 0 else 1


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEARTH_URL")
    if not url:
        print("usage: scenario.py <homeserver base url>", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(url)))
