"""Interop with Synapse, without rooms: what goes over federation between a Synapse and a Hearth
that share no room. Clients (matrix-nio, raw requests where nio has no call) on both sides.

    .venv/bin/python federation.py --synapse-url URL --synapse-name NAME \
                                   --hearth-url URL --hearth-name NAME

The runner (run.sh) starts both servers. The last line is
`federation: N passed, M failed, K skipped`; the exit code is non-zero unless all passed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from nio import ProfileGetResponse, ProfileSetDisplayNameResponse, RoomCreateResponse, RoomVisibility
from signedjson.sign import SignatureVerifyException, verify_signed_json

from common import RUN, StepFailure, Steps, User, expect, ok, parse_servers, short


def check_device(got_keys: Any, owner: User, asker: User) -> None:
    """`got_keys` is the `device_keys` map of a /keys/query answer to `asker`; it must hold
    `owner`'s device exactly as uploaded, with a valid signature."""
    devices = (got_keys or {}).get(owner.user_id)
    expect(isinstance(devices, dict) and owner.device_id in devices, f"device {owner.device_id} of {owner.user_id}", got_keys)
    device = dict(devices[owner.device_id])
    # A server may add `unsigned` (the device's display name); everything else is the owner's.
    device.pop("unsigned", None)
    expect(device == owner.device_keys, f"the keys {owner} uploaded: {short(owner.device_keys)}", device)
    try:
        verify_signed_json(device, owner.user_id, owner.verify_key)
    except SignatureVerifyException as e:
        raise StepFailure(f"expected {owner}'s valid signature on the keys {asker} got; got {e}") from e


async def main() -> int:
    synapse, hearth = parse_servers(__doc__ or "")
    steps = Steps("federation")
    sam, hal = User(synapse, "sam"), User(hearth, "hal")
    room: dict[str, str] = {}

    await steps.run(f"register {sam}", [], sam.register)
    await steps.run(f"register {hal}", [], hal.register)
    both = [f"register {sam}", f"register {hal}"]

    # -- profiles ------------------------------------------------------------------------------

    async def remote_profile(owner: User, reader: User, name: str) -> str:
        ok(await owner.client.set_displayname(name), ProfileSetDisplayNameResponse, f"{owner} sets a display name")
        got = ok(await reader.client.get_profile(owner.user_id), ProfileGetResponse, f"{reader} GET /profile/{owner.user_id}")
        expect(got.displayname == name, f"displayname {name!r}", got.displayname)
        status, one = await reader.request("GET", ["profile", owner.user_id, "displayname"])
        expect(status == 200 and one == {"displayname": name}, f'200 {{"displayname": {name!r}}} for the single field', f"{status} {one}")
        return f"{reader.server.label} read {name!r} from {owner.server.label}"

    await steps.run(
        "Synapse user reads a Hearth user's profile over federation",
        both,
        lambda: remote_profile(hal, sam, f"Hal {RUN}"),
    )
    await steps.run(
        "Hearth user reads a Synapse user's profile over federation",
        both,
        lambda: remote_profile(sam, hal, f"Sam {RUN}"),
    )

    async def unknown_profile(reader: User, other: User) -> str:
        ghost = f"@nobody{RUN}:{other.server.name}"
        status, body = await reader.request("GET", ["profile", ghost])
        expect(status == 404 and (body or {}).get("errcode") == "M_NOT_FOUND", f"404 M_NOT_FOUND for {ghost}", f"{status} {body}")
        return None

    await steps.run("Synapse answers 404 for an unknown Hearth user's profile", both, lambda: unknown_profile(sam, hal))
    await steps.run("Hearth answers 404 for an unknown Synapse user's profile", both, lambda: unknown_profile(hal, sam))

    # -- end-to-end encryption keys ------------------------------------------------------------

    for u in (sam, hal):

        async def upload(u: User = u) -> str:
            u.make_keys()
            body = await u.request_ok("POST", "keys/upload", {"device_keys": u.device_keys, "one_time_keys": u.one_time_keys})
            counts = body.get("one_time_key_counts", {})
            expect(counts.get("signed_curve25519") == len(u.one_time_keys), f"one_time_key_counts {len(u.one_time_keys)}", body)
            return None

        await steps.run(f"{u} uploads device keys and one-time keys", [f"register {u}"], upload)

    keys = [f"{sam} uploads device keys and one-time keys", f"{hal} uploads device keys and one-time keys"]

    async def query(asker: User, owner: User) -> str:
        body = await asker.request_ok("POST", "keys/query", {"device_keys": {owner.user_id: []}, "timeout": 10000})
        expect(not body.get("failures"), "no failures", body.get("failures"))
        check_device(body.get("device_keys"), owner, asker)
        # Asking for the one device by id gives the same.
        body = await asker.request_ok("POST", "keys/query", {"device_keys": {owner.user_id: [owner.device_id]}})
        check_device(body.get("device_keys"), owner, asker)
        return None

    await steps.run("Hearth's /keys/query returns a Synapse user's device keys", keys, lambda: query(hal, sam))
    await steps.run("Synapse's /keys/query returns a Hearth user's device keys", keys, lambda: query(sam, hal))

    async def claim(asker: User, owner: User) -> str:
        body = await asker.request_ok(
            "POST",
            "keys/claim",
            {"one_time_keys": {owner.user_id: {owner.device_id: "signed_curve25519"}}, "timeout": 10000},
        )
        expect(not body.get("failures"), "no failures", body.get("failures"))
        got = ((body.get("one_time_keys") or {}).get(owner.user_id) or {}).get(owner.device_id) or {}
        expect(len(got) == 1, f"one signed_curve25519 key of {owner.user_id}'s {owner.device_id}", body)
        key_id, key = next(iter(got.items()))
        expect(owner.one_time_keys.get(key_id) == key, f"one of the uploaded keys ({short(owner.one_time_keys)})", {key_id: key})
        try:
            verify_signed_json(key, owner.user_id, owner.verify_key)
        except SignatureVerifyException as e:
            raise StepFailure(f"expected {owner}'s valid signature on the claimed key; got {e}") from e
        return key_id

    await steps.run("Hearth's /keys/claim gets a Synapse user's one-time key", keys, lambda: claim(hal, sam))
    await steps.run("Synapse's /keys/claim gets a Hearth user's one-time key", keys, lambda: claim(sam, hal))

    # -- the room directory --------------------------------------------------------------------

    alias_local = f"interop{RUN}"
    alias = f"#{alias_local}:{hearth.name}"
    room_name = f"Hearth public room {RUN}"
    topic = f"topic {RUN}"

    async def create_public() -> str:
        r = ok(
            await hal.client.room_create(
                visibility=RoomVisibility.public, alias=alias_local, name=room_name, topic=topic
            ),
            RoomCreateResponse,
            "createRoom",
        )
        room["id"] = r.room_id
        local = await hal.request_ok("GET", "publicRooms")
        expect(any(c.get("room_id") == r.room_id for c in local.get("chunk", [])), f"{r.room_id} in Hearth's own directory", local)
        return r.room_id

    await steps.run(f"{hal} creates a public room with alias {alias}", [f"register {hal}"], create_public)
    public = [f"{hal} creates a public room with alias {alias}", f"register {sam}"]

    def check_entry(chunk: list[dict[str, Any]]) -> None:
        entry = next((c for c in chunk if c.get("room_id") == room["id"]), None)
        expect(entry is not None, f"{room['id']} among the rooms", chunk)
        want = {
            "name": room_name,
            "topic": topic,
            "canonical_alias": alias,
            "num_joined_members": 1,
            "world_readable": False,
            "guest_can_join": False,
            "join_rule": "public",
        }
        got = {k: entry.get(k) for k in want}
        # The spec: "When not present, the room is assumed to be public."
        got["join_rule"] = entry.get("join_rule", "public")
        expect(got == want, short(want), entry)

    async def list_remote() -> str:
        body = await sam.request_ok("GET", "publicRooms", query={"server": hearth.name})
        check_entry(body.get("chunk", []))
        return f"{len(body.get('chunk', []))} room(s)"

    await steps.run(f"Synapse's /publicRooms?server={hearth.name} lists the Hearth room", public, list_remote)

    async def search_remote() -> str:
        body = await sam.request_ok(
            "POST", "publicRooms", {"limit": 10, "filter": {"generic_search_term": room_name}}, query={"server": hearth.name}
        )
        check_entry(body.get("chunk", []))
        miss = await sam.request_ok(
            "POST", "publicRooms", {"filter": {"generic_search_term": f"no such room {RUN}"}}, query={"server": hearth.name}
        )
        expect(miss.get("chunk") == [], "no rooms for a search term no room has", miss)
        return None

    await steps.run(f"Synapse's filtered POST /publicRooms?server={hearth.name} finds the Hearth room", public, search_remote)

    async def resolve_alias() -> str:
        body = await sam.request_ok("GET", ["directory", "room", alias])
        expect(body.get("room_id") == room["id"], f"room_id {room['id']}", body)
        expect(hearth.name in (body.get("servers") or []), f"{hearth.name} among the servers", body)
        ghost = f"#nothing{RUN}:{hearth.name}"
        status, miss = await sam.request("GET", ["directory", "room", ghost])
        expect(status == 404 and (miss or {}).get("errcode") == "M_NOT_FOUND", f"404 M_NOT_FOUND for {ghost}", f"{status} {miss}")
        return None

    await steps.run("Synapse resolves the Hearth room's alias over federation", public, resolve_alias)

    for u in (sam, hal):
        await u.close()
    return steps.summary()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
