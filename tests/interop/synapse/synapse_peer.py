"""A throwaway Synapse on loopback, set up to federate with other test servers.

Used by the interop runner (tests/interop/synapse/run.sh) and the federation benchmark
(bench/federation_latency.py). Run it with the venv next to this file, which has matrix-synapse:

    .venv/bin/python synapse_peer.py serve --dir DIR     # start, print one line, run until SIGTERM

or from Python:

    with SynapsePeer(Path(tmp)) as peer:
        peer.client_url, peer.server_name, peer.federation_url

Each peer writes everything into its own directory: config, a fresh SQLite database (a reused
one keeps Synapse's back-off for failed destinations and the keys it cached from peers, which
breaks the next run), a self-signed certificate and a signing key made for this run. The
settings follow ../shared/TOOLCHAIN.md, "Synapse as a federation peer":

- the server name is the IP literal `127.0.0.1:<federation port>`, so peers connect straight to
  it without `.well-known`, SRV or DNS;
- clients talk plain HTTP to one listener, peers talk HTTPS (`tls: true`) to another that serves
  the federation and key APIs, with a certificate for CN and IP SAN 127.0.0.1;
- `federation_verify_certificates: false` accepts the peers' self-signed certificates, and
  `ip_range_blacklist: []` lets Synapse reach loopback at all (the allowlist does not help for
  IP-literal names);
- no trusted key servers (no network), rate limits raised far above what a test does, open
  registration without verification, fast password hashing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_PYTHON = HERE / ".venv" / "bin" / "python"

#: How long Synapse may take to answer after it was started (first start creates the schema).
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0

# Far above anything a test or the benchmark does: a limit hit mid-test looks like a bug.
_MANY = {"per_second": 10_000, "burst_count": 100_000}


class SynapseError(Exception):
    pass


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago (all held open while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (CN and IP SAN), made with openssl."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    cmd = [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "7",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SynapseError(f"openssl req failed ({done.returncode}): {done.stderr.strip()}")
    return cert, key


def make_signing_key(path: Path) -> str:
    """A new ed25519 signing key in Synapse's file format; returns its key id."""
    from signedjson.key import generate_signing_key, write_signing_keys

    key = generate_signing_key("a_" + secrets.token_hex(2))
    with path.open("w") as f:
        write_signing_keys(f, [key])
    return f"{key.alg}:{key.version}"


def synapse_config(
    *,
    directory: Path,
    server_name: str,
    client_port: int,
    federation_port: int,
    cert: Path,
    key: Path,
    signing_key: Path,
    log_config: Path,
) -> dict[str, Any]:
    return {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{client_port}/",
        "pid_file": str(directory / "homeserver.pid"),
        "report_stats": False,
        "listeners": [
            {
                "port": client_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            },
            {
                "port": federation_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "resources": [{"names": ["federation"], "compress": False}],
            },
        ],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
        "federation_verify_certificates": False,
        "ip_range_blacklist": [],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "signing_key_path": str(signing_key),
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "media_store_path": str(directory / "media"),
        "log_config": str(log_config),
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        "registration_shared_secret": secrets.token_hex(32),
        # Synapse 1.163 makes version 12 rooms by default; Hearth implements versions 6-11
        # (12 changes room ids to the create event's id and privileges creators).
        "default_room_version": "11",
        "enable_registration": True,
        "enable_registration_without_verification": True,
        # bcrypt's default 12 rounds cost ~0.3 s per registration and login.
        "bcrypt_rounds": 4,
        "enable_metrics": False,
        "url_preview_enabled": False,
        "allow_public_rooms_over_federation": True,
        "allow_public_rooms_without_auth": True,
        "room_list_publication_rules": [{"action": "allow"}],
        "alias_creation_rules": [{"action": "allow"}],
        "rc_federation": {
            "window_size": 1000,
            "sleep_limit": 10_000,
            "sleep_delay": 1,
            "reject_limit": 100_000,
            "concurrent": 1_000,
        },
        "rc_message": _MANY,
        "rc_registration": _MANY,
        "rc_login": {"address": _MANY, "account": _MANY, "failed_attempts": _MANY},
        "rc_joins": {"local": _MANY, "remote": _MANY},
        "rc_joins_per_room": _MANY,
        "rc_invites": {"per_room": _MANY, "per_user": _MANY, "per_issuer": _MANY},
        "rc_key_requests": _MANY,
        "rc_presence": {"per_user": _MANY},
        "rc_room_creation": _MANY,
        "rc_profile": _MANY,
        "rc_user_directory": _MANY,
        "rc_admin_redaction": _MANY,
        "rc_delayed_event_mgmt": _MANY,
        "rc_reports": _MANY,
    }


def log_config(log_file: Path, level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_file),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}, "twisted": {"level": "WARNING"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM Synapse when the process that started it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SynapsePeer:
    """One Synapse: `start()` writes its config, starts it and waits until both listeners
    answer; `stop()` ends it. Attributes after `start()`: `server_name`, `client_url`,
    `federation_url`, `signing_key_id`, `log_path`, `pid`."""

    def __init__(self, directory: Path, *, log_level: str | None = None, python: Path | None = None) -> None:
        self.directory = directory
        self.log_level = log_level or os.environ.get("SYNAPSE_LOG_LEVEL", "INFO")
        self.python = python or (VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
        self.proc: subprocess.Popen[bytes] | None = None
        self.server_name = ""
        self.client_url = ""
        self.federation_url = ""
        self.signing_key_id = ""
        self.log_path = directory / "homeserver.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, attempts: int = 3) -> SynapsePeer:
        """Starts Synapse; a port taken between choosing and binding it means new ports."""
        for attempt in range(1, attempts + 1):
            self._write_config()
            try:
                self._spawn()
                self._wait_ready()
                return self
            except SynapseError:
                self.stop()
                if attempt == attempts or "Address already in use" not in self._log_tail(200):
                    raise
        raise SynapseError("unreachable")

    def _write_config(self) -> None:
        d = self.directory
        # A fresh database every start, as the module's docstring explains.
        for stale in ("homeserver.db", "homeserver.db-wal", "homeserver.db-shm", "media"):
            p = d / stale
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        d.mkdir(parents=True, exist_ok=True)
        client_port, federation_port = free_ports(2)
        self.server_name = f"127.0.0.1:{federation_port}"
        self.client_url = f"http://127.0.0.1:{client_port}"
        self.federation_url = f"https://127.0.0.1:{federation_port}"
        cert, key = make_certificate(d)
        signing_key = d / "signing.key"
        self.signing_key_id = make_signing_key(signing_key)
        log_yaml = d / "log.yaml"
        # JSON is YAML: no need for a YAML writer here.
        log_yaml.write_text(json.dumps(log_config(self.log_path, self.log_level), indent=1))
        config = synapse_config(
            directory=d,
            server_name=self.server_name,
            client_port=client_port,
            federation_port=federation_port,
            cert=cert,
            key=key,
            signing_key=signing_key,
            log_config=log_yaml,
        )
        (d / "homeserver.yaml").write_text(json.dumps(config, indent=1))

    def _spawn(self) -> None:
        out = (self.directory / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.directory / "homeserver.yaml")],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        out.close()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        checks = [
            (f"{self.client_url}/_matrix/client/versions", None),
            (f"{self.federation_url}/_matrix/key/v2/server", insecure),
        ]
        while checks:
            if self.proc.poll() is not None:
                raise SynapseError(
                    f"Synapse exited with {self.proc.returncode} while starting; last log lines:\n{self._log_tail(30)}"
                )
            if time.monotonic() > deadline:
                raise SynapseError(f"Synapse did not answer {checks[0][0]} within {START_TIMEOUT_S:.0f} s")
            url, ctx = checks[0]
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                    if r.status == 200:
                        checks.pop(0)
                        continue
            except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
                pass
            time.sleep(0.1)

    def _log_tail(self, n: int) -> str:
        lines: list[str] = []
        for name in ("stdout.log", "homeserver.log"):
            p = self.directory / name
            if p.exists():
                lines += p.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> SynapsePeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ready_line(self) -> str:
        """The same shape as hearth-testhost's first line, for scripts."""
        return (
            f"synapse listening on {self.client_url} server_name={self.server_name} "
            f"federation={self.federation_url} pid={self.pid}"
        )


def start_together(peers: list[SynapsePeer]) -> None:
    """Starts several peers at once, so that their slow starts overlap. One whose first attempt
    fails (a port taken meanwhile) is started again on its own."""
    for p in peers:
        p._write_config()
        p._spawn()
    for p in peers:
        try:
            p._wait_ready()
        except SynapseError:
            p.stop()
            p.start()


def _serve(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hearth-synapse."))
    peer = SynapsePeer(directory, log_level=args.log_level)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        peer.start()
    except SynapseError as e:
        print(f"synapse: {e}", file=sys.stderr, flush=True)
        return 1
    print(peer.ready_line(), flush=True)
    try:
        while not stopping:
            if peer.proc is None or peer.proc.poll() is not None:
                code = peer.proc.returncode if peer.proc else "?"
                print(f"synapse: exited unexpectedly ({code}); log in {directory}", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
    finally:
        peer.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start one Synapse, print its line, run until SIGTERM or Ctrl-C")
    serve.add_argument("--dir", help="its directory (config, database, logs); default a new temp dir")
    serve.add_argument("--log-level", default=None, help="Synapse's log level (default $SYNAPSE_LOG_LEVEL or INFO)")
    args = parser.parse_args()
    if args.command == "serve":
        return _serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
