#!/usr/bin/env bash
# Relay benchmark: builds hearth-relay and its load client (hearth-relay-bench) in release
# mode and runs the client, which starts a fresh relay on a free loopback port for each
# measurement: forwarded requests/s with many simulated servers, added latency p50/p99 at a
# paced 1,000 requests/s against a direct loopback echo baseline, and relay memory per idle
# connection with 10,000 connections. Extra arguments go to the client (`--reps 5`,
# `--only throughput`, `--servers 200`, ...; `--help` lists them). Loopback only; every run
# is bounded in time and count.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release --quiet -p hearth-relay --bins
target="${CARGO_TARGET_DIR:-$root/target}"

# 10,000 idle connections need as many descriptors in the client and in the relay (which
# inherits this limit).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "bench: $(nproc) cores; $(uname -srm); open files $(ulimit -n); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$target/release/hearth-relay-bench" --relay-bin "$target/release/hearth-relay" "$@"
