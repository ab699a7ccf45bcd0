"""What the Synapse interop scenarios share: the step runner, users with a matrix-nio client on
either server, raw requests where nio has no call (or would hide the answer), sync helpers, and
signed device keys.

A step reports what it expected and what it got. A step whose prerequisite failed is skipped,
and a skip fails the run too. Each scenario ends with `<name>: N passed, M failed, K skipped`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from nio import AsyncClient, AsyncClientConfig, ErrorResponse, RegisterResponse, SyncResponse
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

STEP_TIMEOUT_S = 30.0
PASSWORD = "interop correct horse battery staple"
RUN = secrets.token_hex(3)

logging.getLogger("nio").setLevel(os.environ.get("INTEROP_NIO_LOG", "ERROR"))


class StepFailure(Exception):
    pass


def short(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def expect(cond: Any, expected: str, got: Any) -> None:
    """Fails the step with `expected ...; got ...` unless `cond` holds."""
    if not cond:
        raise StepFailure(f"expected {expected}; got {short(got)}")


def ok(resp: Any, expected: type, what: str) -> Any:
    """The response, if nio parsed it as `expected`; otherwise a failure naming the server's answer."""
    if isinstance(resp, expected):
        return resp
    if isinstance(resp, ErrorResponse):
        status = getattr(resp.transport_response, "status", "?")
        raise StepFailure(f"{what}: expected {expected.__name__}; got HTTP {status} {resp.status_code}: {resp.message}")
    raise StepFailure(f"{what}: expected {expected.__name__}; got {type(resp).__name__}: {short(str(resp))}")


# ---------------------------------------------------------------------------------------------
# Step runner


class Steps:
    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.passed: set[str] = set()
        self.counts = {"passed": 0, "failed": 0, "skipped": 0}

    async def run(self, name: str, needs: list[str], body: Callable[[], Awaitable[str | None]]) -> bool:
        missing = [n for n in needs if n not in self.passed]
        if missing:
            self.counts["skipped"] += 1
            print(f"SKIP {name} (needs: {'; '.join(missing)})", flush=True)
            return False
        started = time.monotonic()
        try:
            note = await asyncio.wait_for(body(), STEP_TIMEOUT_S)
        except StepFailure as e:
            self.counts["failed"] += 1
            print(f"FAIL {name}: {e}", flush=True)
            return False
        except asyncio.TimeoutError:
            self.counts["failed"] += 1
            print(f"FAIL {name}: expected it to finish; got no end within {STEP_TIMEOUT_S:.0f} s", flush=True)
            return False
        except Exception:  # noqa: BLE001 - any crash is a failed step, reported in full
            self.counts["failed"] += 1
            print(f"FAIL {name}: {traceback.format_exc()}", flush=True)
            return False
        self.passed.add(name)
        self.counts["passed"] += 1
        ms = (time.monotonic() - started) * 1000
        print(f"ok   {name} ({ms:.0f} ms){' - ' + note if note else ''}", flush=True)
        return True

    def summary(self) -> int:
        c = self.counts
        print(f"{self.scenario}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped", flush=True)
        return 0 if c["failed"] == 0 and c["skipped"] == 0 else 1


# ---------------------------------------------------------------------------------------------
# Servers and users


@dataclass
class Server:
    label: str  # "Synapse" or "Hearth", for messages
    url: str  # client API base URL
    name: str  # server name


def parse_servers(description: str) -> tuple[Server, Server]:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--synapse-url", required=True)
    p.add_argument("--synapse-name", required=True)
    p.add_argument("--hearth-url", required=True)
    p.add_argument("--hearth-name", required=True)
    a = p.parse_args()
    return Server("Synapse", a.synapse_url, a.synapse_name), Server("Hearth", a.hearth_url, a.hearth_name)


class User:
    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name  # for messages, e.g. "sam (Synapse)"
        self.localpart = f"{name}{RUN}"
        self.user_id = f"@{self.localpart}:{server.name}"
        config = AsyncClientConfig(store_sync_tokens=False, encryption_enabled=False)
        self.client = AsyncClient(server.url, self.localpart, config=config)
        self.device_id = ""
        self.device_keys: dict[str, Any] = {}
        self.one_time_keys: dict[str, Any] = {}
        # (room, event id) -> `since` tokens of the syncs whose timeline carried it.
        self.deliveries: dict[tuple[str, str], list[str]] = {}
        self.left_rooms: set[str] = set()

    def __str__(self) -> str:
        return f"{self.name} ({self.server.label})"

    async def register(self) -> str:
        r = ok(
            await self.client.register(self.localpart, PASSWORD, device_name=f"interop {self.server.label}"),
            RegisterResponse,
            f"register {self}",
        )
        expect(r.user_id == self.user_id, f"user id {self.user_id}", r.user_id)
        self.device_id = r.device_id
        expect(self.client.access_token, "an access token after registration", r)
        first = await self.sync(timeout=0)
        expect(first.next_batch, "a next_batch in the first /sync", first)
        return f"{self.user_id} device {self.device_id}"

    async def request(
        self, method: str, path: list[str] | str, body: Any = None, query: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """A client API request (`/_matrix/client/v3/` + path); returns the status and the JSON.

        `path` is a string of fixed segments ("keys/upload") or a list of segments, each
        percent-encoded whole (["profile", user_id])."""
        if isinstance(path, str):
            path = path.split("/")
        url = "/_matrix/client/v3/" + "/".join(quote(p, safe="") for p in path)
        if query:
            url += "?" + urlencode(query)
        headers = {"Authorization": f"Bearer {self.client.access_token}", "Content-Type": "application/json"}
        resp = await self.client.send(method, url, None if body is None else json.dumps(body), headers=headers)
        text = await resp.text()
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = text
        return resp.status, data

    async def request_ok(self, method: str, path: list[str] | str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        status, data = await self.request(method, path, body, query)
        shown = path if isinstance(path, str) else "/".join(path)
        expect(status == 200, f"200 from {self}'s {method} {shown}", f"{status} {short(data)}")
        return data

    async def sync(self, timeout: int, **kwargs: Any) -> SyncResponse:
        """One /sync from the client's last token, noting each timeline event it delivers."""
        since = self.client.next_batch or "(initial)"
        resp = ok(await self.client.sync(timeout=timeout, **kwargs), SyncResponse, f"{self}'s /sync")
        for section, rooms in (("join", resp.rooms.join), ("leave", resp.rooms.leave)):
            for room_id, info in rooms.items():
                # A room joined again starts over: its first sync may repeat what came before.
                if section == "join" and room_id in self.left_rooms:
                    self.left_rooms.discard(room_id)
                    self.deliveries = {k: v for k, v in self.deliveries.items() if k[0] != room_id}
                for e in info.timeline.events:
                    if getattr(e, "event_id", None):
                        self.deliveries.setdefault((room_id, e.event_id), []).append(since)
                if section == "leave":
                    self.left_rooms.add(room_id)
        return resp

    async def sync_until(self, probe: Callable[[SyncResponse], Any], what: str, limit_s: float = 20.0) -> Any:
        """Incremental syncs (short long-polls) until `probe` finds what it looks for. On a
        timeout the failure lists the last things the syncs did bring, to compare with."""
        deadline = time.monotonic() + limit_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            resp = await self.sync(timeout=1000)
            found = probe(resp)
            if found:
                return found
            seen += describe(resp)
        last = "; ".join(seen[-8:]) or "nothing"
        raise StepFailure(f"expected {self} to see {what} within {limit_s:.0f} s; the syncs brought: {last}")

    async def close(self) -> None:
        await self.client.close()

    # -- device keys -------------------------------------------------------------------------

    def make_keys(self, n_one_time: int = 2) -> None:
        """Signed device keys and signed one-time keys, as a real client would upload them."""
        signing = generate_signing_key(self.device_id)
        ed25519 = encode_verify_key_base64(get_verify_key(signing))
        # The curve25519 value is never used for crypto here; any 32 bytes look the same.
        curve = encode_verify_key_base64(get_verify_key(generate_signing_key("c")))
        self.device_keys = sign_json(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {f"curve25519:{self.device_id}": curve, f"ed25519:{self.device_id}": ed25519},
            },
            self.user_id,
            signing,
        )
        self.verify_key = get_verify_key(signing)
        self.one_time_keys = {}
        for i in range(n_one_time):
            otk = encode_verify_key_base64(get_verify_key(generate_signing_key("o")))
            self.one_time_keys[f"signed_curve25519:AAAAA{i}"] = sign_json({"key": otk}, self.user_id, signing)


# ---------------------------------------------------------------------------------------------
# Reading sync responses


def joined_timeline(resp: SyncResponse, room_id: str) -> list:
    info = resp.rooms.join.get(room_id)
    return info.timeline.events if info else []


def ephemeral(resp: SyncResponse, room_id: str) -> list:
    info = resp.rooms.join.get(room_id)
    return info.ephemeral if info else []


def room_events(resp: SyncResponse, room_id: str, section: str = "join") -> list[dict[str, Any]]:
    """The raw timeline events of a room in one section (`join` or `leave`) of a sync."""
    info = getattr(resp.rooms, section).get(room_id)
    return [e.source for e in info.timeline.events] if info else []


def find_event(resp: SyncResponse, room_id: str, section: str = "join", **want: Any) -> dict[str, Any] | None:
    """The first timeline event whose fields match `want`; `content__x` matches content["x"]."""
    for ev in room_events(resp, room_id, section):
        if all(
            (ev.get("content", {}).get(k[len("content__") :]) if k.startswith("content__") else ev.get(k)) == v
            for k, v in want.items()
        ):
            return ev
    return None


def describe(resp: SyncResponse) -> list[str]:
    """Short descriptions of what a sync brought, for failure messages."""
    out = []
    for section in ("join", "leave"):
        for room_id, info in getattr(resp.rooms, section).items():
            for e in info.timeline.events:
                src = e.source
                c = src.get("content", {})
                detail = c.get("body") or c.get("membership") or ""
                key = f"[{src.get('state_key')}]" if "state_key" in src else ""
                out.append(f"{section} {room_id[:8]}: {src.get('type')}{key} from {src.get('sender')} {detail}".rstrip())
            if section == "join":
                out += [f"ephemeral {room_id[:8]}: {short(e.source if hasattr(e, 'source') else str(e), 160)}" for e in info.ephemeral]
    for room_id in resp.rooms.invite:
        out.append(f"invite {room_id[:8]}")
    out += [f"to-device {getattr(e, 'source', {}).get('type')}" for e in resp.to_device_events]
    if resp.device_list.changed:
        out.append(f"device_lists.changed {resp.device_list.changed}")
    return out
