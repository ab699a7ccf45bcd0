"""Interop with Synapse: rooms shared across the two servers. Needs Hearth's room federation
(make_join/send_join, invites, /send transactions, backfill); `run.sh --rooms` runs it after
federation.py.

    .venv/bin/python rooms.py --synapse-url URL --synapse-name NAME \
                              --hearth-url URL --hearth-name NAME

sam is on Synapse, hal on Hearth. The rooms:
- A: made on Synapse, private; sam writes history, invites hal, hal joins. Messages, display
  names, typing, receipts, a power-level change, device-list updates, hal's leave, then sam
  bans hal and hal cannot come back.
- B: made on Hearth, public with an alias; sam joins by alias. Messages, a kick (sam rejoins),
  a ban (sam cannot rejoin).
- C: made on Synapse, public with an alias; hal finds it in Synapse's directory and joins by
  alias.
- D: made on Hearth, private; hal invites sam, sam joins.
To-device messages go both ways outside any room. The last line is
`rooms: N passed, M failed, K skipped`; the exit code is non-zero unless all passed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from nio import (
    JoinResponse,
    ProfileSetDisplayNameResponse,
    ReceiptEvent,
    RoomBanResponse,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomKickResponse,
    RoomLeaveResponse,
    RoomMessagesResponse,
    RoomPutStateResponse,
    RoomSendResponse,
    RoomTypingResponse,
    RoomVisibility,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    TypingNoticeEvent,
)
from nio.api import RoomPreset

from common import (
    RUN,
    Server,
    Steps,
    User,
    ephemeral,
    expect,
    find_event,
    ok,
    parse_servers,
    room_events,
    short,
)

HISTORY = 3  # messages sam writes in room A before hal is invited


async def send_text(sender: User, room_id: str, text: str) -> str:
    r = ok(
        await sender.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text}),
        RoomSendResponse,
        f"{sender} sends {text!r}",
    )
    return r.event_id


async def receive_text(receiver: User, sender: User, room_id: str, text: str, event_id: str) -> None:
    ev = await receiver.sync_until(
        lambda r: find_event(r, room_id, type="m.room.message", content__body=text), f"{text!r} from {sender}"
    )
    expect(ev.get("sender") == sender.user_id, f"sender {sender.user_id}", ev)
    expect(ev.get("event_id") == event_id, f"event id {event_id} (the one {sender} got)", ev.get("event_id"))


async def history_bodies(reader: User, room_id: str, limit: int = 100) -> list[str]:
    """The bodies of the room's text messages as `reader`'s server gives them through
    /messages, oldest first."""
    hist = ok(await reader.client.room_messages(room_id, limit=limit), RoomMessagesResponse, f"{reader}'s /messages")
    return [e.source["content"].get("body") for e in reversed(hist.chunk) if e.source.get("type") == "m.room.message"]


async def join_via(user: User, room: str, via: Server) -> tuple[int, Any]:
    """POST /join/{roomIdOrAlias}?via=...: the only way to name a server for a room id."""
    return await user.request("POST", ["join", room], {}, query={"via": via.name, "server_name": via.name})


async def main() -> int:
    synapse, hearth = parse_servers(__doc__ or "")
    steps = Steps("rooms")
    sam, hal = User(synapse, "sam"), User(hearth, "hal")
    rooms: dict[str, str] = {}
    sent_a: list[str] = []  # the bodies of the conversation in room A, in order

    await steps.run(f"register {sam}", [], sam.register)
    await steps.run(f"register {hal}", [], hal.register)
    both = [f"register {sam}", f"register {hal}"]

    # -- room A: made on Synapse, joined from Hearth by invite --------------------------------------

    async def make_a() -> str:
        r = ok(
            await sam.client.room_create(name=f"Synapse room {RUN}", preset=RoomPreset.private_chat),
            RoomCreateResponse,
            "createRoom on Synapse",
        )
        rooms["A"] = r.room_id
        for i in range(1, HISTORY + 1):
            await send_text(sam, r.room_id, f"before hal joined {i} {RUN}")
        vis = ok(
            await sam.client.room_get_state_event(r.room_id, "m.room.history_visibility"),
            RoomGetStateEventResponse,
            "history visibility",
        )
        expect(vis.content.get("history_visibility") == "shared", "history_visibility shared", vis.content)
        return r.room_id

    await steps.run("sam creates a private room on Synapse and writes history", both, make_a)

    async def invite_a() -> str:
        rid = rooms["A"]
        ok(await sam.client.room_invite(rid, hal.user_id), RoomInviteResponse, "invite")
        info = await hal.sync_until(lambda r: r.rooms.invite.get(rid), f"an invite to {rid}")
        mine = [e for e in info.invite_state if getattr(e, "state_key", None) == hal.user_id]
        expect(mine and mine[0].membership == "invite", f"an m.room.member invite for {hal.user_id} in invite_state", [e.source for e in info.invite_state])
        expect(mine[0].sender == sam.user_id, f"the invite sent by {sam.user_id}", mine[0].sender)
        return None

    await steps.run("sam invites hal; the invite reaches Hearth", ["sam creates a private room on Synapse and writes history"], invite_a)

    async def join_a() -> str:
        rid = rooms["A"]
        ok(await hal.client.join(rid), JoinResponse, f"{hal} joins {rid}")
        await hal.sync_until(lambda r: rid in r.rooms.join, f"{rid} among his joined rooms")
        ev = await sam.sync_until(
            lambda r: find_event(r, rid, type="m.room.member", state_key=hal.user_id, content__membership="join"),
            "hal's join event",
        )
        expect(ev.get("sender") == hal.user_id, f"the join sent by {hal.user_id}", ev)
        for u in (sam, hal):
            members = await u.request_ok("GET", ["rooms", rid, "joined_members"])
            ids = sorted((members.get("joined") or {}).keys())
            expect(ids == sorted([sam.user_id, hal.user_id]), f"{u.server.label}'s joined_members: sam and hal", ids)
        return None

    await steps.run("hal joins the Synapse room (make_join/send_join)", ["sam invites hal; the invite reaches Hearth"], join_a)
    in_a = ["hal joins the Synapse room (make_join/send_join)"]

    async def history_a() -> str:
        bodies = await history_bodies(hal, rooms["A"])
        want = [f"before hal joined {i} {RUN}" for i in range(1, HISTORY + 1)]
        expect(bodies[:HISTORY] == want, f"/messages on Hearth to start with {want}", bodies)
        return f"{len(bodies)} messages"

    await steps.run("hal reads the history from before his join through /messages (backfill)", in_a, history_a)

    async def conversation_a() -> str:
        rid = rooms["A"]
        for i in range(1, 4):
            for sender, receiver in ((sam, hal), (hal, sam)):
                text = f"{sender.name} turn {i} {RUN}"
                event_id = await send_text(sender, rid, text)
                await receive_text(receiver, sender, rid, text, event_id)
                sent_a.append(text)
        for u in (sam, hal):
            turns = [b for b in await history_bodies(u, rid) if " turn " in (b or "")]
            expect(turns == sent_a, f"{u.server.label}'s /messages in the order sent: {sent_a}", turns)
        return f"{len(sent_a)} messages"

    await steps.run("messages both ways in the Synapse room, same order on both servers", in_a, conversation_a)

    for owner, watcher in ((hal, sam), (sam, hal)):

        async def display_name(owner: User = owner, watcher: User = watcher) -> str:
            rid, name = rooms["A"], f"{owner.name.title()} {owner.server.label} {RUN}"
            ok(await owner.client.set_displayname(name), ProfileSetDisplayNameResponse, "set displayname")
            ev = await watcher.sync_until(
                lambda r: find_event(r, rid, type="m.room.member", state_key=owner.user_id, content__displayname=name),
                f"{owner}'s member event with display name {name!r}",
            )
            expect(ev["content"].get("membership") == "join", "membership join in the profile update", ev)
            member = await watcher.request_ok("GET", ["rooms", rid, "state", "m.room.member", owner.user_id])
            expect(member.get("displayname") == name, f"{watcher.server.label}'s room state to hold {name!r}", member)
            return None

        await steps.run(f"{owner.server.label} user's new display name reaches {watcher.server.label}", in_a, display_name)

    for typer, watcher in ((sam, hal), (hal, sam)):

        async def typing(typer: User = typer, watcher: User = watcher) -> str:
            rid = rooms["A"]

            def typing_users(r: SyncResponse) -> list[list[str]]:
                return [e.users for e in ephemeral(r, rid) if isinstance(e, TypingNoticeEvent)]

            ok(await typer.client.room_typing(rid, True, 20_000), RoomTypingResponse, "typing on")
            await watcher.sync_until(lambda r: any(typer.user_id in u for u in typing_users(r)), f"{typer} typing")
            ok(await typer.client.room_typing(rid, False), RoomTypingResponse, "typing off")
            await watcher.sync_until(lambda r: any(typer.user_id not in u for u in typing_users(r)), f"{typer} stop typing")
            return None

        await steps.run(f"typing from {typer.server.label} reaches {watcher.server.label}", in_a, typing)

    for reader, author in ((hal, sam), (sam, hal)):

        async def receipt(reader: User = reader, author: User = author) -> str:
            rid, text = rooms["A"], f"read me, {reader.name} {RUN}"
            event_id = await send_text(author, rid, text)
            await receive_text(reader, author, rid, text, event_id)
            # An unthreaded receipt (nio would send `"thread_id": null`, which is invalid).
            await reader.request_ok("POST", ["rooms", rid, "receipt", "m.read", event_id], {})

            def found(r: SyncResponse) -> Any:
                for e in ephemeral(r, rid):
                    if isinstance(e, ReceiptEvent):
                        for rc in e.receipts:
                            if rc.user_id == reader.user_id and rc.event_id == event_id and rc.receipt_type == "m.read":
                                return rc
                return None

            rc = await author.sync_until(found, f"{reader}'s m.read receipt for {event_id}")
            expect(rc.timestamp > 0, "a receipt timestamp", rc.timestamp)
            return None

        await steps.run(f"a read receipt from {reader.server.label} reaches {author.server.label}", in_a, receipt)

    async def power_levels() -> str:
        rid, topic = rooms["A"], f"topic by hal {RUN}"
        status, body = await hal.request("PUT", ["rooms", rid, "state", "m.room.topic", ""], {"topic": topic})
        expect(status == 403 and (body or {}).get("errcode") == "M_FORBIDDEN", "403 M_FORBIDDEN for hal's topic at power 0", f"{status} {body}")
        pl = ok(await sam.client.room_get_state_event(rid, "m.room.power_levels"), RoomGetStateEventResponse, "power levels")
        content = dict(pl.content)
        content["users"] = {**content.get("users", {}), hal.user_id: 50}
        ok(await sam.client.room_put_state(rid, "m.room.power_levels", content), RoomPutStateResponse, "raise hal to 50")
        ev = await hal.sync_until(
            lambda r: next(
                (e for e in room_events(r, rid) if e.get("type") == "m.room.power_levels" and e["content"].get("users", {}).get(hal.user_id) == 50),
                None,
            ),
            "the power levels that give him 50",
        )
        expect(ev.get("sender") == sam.user_id, f"the change sent by {sam.user_id}", ev)
        ok(await hal.client.room_put_state(rid, "m.room.topic", {"topic": topic}), RoomPutStateResponse, "hal sets the topic at 50")
        got = await sam.sync_until(lambda r: find_event(r, rid, type="m.room.topic", content__topic=topic), f"hal's topic {topic!r}")
        expect(got.get("sender") == hal.user_id, f"the topic sent by {hal.user_id}", got)
        return None

    await steps.run("a power-level change on Synapse takes effect on Hearth (hal may then set the topic)", in_a, power_levels)

    for owner, watcher in ((hal, sam), (sam, hal)):

        async def new_device(owner: User = owner, watcher: User = watcher) -> str:
            second = User(owner.server, owner.name)
            second.localpart = owner.localpart
            login = await second.request("POST", "login", {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": owner.localpart},
                "password": "interop correct horse battery staple",
                "device_id": f"SECOND{RUN.upper()}",
            })  # fmt: skip
            expect(login[0] == 200, "200 from the second login", login)
            second.client.access_token = login[1]["access_token"]
            second.device_id = login[1]["device_id"]
            second.make_keys()
            await second.request_ok("POST", "keys/upload", {"device_keys": second.device_keys})
            await watcher.sync_until(
                lambda r: owner.user_id in r.device_list.changed, f"{owner.user_id} in device_lists.changed"
            )
            body = await watcher.request_ok("POST", "keys/query", {"device_keys": {owner.user_id: []}})
            devices = (body.get("device_keys") or {}).get(owner.user_id) or {}
            got = devices.get(second.device_id, {})
            got = {k: v for k, v in got.items() if k != "unsigned"}
            expect(got == second.device_keys, f"{owner}'s new device {second.device_id} with its keys", devices)
            await second.close()
            return second.device_id

        await steps.run(f"a new {owner.server.label} device reaches {watcher.server.label} (m.device_list_update)", in_a, new_device)

    # -- to-device, no room needed -----------------------------------------------------------

    for sender, receiver in ((sam, hal), (hal, sam)):

        async def to_device(sender: User = sender, receiver: User = receiver) -> str:
            content = {"run": RUN, "from": sender.user_id}
            msg = ToDeviceMessage("org.hearth.interop", receiver.user_id, receiver.device_id, content)
            ok(await sender.client.to_device(msg), ToDeviceResponse, "sendToDevice")

            def found(r: SyncResponse) -> Any:
                return next(
                    (e.source for e in r.to_device_events if getattr(e, "source", {}).get("type") == "org.hearth.interop"),
                    None,
                )

            ev = await receiver.sync_until(found, "the org.hearth.interop to-device message")
            expect(ev.get("sender") == sender.user_id and ev.get("content") == content, f"sender {sender.user_id} and content {content}", ev)
            return None

        await steps.run(f"a to-device message from {sender.server.label} reaches {receiver.server.label}", both, to_device)

    # -- room B: made on Hearth, public, joined from Synapse by alias -----------------------------

    alias_b = f"#hearth{RUN}:{hearth.name}"

    async def make_b() -> str:
        r = ok(
            await hal.client.room_create(visibility=RoomVisibility.public, alias=f"hearth{RUN}", name=f"Hearth room {RUN}"),
            RoomCreateResponse,
            "createRoom on Hearth",
        )
        rooms["B"] = r.room_id
        await send_text(hal, r.room_id, f"hearth history {RUN}")
        return r.room_id

    await steps.run(f"hal creates a public room on Hearth with alias {alias_b}", both, make_b)

    async def join_b() -> str:
        rid = rooms["B"]
        r = ok(await sam.client.join(alias_b), JoinResponse, f"{sam} joins {alias_b}")
        expect(r.room_id == rid, f"room id {rid}", r.room_id)
        await sam.sync_until(lambda s: rid in s.rooms.join, f"{rid} among his joined rooms")
        await hal.sync_until(
            lambda s: find_event(s, rid, type="m.room.member", state_key=sam.user_id, content__membership="join"),
            "sam's join event",
        )
        bodies = await history_bodies(sam, rid)
        expect(f"hearth history {RUN}" in bodies, "Synapse's /messages to hold the message sent before the join", bodies)
        return None

    await steps.run("sam joins the Hearth room by alias", [f"hal creates a public room on Hearth with alias {alias_b}"], join_b)
    in_b = ["sam joins the Hearth room by alias"]

    async def conversation_b() -> str:
        rid = rooms["B"]
        for sender, receiver in ((hal, sam), (sam, hal)):
            text = f"in the Hearth room, from {sender.name} {RUN}"
            await receive_text(receiver, sender, rid, text, await send_text(sender, rid, text))
        return None

    await steps.run("messages both ways in the Hearth room", in_b, conversation_b)

    async def kick_b() -> str:
        rid = rooms["B"]
        ok(await hal.client.room_kick(rid, sam.user_id, reason="interop kick"), RoomKickResponse, "kick")
        ev = await sam.sync_until(
            lambda s: find_event(s, rid, "leave", type="m.room.member", state_key=sam.user_id, content__membership="leave"),
            "his kick (membership leave) among his left rooms",
        )
        expect(ev.get("sender") == hal.user_id, f"the kick sent by {hal.user_id}", ev)
        ok(await sam.client.join(alias_b), JoinResponse, f"{sam} joins {alias_b} again after the kick")
        await hal.sync_until(
            lambda s: find_event(s, rid, type="m.room.member", state_key=sam.user_id, content__membership="join"),
            "sam's join after the kick",
        )
        return None

    await steps.run("hal kicks sam from the Hearth room; sam can join again", in_b, kick_b)

    async def ban_b() -> str:
        rid = rooms["B"]
        ok(await hal.client.room_ban(rid, sam.user_id, reason="interop ban"), RoomBanResponse, "ban")
        ev = await sam.sync_until(
            lambda s: find_event(s, rid, "leave", type="m.room.member", state_key=sam.user_id, content__membership="ban"),
            "his ban among his left rooms",
        )
        expect(ev.get("sender") == hal.user_id, f"the ban sent by {hal.user_id}", ev)
        status, body = await sam.request("POST", ["join", alias_b], {})
        expect(status == 403 and (body or {}).get("errcode") == "M_FORBIDDEN", "403 M_FORBIDDEN when the banned sam joins again", f"{status} {body}")
        return None

    await steps.run("hal bans sam from the Hearth room; sam cannot join again", ["hal kicks sam from the Hearth room; sam can join again"], ban_b)

    # -- room C: made on Synapse, public, found and joined from Hearth --------------------------

    alias_c = f"#synapse{RUN}:{synapse.name}"

    async def make_c() -> str:
        r = ok(
            await sam.client.room_create(visibility=RoomVisibility.public, alias=f"synapse{RUN}", name=f"Synapse public {RUN}"),
            RoomCreateResponse,
            "createRoom on Synapse",
        )
        rooms["C"] = r.room_id
        return r.room_id

    await steps.run(f"sam creates a public room on Synapse with alias {alias_c}", both, make_c)
    c_made = [f"sam creates a public room on Synapse with alias {alias_c}"]

    async def directory_c() -> str:
        body = await hal.request_ok("GET", "publicRooms", query={"server": synapse.name})
        entry = next((c for c in body.get("chunk", []) if c.get("room_id") == rooms["C"]), None)
        expect(entry and entry.get("canonical_alias") == alias_c and entry.get("name") == f"Synapse public {RUN}", f"{rooms['C']} with its alias and name", body)
        found = await hal.request_ok("GET", ["directory", "room", alias_c])
        expect(found.get("room_id") == rooms["C"] and synapse.name in found.get("servers", []), f"{rooms['C']} on {synapse.name}", found)
        return None

    await steps.run("Hearth's /publicRooms?server= and /directory/room find the Synapse room", c_made, directory_c)

    async def join_c() -> str:
        rid = rooms["C"]
        r = ok(await hal.client.join(alias_c), JoinResponse, f"{hal} joins {alias_c}")
        expect(r.room_id == rid, f"room id {rid}", r.room_id)
        await sam.sync_until(
            lambda s: find_event(s, rid, type="m.room.member", state_key=hal.user_id, content__membership="join"),
            "hal's join event",
        )
        text = f"welcome to Synapse {RUN}"
        await receive_text(hal, sam, rid, text, await send_text(sam, rid, text))
        return None

    await steps.run("hal joins the Synapse room by alias", c_made, join_c)

    # -- room D: made on Hearth, joined from Synapse by invite ----------------------------------

    async def invite_d() -> str:
        r = ok(await hal.client.room_create(name=f"Hearth private {RUN}", preset=RoomPreset.private_chat), RoomCreateResponse, "createRoom")
        rid = rooms["D"] = r.room_id
        ok(await hal.client.room_invite(rid, sam.user_id), RoomInviteResponse, "invite")
        await sam.sync_until(lambda s: s.rooms.invite.get(rid), f"the invite to {rid}")
        ok(await sam.client.join(rid), JoinResponse, f"{sam} accepts")
        await hal.sync_until(
            lambda s: find_event(s, rid, type="m.room.member", state_key=sam.user_id, content__membership="join"),
            "sam's join event",
        )
        text = f"thanks for the invite {RUN}"
        await receive_text(hal, sam, rid, text, await send_text(sam, rid, text))
        return None

    await steps.run("hal invites sam to a private Hearth room; sam joins and writes", both, invite_d)

    # -- leaving room A, then a ban there -------------------------------------------------------

    async def leave_a() -> str:
        rid = rooms["A"]
        ok(await hal.client.room_leave(rid), RoomLeaveResponse, "leave")
        await hal.sync_until(lambda s: rid in s.rooms.leave, f"{rid} among his left rooms")
        await sam.sync_until(
            lambda s: find_event(s, rid, type="m.room.member", state_key=hal.user_id, content__membership="leave"),
            "hal's leave event",
        )
        text = f"after hal left {RUN}"
        await send_text(sam, rid, text)
        await asyncio.sleep(1)
        resp = await hal.sync(timeout=1000)
        leaked = [e for s in ("join", "leave") for e in room_events(resp, rid, s) if e.get("content", {}).get("body") == text]
        expect(not leaked, "no message sent after hal left to reach him", leaked)
        return None

    await steps.run("hal leaves the Synapse room and gets nothing after", in_a, leave_a)

    async def ban_a() -> str:
        rid = rooms["A"]
        ok(await sam.client.room_ban(rid, hal.user_id, reason="interop ban"), RoomBanResponse, "ban")
        status, body = await join_via(hal, rid, synapse)
        expect(status == 403 and (body or {}).get("errcode") == "M_FORBIDDEN", "403 M_FORBIDDEN when the banned hal joins", f"{status} {short(body)}")
        return None

    await steps.run("sam bans hal, who left; hal cannot join again", ["hal leaves the Synapse room and gets nothing after"], ban_a)

    async def no_duplicates() -> str:
        twice = [
            f"{u}: {event_id} in {room_id} (since {', '.join(tokens)})"
            for u in (sam, hal)
            for (room_id, event_id), tokens in u.deliveries.items()
            if len(tokens) > 1
        ]
        expect(not twice, "no timeline event delivered twice", twice[:3])
        return f"{sum(len(u.deliveries) for u in (sam, hal))} deliveries checked"

    await steps.run("no /sync delivers a timeline event twice", both, no_duplicates)

    for u in (sam, hal):
        await u.close()
    return steps.summary()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
