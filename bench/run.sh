#!/usr/bin/env bash
# Benchmark: builds hearth-testhost and hearth-bench in release mode, starts the testhost on a
# free loopback port, runs the load client against it (extra arguments go to hearth-bench,
# e.g. `--reps 5`), and stops the testhost. The in-process criterion benchmark is separate:
# `cargo bench -p hearth-bench`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release --quiet -p hearth-testhost -p hearth-bench

out="$(mktemp "${TMPDIR:-/tmp}/hearth-bench-host.XXXXXX")"
err="$out.err"
# Per-request logging would measure the logger; keep the host quiet unless asked.
RUST_LOG="${RUST_LOG:-warn}" "$root/target/release/hearth-testhost" --listen 127.0.0.1:0 >"$out" 2>"$err" &
host=$!
trap 'kill "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; rm -f "$out" "$err"' EXIT

url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/^hearth-testhost listening on \(http:[^ ]*\) server_name=.*$/\1/p' "$out" | head -n1)"
    [ -n "$url" ] && break
    kill -0 "$host" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "bench: hearth-testhost did not start:" >&2
    cat "$err" >&2
    exit 1
fi
echo "bench: $(head -n1 "$out")"
echo "bench: $(nproc) cores; $(uname -srm); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
"$root/target/release/hearth-bench" --url "$url" "$@"
