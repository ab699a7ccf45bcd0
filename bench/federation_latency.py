#!/usr/bin/env python3
"""Cross-server delivery latency: from a send on server A to server B's /sync returning it.

    bench/federation_latency.py --pair all -n 200      # re-runs itself in the Synapse venv
    bench/federation_latency.py --pair hearth-hearth

Pairs, each measured the same way (same N, warm-up, message, one message at a time):
- `synapse-synapse`: two Synapses (tests/interop/synapse/synapse_peer.py: fresh database, TLS
  federation listener). The anchor.
- `hearth-synapse`: one release hearth-testhost and one Synapse, both directions, reported
  separately: hearth->synapse (room on Hearth, receiver on Synapse) and synapse->hearth.
- `hearth-hearth`: two release hearth-testhosts over loopback HTTPS.
- `all`: every pair in this order, the anchor first, each pair's servers stopped before the
  next start; each result also gets its ratio to the anchor's p50 (and p99) of this run.

The testhost is `$HEARTH_TESTHOST_BIN`, else `<target>/release/hearth-testhost` (built with
`cargo build --release -p hearth-testhost` when missing; `<target>` is `$CARGO_TARGET_DIR` or
`target/`), started as tests/interop/synapse/run.sh does, with RUST_LOG=warn unless
`--hearth-log` says otherwise.

For each direction: alice registers on A, bob on B, alice makes a version 11 room on A and
invites bob, bob joins over federation. Then alice sends N messages (after a warm-up), one at
a time: before each send bob's long-poll /sync is already waiting at B, and the next message
goes only after bob got the previous one. A message's latency runs from just before alice's
PUT to the moment B answers the /sync that carries it. By default the poll has no filter, only
the previous since token (`--sync-filter timeline` leaves out presence, ephemeral events and
account data instead); a poll woken by something else is simply polled again, inside the
measured time. Prints one JSON document on stdout (milliseconds); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
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
    from synapse_peer import SynapsePeer, _die_with_parent, start_together
except ImportError:
    # Outside the venv: run again inside it (tests/interop/synapse/run.sh or `cargo xtask test`
    # makes it).
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit(f"federation_latency: needs the venv {VENV_PYTHON} (run tests/interop/synapse/run.sh once to make it)")

PASSWORD = "bench correct horse battery staple"
SYNC_TIMEOUT_MS = 30_000
SETUP_LIMIT_S = 60
HEARTH_START_S = 30
ROOM_VERSION = "11"
# `--sync-filter timeline`: only timeline events may wake bob's long-poll.
TIMELINE_FILTER = json.dumps(
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
SYNC_FILTERS: dict[str, str | None] = {"none": None, "timeline": TIMELINE_FILTER}


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


@dataclass
class Direction:
    """One measured direction: messages from `a`'s user reach `b`'s user."""

    name: str  # "hearth->synapse"
    a: Endpoint
    b: Endpoint


class Client:
    """A user's raw client API session (keep-alive)."""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession, sync_filter: str | None) -> None:
        self.endpoint = endpoint
        self.http = session
        self.sync_filter = sync_filter
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
        query = {"timeout": str(timeout_ms)}
        if self.sync_filter is not None:
            query["filter"] = self.sync_filter
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


async def measure(a: Endpoint, b: Endpoint, n: int, warmup: int, sync_filter: str | None) -> dict[str, Any]:
    run = os.urandom(3).hex()
    timeout = aiohttp.ClientTimeout(total=SYNC_TIMEOUT_MS / 1000 + 30)
    async with aiohttp.ClientSession(timeout=timeout) as sa, aiohttp.ClientSession(timeout=timeout) as sb:
        alice, bob = Client(a, sa, sync_filter), Client(b, sb, sync_filter)
        await alice.register(f"alice{run}")
        await bob.register(f"bob{run}")
        room = (
            await alice.call(
                "POST", "createRoom", {"preset": "private_chat", "name": f"bench {run}", "room_version": ROOM_VERSION}
            )
        )["room_id"]
        rq = quote(room, safe="")
        create = await alice.call("GET", f"rooms/{rq}/state/m.room.create/")
        if create.get("room_version") != ROOM_VERSION:
            raise RuntimeError(f"{a.label} made a version {create.get('room_version')} room, not {ROOM_VERSION}")
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
        # Polls answered without the awaited message (woken by something else), measured only.
        extra_polls = 0
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
            polls = 0
            while event_id not in timeline_ids(s, room):
                if time.perf_counter() - t0 > SETUP_LIMIT_S:
                    raise RuntimeError(f"{event_id} did not reach {b.label} within {SETUP_LIMIT_S} s")
                polls += 1
                s = await bob.sync(s["next_batch"], SYNC_TIMEOUT_MS)
            t1 = time.perf_counter()
            since = s["next_batch"]
            if i >= warmup:
                latencies.append((t1 - t0) * 1000)
                send_ms.append((t_sent - t0) * 1000)
                extra_polls += polls
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
        "extra_polls": extra_polls,
    }


# ---------------------------------------------------------------------------------------------
# Servers.


def testhost_binary() -> Path:
    """The release testhost: $HEARTH_TESTHOST_BIN, or built into the target directory."""
    given = os.environ.get("HEARTH_TESTHOST_BIN")
    if given:
        path = Path(given)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"HEARTH_TESTHOST_BIN={given} is not an executable")
        return path
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    path = target / "release" / "hearth-testhost"
    if not path.exists():
        log(f"building {path}")
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "hearth-testhost"], cwd=ROOT, check=True)
    return path


class HearthHost:
    """One hearth-testhost named `127.0.0.1:<its federation port>`, as run.sh starts it."""

    def __init__(self, label: str, directory: Path, binary: Path, rust_log: str) -> None:
        self.label = label
        self.directory = directory
        self.binary = binary
        self.rust_log = rust_log
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = directory / "host.out"
        self.err = directory / "host.err"

    def spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    str(self.binary), "--listen", "127.0.0.1:0", "--server-name", "127.0.0.1:0",
                    "--federation-listen", "127.0.0.1:0", "--federation-insecure-tls",
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "RUST_LOG": self.rust_log},
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self) -> Endpoint:
        """Reads the first line: `hearth-testhost listening on URL server_name=NAME ...`."""
        assert self.proc is not None
        deadline = time.monotonic() + HEARTH_START_S
        while time.monotonic() < deadline:
            line = self.out.read_text(errors="replace").split("\n", 1)
            if len(line) == 2 and line[0].startswith("hearth-testhost listening on "):
                words = line[0].split()
                fields = dict(w.split("=", 1) for w in words if "=" in w)
                return Endpoint(self.label, words[3], fields["server_name"])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.err.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"hearth-testhost did not start; its stderr ends:\n{tail}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if "panicked" in self.err.read_text(errors="replace"):
            log(f"hearth-testhost panicked during the run; see {self.err}")


def synapse_endpoint(peer: SynapsePeer, label: str) -> Endpoint:
    return Endpoint(label, peer.client_url, peer.server_name)


@dataclass
class Options:
    workdir: Path
    hearth_log: str
    synapse_log: str


# ---------------------------------------------------------------------------------------------
# Pairs: each starts its servers and yields the directions to measure on them.


@contextlib.asynccontextmanager
async def synapse_synapse(opts: Options) -> AsyncIterator[list[Direction]]:
    peers = [SynapsePeer(opts.workdir / name, log_level=opts.synapse_log) for name in ("synapse-a", "synapse-b")]
    try:
        # Both at once: each takes a few seconds (schema creation). In this thread, which
        # Synapse's "die with the parent" is tied to.
        start_together(peers)
        a, b = (synapse_endpoint(p, f"Synapse {x}") for x, p in zip("AB", peers))
        yield [Direction("synapse->synapse", a, b)]
    finally:
        for p in peers:
            p.stop()


@contextlib.asynccontextmanager
async def hearth_synapse(opts: Options) -> AsyncIterator[list[Direction]]:
    host = HearthHost("Hearth", opts.workdir / "hearth", testhost_binary(), opts.hearth_log)
    peer = SynapsePeer(opts.workdir / "synapse", log_level=opts.synapse_log)
    try:
        host.spawn()
        start_together([peer])
        h, s = host.wait_ready(), synapse_endpoint(peer, "Synapse")
        yield [Direction("hearth->synapse", h, s), Direction("synapse->hearth", s, h)]
    finally:
        host.stop()
        peer.stop()


@contextlib.asynccontextmanager
async def hearth_hearth(opts: Options) -> AsyncIterator[list[Direction]]:
    binary = testhost_binary()
    hosts = [HearthHost(f"Hearth {x}", opts.workdir / f"hearth-{x.lower()}", binary, opts.hearth_log) for x in "AB"]
    try:
        for h in hosts:
            h.spawn()
        a, b = (h.wait_ready() for h in hosts)
        yield [Direction("hearth->hearth", a, b)]
    finally:
        for h in hosts:
            h.stop()


PAIRS: dict[str, Callable[[Options], Any]] = {
    "synapse-synapse": synapse_synapse,
    "hearth-synapse": hearth_synapse,
    "hearth-hearth": hearth_hearth,
}
ANCHOR = "synapse-synapse"


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=[*PAIRS, "all"], required=True)
    p.add_argument("-n", type=int, default=200, help="measured messages per direction (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="messages sent first and not counted (default 10)")
    p.add_argument(
        "--sync-filter",
        choices=sorted(SYNC_FILTERS),
        default="none",
        help="bob's /sync filter: none (default) or timeline (no presence, ephemeral, account data)",
    )
    p.add_argument("--hearth-log", default="warn", help="RUST_LOG for the testhosts (default warn)")
    p.add_argument("--synapse-log", default="WARNING", help="Synapse's log level (default WARNING)")
    p.add_argument("--keep", action="store_true", help="keep the servers' directories (logs)")
    args = p.parse_args()
    if args.n < 1:
        p.error("-n must be at least 1")
    pairs = list(PAIRS) if args.pair == "all" else [args.pair]

    workdir = Path(tempfile.mkdtemp(prefix="hearth-fed-latency."))
    load_before = os.getloadavg()
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    try:
        # One pair at a time, its servers stopped before the next starts: no pair shares the
        # machine with another's servers.
        for pair in pairs:
            opts = Options(workdir / pair, args.hearth_log, args.synapse_log)
            async with PAIRS[pair](opts) as directions:
                for d in directions:
                    log(f"{pair}: {d.a.label} {d.a.server_name} -> {d.b.label} {d.b.server_name}")
                    result = await measure(d.a, d.b, args.n, args.warmup, SYNC_FILTERS[args.sync_filter])
                    log(f"{d.name}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
                    results.append({"pair": pair, "direction": d.name, **result, "from": d.a.label, "to": d.b.label})
    finally:
        if args.keep:
            log(f"server directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    anchor = next((r for r in results if r["pair"] == ANCHOR), None)
    if anchor is not None:
        for r in results:
            r["p50_vs_anchor_p50"] = round(r["p50_ms"] / anchor["p50_ms"], 3)
            r["p99_vs_anchor_p99"] = round(r["p99_ms"] / anchor["p99_ms"], 3)
    import synapse

    out = {
        "pair": args.pair,
        "n": args.n,
        "warmup": args.warmup,
        "sync_filter": args.sync_filter,
        "room_version": ROOM_VERSION,
        "anchor": {"direction": anchor["direction"], "p50_ms": anchor["p50_ms"], "p99_ms": anchor["p99_ms"]}
        if anchor
        else None,
        "summary": {
            r["direction"]: {k: r[k] for k in ("p50_ms", "p99_ms", "p50_vs_anchor_p50", "p99_vs_anchor_p99") if k in r}
            for r in results
        },
        "results": results,
        "synapse": synapse.__version__.split(" ")[0],
        "machine": {
            "cores": os.cpu_count(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}",
            "loadavg_before": [round(x, 2) for x in load_before],
            # Synapse's figures move 2-4x with the machine's load; read them against this.
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
