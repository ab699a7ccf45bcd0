#!/usr/bin/env python3
"""Cross-server delivery latency: from a send on server A to server B's /sync returning it.

    tests/interop/synapse/.venv/bin/python bench/federation_latency.py --pair synapse-synapse
    bench/federation_latency.py --pair synapse-synapse -n 200     # re-runs itself in that venv

Starts both servers on loopback (tests/interop/synapse/synapse_peer.py for Synapse: fresh
database, TLS federation listener), registers alice on A and bob on B, puts them in one room
(made on A, bob invited and joined), then sends N messages from alice, one at a time: before
each send bob's long-poll /sync is already waiting at B, and the next message goes only after
bob got the previous one. A message's latency runs from just before alice's PUT to the moment
B answers the /sync that carries it. The sync filter leaves out presence, ephemeral events and
account data, so only timeline events wake the poll. Prints one JSON object on stdout
(milliseconds); progress goes to stderr.

Pairs: `synapse-synapse` (the anchor). `hearth-synapse` and `hearth-hearth` are to come with
room federation in hearth-core; asking for them now is an error that says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
SYNAPSE_DIR = ROOT / "tests" / "interop" / "synapse"
VENV_PYTHON = SYNAPSE_DIR / ".venv" / "bin" / "python"

try:
    import aiohttp

    sys.path.insert(0, str(SYNAPSE_DIR))
    from synapse_peer import SynapsePeer, start_together
except ImportError:
    # Outside the venv: run again inside it (tests/interop/synapse/run.sh or `cargo xtask test`
    # makes it).
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit(f"federation_latency: needs the venv {VENV_PYTHON} (run tests/interop/synapse/run.sh once to make it)")

PASSWORD = "bench correct horse battery staple"
SYNC_TIMEOUT_MS = 30_000
SETUP_LIMIT_S = 60
# Only timeline events may wake bob's long-poll.
SYNC_FILTER = json.dumps(
    {
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "ephemeral": {"types": []},
            "account_data": {"types": []},
            "state": {"lazy_load_members": True},
            "timeline": {"limit": 20},
        },
    },
    separators=(",", ":"),
)


def log(msg: str) -> None:
    print(f"federation_latency: {msg}", file=sys.stderr, flush=True)


def percentile(samples: list[float], p: float) -> float:
    """Nearest rank, as bench/src/stats.rs."""
    v = sorted(samples)
    rank = max(1, min(len(v), math.ceil(p / 100.0 * len(v))))
    return v[rank - 1]


@dataclass
class Endpoint:
    """One server of the pair, as its clients see it."""

    label: str
    url: str
    server_name: str


class Client:
    """A user's raw client API session (keep-alive)."""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
        self.endpoint = endpoint
        self.http = session
        self.token = ""
        self.user_id = ""

    async def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(
            method, f"{self.endpoint.url}/_matrix/client/v3/{path}", json=body, params=query, headers=headers
        ) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"{method} {path} on {self.endpoint.label}: {r.status} {data}")
            return data

    async def register(self, localpart: str) -> None:
        data = await self.call(
            "POST", "register", {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        )
        self.token, self.user_id = data["access_token"], data["user_id"]

    async def sync(self, since: str | None, timeout_ms: int) -> dict[str, Any]:
        query = {"timeout": str(timeout_ms), "filter": SYNC_FILTER}
        if since:
            query["since"] = since
        return await self.call("GET", "sync", **query)


def timeline_ids(sync: dict[str, Any], room_id: str) -> set[str]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return {e.get("event_id") for e in room.get("timeline", {}).get("events", [])}


async def wait_for(client: Client, since: str | None, done: Callable[[dict[str, Any]], bool], what: str) -> str:
    """Long-polls until a sync satisfies `done`; returns the next `since`."""
    deadline = time.monotonic() + SETUP_LIMIT_S
    while time.monotonic() < deadline:
        s = await client.sync(since, 1000)
        since = s["next_batch"]
        if done(s):
            return since
    raise RuntimeError(f"{client.endpoint.label} never showed {what} within {SETUP_LIMIT_S} s")


async def measure(a: Endpoint, b: Endpoint, n: int, warmup: int) -> dict[str, Any]:
    run = os.urandom(3).hex()
    timeout = aiohttp.ClientTimeout(total=SYNC_TIMEOUT_MS / 1000 + 30)
    async with aiohttp.ClientSession(timeout=timeout) as sa, aiohttp.ClientSession(timeout=timeout) as sb:
        alice, bob = Client(a, sa), Client(b, sb)
        await alice.register(f"alice{run}")
        await bob.register(f"bob{run}")
        room = (await alice.call("POST", "createRoom", {"preset": "private_chat", "name": f"bench {run}"}))["room_id"]
        rq = quote(room, safe="")
        # Both tokens are taken before the invite, so that the invite and the join are ahead.
        alice_since = (await alice.sync(None, 0))["next_batch"]
        since = (await bob.sync(None, 0))["next_batch"]
        await alice.call("POST", f"rooms/{rq}/invite", {"user_id": bob.user_id})
        since = await wait_for(bob, since, lambda s: room in s.get("rooms", {}).get("invite", {}), "the invite")
        await bob.call("POST", f"join/{rq}", {}, server_name=a.server_name, via=a.server_name)
        await wait_for(
            alice,
            alice_since,
            lambda s: any(
                e.get("type") == "m.room.member" and e.get("state_key") == bob.user_id
                and e.get("content", {}).get("membership") == "join"
                for e in s.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
            ),
            "bob's join",
        )  # fmt: skip
        since = await wait_for(bob, since, lambda s: room in s.get("rooms", {}).get("join", {}), "the joined room")
        log(f"room {room} joined from {b.label}; {warmup} warm-up messages, then {n} measured")

        latencies: list[float] = []
        send_ms: list[float] = []
        for i in range(warmup + n):
            poll = asyncio.create_task(bob.sync(since, SYNC_TIMEOUT_MS))
            # Let the poll reach B and park there.
            await asyncio.sleep(0.02)
            if poll.done():
                # Something else woke it (a late membership or state event): take it and retry.
                since = (await poll)["next_batch"]
                poll = asyncio.create_task(bob.sync(since, SYNC_TIMEOUT_MS))
                await asyncio.sleep(0.02)
            t0 = time.perf_counter()
            sent = await alice.call(
                "PUT", f"rooms/{rq}/send/m.room.message/bench{run}.{i}", {"msgtype": "m.text", "body": f"bench {i}"}
            )
            t_sent = time.perf_counter()
            event_id = sent["event_id"]
            s = await poll
            while event_id not in timeline_ids(s, room):
                if time.perf_counter() - t0 > SETUP_LIMIT_S:
                    raise RuntimeError(f"{event_id} did not reach {b.label} within {SETUP_LIMIT_S} s")
                s = await bob.sync(s["next_batch"], SYNC_TIMEOUT_MS)
            t1 = time.perf_counter()
            since = s["next_batch"]
            if i >= warmup:
                latencies.append((t1 - t0) * 1000)
                send_ms.append((t_sent - t0) * 1000)
            if (i + 1) % 50 == 0:
                log(f"{i + 1}/{warmup + n}")

    def r(x: float) -> float:
        return round(x, 2)

    return {
        "n": n,
        "warmup": warmup,
        "p50_ms": r(percentile(latencies, 50)),
        "p99_ms": r(percentile(latencies, 99)),
        "mean_ms": r(statistics.fmean(latencies)),
        "min_ms": r(min(latencies)),
        "max_ms": r(max(latencies)),
        "send_p50_ms": r(percentile(send_ms, 50)),
        "send_p99_ms": r(percentile(send_ms, 99)),
    }


# ---------------------------------------------------------------------------------------------
# Pairs: each yields (A, B), the sender's server and the receiver's.


@contextlib.asynccontextmanager
async def synapse_synapse(workdir: Path) -> AsyncIterator[tuple[Endpoint, Endpoint]]:
    peers = [SynapsePeer(workdir / name, log_level="WARNING") for name in ("synapse-a", "synapse-b")]
    try:
        # Both at once: each takes a few seconds (schema creation). In this thread, which
        # Synapse's "die with the parent" is tied to.
        start_together(peers)
        a, b = (Endpoint(f"Synapse {x}", p.client_url, p.server_name) for x, p in zip("AB", peers))
        yield a, b
    finally:
        for p in peers:
            p.stop()


def not_yet(pair: str) -> Callable[[Path], Any]:
    def fail(_workdir: Path) -> Any:
        raise NotImplementedError(
            f"--pair {pair}: TODO. It needs room federation in hearth-core (make_join/send_join, "
            "/send transactions), which has not landed. To add it: start hearth-testhost as "
            "tests/interop/synapse/run.sh does (--listen 127.0.0.1:0 --server-name 127.0.0.1:0 "
            "--federation-listen 127.0.0.1:0 --federation-insecure-tls, release build, RUST_LOG=warn), "
            "read its first line for the URL and server name, and yield Endpoints like synapse_synapse()."
        )

    return fail


PAIRS: dict[str, Callable[[Path], Any]] = {
    "synapse-synapse": synapse_synapse,
    "hearth-synapse": not_yet("hearth-synapse"),
    "hearth-hearth": not_yet("hearth-hearth"),
}


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=sorted(PAIRS), required=True)
    p.add_argument("-n", type=int, default=200, help="measured messages (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="messages sent first and not counted (default 10)")
    p.add_argument("--keep", action="store_true", help="keep the servers' directories (logs)")
    args = p.parse_args()
    if args.n < 1:
        p.error("-n must be at least 1")

    workdir = Path(tempfile.mkdtemp(prefix="hearth-fed-latency."))
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        async with PAIRS[args.pair](workdir) as (a, b):
            log(f"{a.label} {a.server_name} -> {b.label} {b.server_name}")
            result = await measure(a, b, args.n, args.warmup)
    except NotImplementedError as e:
        print(f"federation_latency: {e}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            log(f"server directories kept in {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    import synapse

    out = {
        "pair": args.pair,
        **result,
        "from": a.label,
        "to": b.label,
        "synapse": synapse.__version__.split(" ")[0],
        "machine": {
            "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
